"""Search strategies on Optuna's ask/tell API: which candidates to score next, learning from those scored.

One protocol for every strategy (:class:`OptunaSearch`): ``start`` opens a study whose directions are the search's
objectives; ``ask`` gives a trial and the arch the space reads from it (:meth:`~lnas.spaces.SearchSpace.suggest`);
``tell`` reports the candidate's objective values and its constraint violations (read by Optuna's ``constraints_func``).
The sampler decides: NSGA-II (``NSGAIISampler``, Deb et al., 2002), TPE (``TPESampler``, Bergstra et al., 2011; Ozaki
et al., 2020 for several objectives), random (``RandomSampler``; Li & Talwalkar, 2019: a strong baseline for NAS) or
regularized evolution (:class:`~lnas.search.evolution.RegularizedEvolutionSampler`).
"""

from __future__ import annotations

import inspect
import math
import pickle
from collections.abc import Callable, Sequence

import optuna
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, Trial

from lnas.search.objectives import Objective
from lnas.spaces.arch import Arch
from lnas.spaces.base import SearchSpace

SamplerFactory = Callable[..., BaseSampler]
CONSTRAINTS_ATTR = "constraints"
ARCH_ATTR = "arch"


def trial_constraints(trial: FrozenTrial) -> Sequence[float]:
    """A trial's constraint violations (<= 0: met), as told by :meth:`OptunaSearch.tell` (Optuna's ``constraints_func``)."""
    return trial.user_attrs.get(CONSTRAINTS_ATTR, ())


class OptunaSearch:
    """Propose archs with an Optuna ``sampler`` (a factory taking ``seed`` and, where it accepts one, ``constraints_func``)."""

    def __init__(self, sampler: SamplerFactory | None = None, study_name: str = "lnas") -> None:
        self.sampler_factory = sampler or RandomSampler
        self.study_name = study_name
        self.study: optuna.Study | None = None
        self.space: SearchSpace | None = None

    def _sampler(self, seed: int) -> BaseSampler:
        accepts = inspect.signature(self.sampler_factory).parameters
        kwargs = {"seed": seed, "constraints_func": trial_constraints} if "constraints_func" in accepts else {"seed": seed}
        return self.sampler_factory(**kwargs)

    def start(self, space: SearchSpace, objectives: Sequence[Objective], seed: int) -> None:
        """Open the study (once; later calls keep it, e.g. after :meth:`load_state_dict`)."""
        self.space = space
        if self.study is None:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self.study = optuna.create_study(directions=[o.direction for o in objectives], sampler=self._sampler(seed), study_name=self.study_name)

    def ask(self) -> tuple[Trial, Arch]:
        """A new trial and its arch."""
        trial = self.study.ask()
        arch = self.space.suggest(trial)
        trial.set_user_attr(ARCH_ATTR, self.space.encode(arch))
        return trial, arch

    def enqueue(self, arch: Arch) -> None:
        """Make ``arch`` the next proposal (e.g. the space's default, so the search always scores it)."""
        self.study.enqueue_trial(dict(arch), skip_if_exists=True)

    def tell(self, trial: Trial, values: Sequence[float], violations: Sequence[float]) -> None:
        """Report a trial's objective values (NaN: a failed trial) and constraint violations."""
        trial.set_user_attr(CONSTRAINTS_ATTR, [float(v) if math.isfinite(v) else 1e30 for v in violations])
        if all(math.isfinite(v) for v in values):
            self.study.tell(trial, list(values))
        else:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def state_dict(self) -> dict:
        """The whole in-memory study, sampler state included, so a resumed search proposes what it would have."""
        return {"study": pickle.dumps(self.study)}

    def load_state_dict(self, state: dict) -> None:
        self.study = pickle.loads(state["study"])
