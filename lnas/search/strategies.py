"""Search strategies on Optuna's ask/tell API: which candidates to score next, learning from those scored.

One protocol for every strategy (:class:`OptunaSearch`): ``start`` opens a study whose directions are the search's
objectives; ``ask`` gives a trial and the arch the space reads from it (:meth:`~lnas.spaces.SearchSpace.suggest`);
``tell`` reports the candidate's objective values and its constraint violations (``Trial.set_constraint``, which
Optuna's samplers read to prefer feasible trials).
The sampler decides: NSGA-II (``NSGAIISampler``, Deb et al., 2002), TPE (``TPESampler``, Bergstra et al., 2011; Ozaki
et al., 2020 for several objectives), random (``RandomSampler``; Li & Talwalkar, 2019: a strong baseline for NAS) or
regularized evolution (:class:`~lnas.search.evolution.RegularizedEvolutionSampler`).

With a ``storage`` (an SQLAlchemy URL such as ``sqlite:///study.db``, or ``journal:<file>`` for an Optuna journal file)
the study is persistent and can be shared: every scored candidate is kept with its trial (user attribute
``candidate``), so a restarted run, or another process working on the same study, reads back what was scored instead
of scoring it again. Optuna writes each trial's result in one transaction (one appended journal record), so a killed run
leaves the storage consistent.
"""

from __future__ import annotations

import io
import math
import pickle
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence

import optuna
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import Trial

from lnas.search.objectives import Objective
from lnas.spaces.arch import Arch
from lnas.spaces.base import SearchSpace

SamplerFactory = Callable[..., BaseSampler]
ARCH_ATTR = "arch"
CANDIDATE_ATTR = "candidate"
JOURNAL_PREFIX = "journal:"
STORAGE_FORMS = "an SQLAlchemy URL such as sqlite:///study.db, or journal:<file> (an Optuna journal file)"
UNMEASURED = 1e30
"""The violation told for a constraint whose measure could not be taken (Optuna takes no NaN or infinity there)."""


NEW_LOCK = {type(threading.Lock()): threading.Lock, type(threading.RLock()): threading.RLock}


class StudyPickler(pickle.Pickler):
    """Pickles a study whose sampler holds a thread lock (Optuna 5.1's NSGA-II does): the lock comes back as a new one."""

    def reducer_override(self, obj: object):
        if type(obj) in NEW_LOCK:
            return NEW_LOCK[type(obj)], ()
        return NotImplemented


def _rdb_storage(url: str, attempts: int = 3) -> optuna.storages.RDBStorage:
    """An RDB storage; processes that create the same fresh database at once race on its schema, so a failed
    creation is tried again (the schema is there by then)."""
    for attempt in range(attempts - 1):
        try:
            return optuna.storages.RDBStorage(url)
        except Exception:  # noqa: BLE001 - the last attempt's error propagates
            time.sleep(0.5 * (attempt + 1))
    return optuna.storages.RDBStorage(url)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage of ``url`` (see the module docstring); a URL that cannot be opened is refused with the forms allowed."""
    try:
        if url.startswith(JOURNAL_PREFIX):
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(url[len(JOURNAL_PREFIX):]))
        return _rdb_storage(url)
    except Exception as error:  # noqa: BLE001 - SQLAlchemy and the file system raise many kinds; each becomes this message
        reason = str(error).splitlines()[0] if str(error) else ""
        raise ValueError(f"search.storage={url!r} cannot be opened ({type(error).__name__}: {reason}); allowed: {STORAGE_FORMS}") from error


class OptunaSearch:
    """Propose archs with an Optuna ``sampler`` (a factory taking ``seed``), in memory or in ``storage``."""

    def __init__(self, sampler: SamplerFactory | None = None, study_name: str = "lnas", storage: str | None = None) -> None:
        self.sampler_factory = sampler or RandomSampler
        self.study_name, self.storage = study_name, storage
        self.study: optuna.Study | None = None
        self.space: SearchSpace | None = None

    def start(self, space: SearchSpace, objectives: Sequence[Objective], seed: int) -> None:
        """Open the study (once; later calls keep it, e.g. after :meth:`load_state_dict`). A stored study is loaded
        when it exists, and refused when its objectives differ from ``objectives``."""
        self.space = space
        if self.study is not None:
            return
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = open_storage(self.storage) if self.storage else None
        self.study = optuna.create_study(directions=[o.direction for o in objectives], sampler=self.sampler_factory(seed=seed),
                                         study_name=self.study_name, storage=storage, load_if_exists=storage is not None)
        names = [o.name for o in objectives]
        if storage is not None and self.study.metric_names is None:
            with warnings.catch_warnings():  # experimental in Optuna 5.1 (since 3.2), and the way to store objective names
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names(names)
        stored = list(zip(self.study.metric_names or names, (d.name.lower() for d in self.study.directions), strict=False))
        wanted = [(o.name, o.direction) for o in objectives]
        if stored != wanted:
            self.study = None
            raise ValueError(f"the study {self.study_name!r} in {self.storage} has objectives {stored}; this run's are {wanted}: "
                             "use another search.storage or search.strategy.study_name")

    def stored_candidates(self) -> list[dict]:
        """Every candidate scored into this study (by this process or another), as recorded by :meth:`tell`."""
        return [trial.user_attrs[CANDIDATE_ATTR] for trial in self.study.get_trials(deepcopy=False) if CANDIDATE_ATTR in trial.user_attrs]

    def note(self, name: str, value: object = None) -> object:
        """Keep ``value`` with the study under ``name`` (when given), and return what the study keeps there."""
        if value is not None:
            self.study.set_user_attr(name, value)
        return self.study.user_attrs.get(name)

    def ask(self) -> tuple[Trial, Arch]:
        """A new trial and its arch."""
        trial = self.study.ask()
        arch = self.space.suggest(trial)
        trial.set_user_attr(ARCH_ATTR, self.space.encode(arch))
        return trial, arch

    def enqueue(self, arch: Arch) -> None:
        """Make ``arch`` the next proposal (e.g. the space's default, so the search always scores it)."""
        self.study.enqueue_trial(dict(arch), skip_if_exists=True)

    def tell(self, trial: Trial, values: Sequence[float], violations: Mapping[str, float], record: Mapping | None = None) -> None:
        """Report a trial's objective values (NaN: a failed trial), its violation of each constraint (<= 0: met), and
        the candidate's ``record`` (kept with the trial; see :meth:`stored_candidates`)."""
        if record is not None:
            trial.set_user_attr(CANDIDATE_ATTR, dict(record))
        for name, violation in violations.items():
            trial.set_constraint(name, float(violation) if math.isfinite(violation) else UNMEASURED)
        if all(math.isfinite(v) for v in values):
            self.study.tell(trial, list(values))
        else:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def state_dict(self) -> dict:
        """The whole in-memory study, sampler state included, so a resumed search proposes what it would have (a stored
        study is kept by its storage)."""
        if self.storage:
            return {"storage": self.storage}
        buffer = io.BytesIO()
        StudyPickler(buffer).dump(self.study)
        return {"study": buffer.getvalue()}

    def load_state_dict(self, state: dict) -> None:
        if "study" in state:
            self.study = pickle.loads(state["study"])
