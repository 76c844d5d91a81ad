"""Regularized evolution (Real et al., AAAI 2019, "Regularized Evolution for Image Classifier Architecture Search") as
an Optuna sampler, so it runs through the same ask/tell protocol, storage and constraint handling as Optuna's own.

The first ``population`` trials are random. Each later trial copies the best of ``tournament`` parents drawn from the
``population`` most recent feasible trials (ageing: older trials stop being parents), judged by the first objective,
and changes one of its choices; choices the copy does not have (e.g. a block that a deeper stage adds) are random.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState


class RegularizedEvolutionSampler(BaseSampler):
    """Tournament selection among recent feasible trials, then one mutation (see the module docstring)."""

    def __init__(self, population: int = 16, tournament: int = 4, seed: int | None = None) -> None:
        if population < 1 or not 1 <= tournament <= population:
            raise ValueError(f"need population >= 1 and 1 <= tournament <= population, got {population}, {tournament}")
        self.population, self.tournament = population, tournament
        self._rng = np.random.RandomState(seed)
        self._random = RandomSampler(seed)
        self._children: dict[int, dict[str, Any]] = {}

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    @staticmethod
    def _feasible(trial: FrozenTrial) -> bool:
        """Every constraint the trial was told (``Trial.set_constraint``) is met."""
        return all(v <= 0 for v in trial.constraints.values())

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(completed) < self.population:
            return
        recent = []
        for past in reversed(completed):  # the population most recent feasible trials
            if self._feasible(past):
                recent.append(past)
                if len(recent) == self.population:
                    break
        if not recent:
            return
        sign = 1.0 if study.directions[0] == StudyDirection.MAXIMIZE else -1.0
        drawn = [recent[i] for i in self._rng.randint(len(recent), size=self.tournament)]
        parent = max(drawn, key=lambda t: sign * t.values[0])
        mutable = [name for name, dist in parent.distributions.items() if isinstance(dist, CategoricalDistribution) and len(dist.choices) > 1]
        child = dict(parent.params)
        if mutable:
            name = mutable[self._rng.randint(len(mutable))]
            others = [c for c in parent.distributions[name].choices if c != child[name]]
            child[name] = others[self._rng.randint(len(others))]
        self._children[trial.number] = child

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution) -> Any:
        child = self._children.get(trial.number, {})
        if param_name in child and isinstance(param_distribution, CategoricalDistribution) and child[param_name] in param_distribution.choices:
            return child[param_name]
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self._children.pop(trial.number, None)
