"""Rank correlations between proxy scores and ground-truth accuracies (Spearman's rho, Kendall's tau-b).

Scores are compared through their population ranks (:func:`~lnas.predictors.ensemble.population_ranks`), so a
non-finite score counts as the worst one, as it does in a search, and a lower-is-better proxy is turned around.
``omit_nan`` leaves NaN scores out instead, as the published evaluations do (SamsungLabs/zero-cost-nas computes
``scipy.stats.spearmanr(..., nan_policy="omit")``, e.g. for jacob_cov where the Jacobian's correlation is undefined).

:func:`spearman_interval` gives a percentile-bootstrap confidence interval of rho (Efron & Tibshirani, 1993,
"An Introduction to the Bootstrap", ch. 13): architectures are resampled with replacement and rho recomputed, so a
reader can tell a sampling fluctuation of a 1,000-architecture sample from a real difference to a published value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import kendalltau, rankdata, spearmanr

from lnas.predictors.ensemble import population_ranks


def _paired(scores: Sequence[float], truth: Sequence[float], omit_nan: bool) -> tuple[list[float], list[float]]:
    """The score/truth pairs a correlation uses (NaN scores left out with ``omit_nan``); at least two of them."""
    if len(scores) != len(truth):
        raise ValueError(f"scores and truth differ in length: {len(scores)} vs {len(truth)}")
    if omit_nan:
        kept = [(s, t) for s, t in zip(scores, truth, strict=True) if not np.isnan(s)]
        scores, truth = [s for s, _ in kept], [t for _, t in kept]
    if len(scores) < 2:
        raise ValueError(f"rank correlation needs at least 2 architectures, got {len(scores)}")
    return list(scores), list(truth)


def rank_correlations(scores: Sequence[float], truth: Sequence[float], higher_is_better: bool = True,
                      omit_nan: bool = False) -> tuple[float, float]:
    """``(spearman_rho, kendall_tau)`` of ``scores`` against ``truth`` (NaN when either is constant)."""
    scores, truth = _paired(scores, truth, omit_nan)
    ranks = population_ranks(scores, higher_is_better)
    target = np.asarray(truth, dtype=np.float64)
    return float(spearmanr(ranks, target).statistic), float(kendalltau(ranks, target).statistic)


def spearman_interval(scores: Sequence[float], truth: Sequence[float], higher_is_better: bool = True, omit_nan: bool = False,
                      level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap ``level`` confidence interval ``(low, high)`` of Spearman's rho, as :func:`rank_correlations`
    computes it, from ``resamples`` resamplings of the architectures drawn with ``seed``."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    scores, truth = _paired(scores, truth, omit_nan)
    ranks = population_ranks(scores, higher_is_better)
    target = np.asarray(truth, dtype=np.float64)
    picks = np.random.default_rng(seed).integers(0, len(ranks), size=(resamples, len(ranks)))
    x, y = rankdata(ranks[picks], axis=1), rankdata(target[picks], axis=1)
    x -= x.mean(axis=1, keepdims=True)
    y -= y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (x * y).sum(axis=1) / np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    rho = rho[np.isfinite(rho)]
    if len(rho) == 0:
        return math.nan, math.nan
    low, high = np.quantile(rho, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
