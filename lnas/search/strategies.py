"""Search strategies on Optuna's ask/tell API: which candidates to score next, learning from those scored.

One protocol for every strategy (:class:`OptunaSearch`): ``start`` opens a study whose directions are the search's
objectives; ``ask`` gives a trial and the arch the space reads from it (:meth:`~lnas.spaces.SearchSpace.suggest`);
``tell`` reports the candidate's objective values and its constraint violations (``Trial.set_constraint``, which
Optuna's samplers read to prefer feasible trials).
The sampler decides: NSGA-II (``NSGAIISampler``, Deb et al., 2002), TPE (``TPESampler``, Bergstra et al., 2011; Ozaki
et al., 2020 for several objectives), random (``RandomSampler``; Li & Talwalkar, 2019: a strong baseline for NAS) or
regularized evolution (:class:`~lnas.search.evolution.RegularizedEvolutionSampler`).
"""

from __future__ import annotations

import io
import math
import pickle
import threading
from collections.abc import Callable, Mapping, Sequence

import optuna
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import Trial

from lnas.search.objectives import Objective
from lnas.spaces.arch import Arch
from lnas.spaces.base import SearchSpace

SamplerFactory = Callable[..., BaseSampler]
ARCH_ATTR = "arch"
UNMEASURED = 1e30
"""The violation told for a constraint whose measure could not be taken (Optuna takes no NaN or infinity there)."""


NEW_LOCK = {type(threading.Lock()): threading.Lock, type(threading.RLock()): threading.RLock}


class StudyPickler(pickle.Pickler):
    """Pickles a study whose sampler holds a thread lock (Optuna 5.1's NSGA-II does): the lock comes back as a new one."""

    def reducer_override(self, obj: object):
        if type(obj) in NEW_LOCK:
            return NEW_LOCK[type(obj)], ()
        return NotImplemented


class OptunaSearch:
    """Propose archs with an Optuna ``sampler`` (a factory taking ``seed``)."""

    def __init__(self, sampler: SamplerFactory | None = None, study_name: str = "lnas") -> None:
        self.sampler_factory = sampler or RandomSampler
        self.study_name = study_name
        self.study: optuna.Study | None = None
        self.space: SearchSpace | None = None

    def start(self, space: SearchSpace, objectives: Sequence[Objective], seed: int) -> None:
        """Open the study (once; later calls keep it, e.g. after :meth:`load_state_dict`)."""
        self.space = space
        if self.study is None:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self.study = optuna.create_study(directions=[o.direction for o in objectives], sampler=self.sampler_factory(seed=seed),
                                             study_name=self.study_name)

    def ask(self) -> tuple[Trial, Arch]:
        """A new trial and its arch."""
        trial = self.study.ask()
        arch = self.space.suggest(trial)
        trial.set_user_attr(ARCH_ATTR, self.space.encode(arch))
        return trial, arch

    def enqueue(self, arch: Arch) -> None:
        """Make ``arch`` the next proposal (e.g. the space's default, so the search always scores it)."""
        self.study.enqueue_trial(dict(arch), skip_if_exists=True)

    def tell(self, trial: Trial, values: Sequence[float], violations: Mapping[str, float]) -> None:
        """Report a trial's objective values (NaN: a failed trial) and its violation of each constraint (<= 0: met)."""
        for name, violation in violations.items():
            trial.set_constraint(name, float(violation) if math.isfinite(violation) else UNMEASURED)
        if all(math.isfinite(v) for v in values):
            self.study.tell(trial, list(values))
        else:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def state_dict(self) -> dict:
        """The whole in-memory study, sampler state included, so a resumed search proposes what it would have."""
        buffer = io.BytesIO()
        StudyPickler(buffer).dump(self.study)
        return {"study": buffer.getvalue()}

    def load_state_dict(self, state: dict) -> None:
        self.study = pickle.loads(state["study"])
