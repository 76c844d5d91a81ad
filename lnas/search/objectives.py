"""Objectives and constraints as data, and non-dominated sorting over any number of objectives.

A candidate's *measures* are named numbers: ``score`` (the predicted accuracy), ``params``, ``flops``,
``memory_mb`` (peak activation memory) and ``latency_ms.<device>`` for every device. An :class:`Objective` names a
measure and its direction; a :class:`Constraint` bounds a measure from above. A measure that could not be taken (NaN)
violates every constraint on it, so a candidate whose latency was not measured is never feasible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MAXIMIZE, MINIMIZE = "maximize", "minimize"
DIRECTIONS = (MAXIMIZE, MINIMIZE)
SCORE, PARAMS, FLOPS, MEMORY = "score", "params", "flops", "memory_mb"
SCREEN_SCORE = "screen_score"
"""The cheap predicted accuracy the cascade's screen ranks candidates by (their FLOPs)."""
FINETUNE_LOSS = "finetune_loss"
"""The cascade's training speed estimate: the mean training loss over a short fine-tune (lower is better; Ru et al.,
"Speedy Performance Estimation for Neural Architecture Search", NeurIPS 2021)."""
LATENCY = "latency_ms"
"""Prefix of the per-device latency measures: ``latency_ms.<device>``."""
EVERY_LATENCY = "latency"
"""The objective name that stands for every device's latency measure."""


def latency_measure(device: str) -> str:
    """The name of ``device``'s latency measure."""
    return f"{LATENCY}.{device}"


@dataclass(frozen=True)
class Objective:
    """A measure to maximise or minimise."""

    name: str
    direction: str

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"objective {self.name!r}: direction must be one of {list(DIRECTIONS)}, got {self.direction!r}")

    def oriented(self, value: float) -> float:
        """``value`` turned so that larger is better; a missing or non-finite value is worst (-inf)."""
        if value is None or not math.isfinite(value):
            return -math.inf
        return value if self.direction == MAXIMIZE else -value


@dataclass(frozen=True)
class Constraint:
    """``measure <= limit``."""

    measure: str
    limit: float

    def violation(self, value: float | None) -> float:
        """How far ``value`` is over the limit (<= 0: met); a measure not taken violates it infinitely."""
        if value is None or math.isnan(value):
            return math.inf
        return value - self.limit

    def describe(self, value: float | None) -> str:
        """Why ``value`` violates this constraint, in words."""
        if value is None or math.isnan(value):
            return f"{self.measure} not measured"
        return f"{self.measure} {value:.4g} > {self.limit:.4g}"


def non_dominated_ranks(points: np.ndarray) -> np.ndarray:
    """Front index of every row of ``points`` (n, m), every column to be maximised: 0 for the non-dominated rows,
    1 for those dominated only by rows of front 0, and so on (Deb et al., 2002, NSGA-II's sorting)."""
    points = np.asarray(points, dtype=float)
    n = len(points)
    ranks = np.full(n, -1)
    if n == 0:
        return ranks
    at_least = (points[:, None, :] >= points[None, :, :]).all(-1)
    better = (points[:, None, :] > points[None, :, :]).any(-1)
    dominates = at_least & better  # dominates[i, j]: row i dominates row j
    remaining, front = np.ones(n, dtype=bool), 0
    while remaining.any():
        current = remaining & ~dominates[remaining].any(0)  # not dominated by any row still unranked
        ranks[current] = front
        remaining &= ~current
        front += 1
    return ranks


def oriented_matrix(rows: Sequence[Mapping[str, float]], objectives: Sequence[Objective]) -> np.ndarray:
    """Rows × objectives, each value oriented larger-is-better (:meth:`Objective.oriented`)."""
    return np.array([[objective.oriented(row.get(objective.name, math.nan)) for objective in objectives] for row in rows], dtype=float)
