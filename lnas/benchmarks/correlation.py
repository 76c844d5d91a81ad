"""Rank correlations between proxy scores and ground-truth accuracies (Spearman's rho, Kendall's tau-b).

Scores are compared through their population ranks (:func:`~lnas.predictors.ensemble.population_ranks`), so a
non-finite score counts as the worst one, as it does in a search, and a lower-is-better proxy is turned around.
``omit_nan`` leaves NaN scores out instead, as the published evaluations do (SamsungLabs/zero-cost-nas computes
``scipy.stats.spearmanr(..., nan_policy="omit")``, e.g. for jacob_cov where the Jacobian's correlation is undefined).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import kendalltau, spearmanr

from lnas.predictors.ensemble import population_ranks


def rank_correlations(scores: Sequence[float], truth: Sequence[float], higher_is_better: bool = True,
                      omit_nan: bool = False) -> tuple[float, float]:
    """``(spearman_rho, kendall_tau)`` of ``scores`` against ``truth`` (NaN when either is constant)."""
    if len(scores) != len(truth):
        raise ValueError(f"scores and truth differ in length: {len(scores)} vs {len(truth)}")
    if omit_nan:
        kept = [(s, t) for s, t in zip(scores, truth, strict=True) if not np.isnan(s)]
        scores, truth = [s for s, _ in kept], [t for _, t in kept]
    if len(scores) < 2:
        raise ValueError(f"rank correlation needs at least 2 architectures, got {len(scores)}")
    ranks = population_ranks(scores, higher_is_better)
    target = np.asarray(truth, dtype=np.float64)
    return float(spearmanr(ranks, target).statistic), float(kendalltau(ranks, target).statistic)
