"""A training-free ensemble: proxies aggregated by rank over the scored population.

As AZ-NAS (Lee & Ham, CVPR 2024) and VKDNW_agg (CVPR 2025) do: each member proxy ranks the population (rank 1 =
worst, ties share their mean rank), and an architecture's ensemble score is ``sum_m log(rank_m / N)`` (``log_rank``)
or ``sum_m rank_m / N`` (``rank``). A non-finite component (NaN, ±inf) ranks below every finite one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import rankdata
from torch import nn

from lnas.predictors.base import Inputs, Proxy, score_proxies
from lnas.predictors.registry import available, load_proxy

AGGREGATIONS = ("log_rank", "rank")


def population_ranks(values: Sequence[float], higher_is_better: bool = True) -> np.ndarray:
    """Ranks 1..N (N = best, ties averaged); non-finite values rank below all finite ones."""
    oriented = np.array([v if higher_is_better else -v for v in values], dtype=np.float64)
    oriented[~np.isfinite(oriented)] = -np.inf
    return rankdata(oriented, method="average")


def aggregate_ranks(columns: Mapping[str, Sequence[float]], directions: Mapping[str, bool], aggregation: str = "log_rank") -> list[float]:
    """Per-row ensemble score from per-proxy columns of equal length (higher is better)."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; allowed values: {list(AGGREGATIONS)}")
    sizes = {len(column) for column in columns.values()}
    if len(sizes) > 1:
        raise ValueError(f"every proxy needs one value per architecture; got columns of lengths {sorted(sizes)}")
    size = sizes.pop() if sizes else 0
    total = np.zeros(size)
    for name, column in columns.items():
        fraction = population_ranks(column, directions[name]) / size
        total += np.log(fraction) if aggregation == "log_rank" else fraction
    return total.tolist()


def non_finite(scores: Mapping[str, float]) -> list[str]:
    """Names of the scores that are NaN or infinite."""
    return [name for name, value in scores.items() if not math.isfinite(value)]


def warn_non_finite(arch: str, scores: Mapping[str, float]) -> bool:
    """Warn once, naming ``arch``, when any score is non-finite (it then ranks last on those); True if so."""
    bad = non_finite(scores)
    if bad:
        warnings.warn(f"architecture {arch}: non-finite {', '.join(f'{n}={scores[n]}' for n in bad)}; it ranks last on them", stacklevel=2)
    return bool(bad)


class ZeroShotEnsemble(Proxy):
    """Rank aggregation of ``proxies`` over a population (the default zero-shot predictor).

    ``proxies`` are Proxy objects or predictor names (``conf/predictor/<name>.yaml``); ``name`` is the config's name.
    ``components`` scores one model with every member (shared passes run once); ``aggregate`` turns the rows of a
    population into ensemble scores; ``score`` aggregates a population of one (always 0 with ``log_rank``), so use
    ``components`` + ``aggregate`` in a search.
    """

    name = "ensemble"
    higher_is_better = True

    def __init__(self, proxies: Mapping[str, Proxy] | Sequence[Proxy | str], aggregation: str = "log_rank", name: str = "ensemble") -> None:
        self.name = name
        members = list(proxies.values()) if isinstance(proxies, Mapping) else list(proxies)
        self.proxies = [load_proxy(p) if isinstance(p, str) else p for p in members]
        if not self.proxies:
            raise ValueError("ZeroShotEnsemble needs at least one proxy")
        names = [p.name for p in self.proxies]
        if len(set(names)) != len(names):
            raise ValueError(f"ZeroShotEnsemble proxies must have distinct names, got {names}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregation!r}; allowed values: {list(AGGREGATIONS)}")
        self.aggregation = aggregation
        self.needs_data = any(p.needs_data for p in self.proxies)
        self.needs_labels = any(p.needs_labels for p in self.proxies)

    @property
    def used(self) -> list[str]:
        """Names of the member proxies."""
        return [p.name for p in self.proxies]

    def components(self, model: nn.Module, inputs: Inputs, targets: object | None = None) -> dict[str, float]:
        """Every member's score of ``model``; a member that fails scores NaN (ranked last) and the others still count."""
        return score_proxies(self.proxies, model, inputs, targets, on_error="nan")

    def aggregate(self, rows: Sequence[Mapping[str, float]]) -> list[float]:
        """Ensemble scores of a population given each architecture's components (missing components count as NaN)."""
        columns = {p.name: [float(row.get(p.name, math.nan)) for row in rows] for p in self.proxies}
        return aggregate_ranks(columns, {p.name: p.higher_is_better for p in self.proxies}, self.aggregation)

    def score(self, model: nn.Module, inputs: Inputs, targets: object | None = None) -> float:
        return self.aggregate([self.components(model, inputs, targets)])[0]

    def __repr__(self) -> str:
        return f"ZeroShotEnsemble(used={self.used}, aggregation={self.aggregation!r})"


def why_not_data_free(proxy: Proxy) -> str | None:
    """Why ``proxy`` cannot score on synthetic inputs (it needs real images or labels), or None when it can."""
    if proxy.needs_labels:
        return "needs labels"
    if proxy.needs_data:
        return "needs real images"
    return None


def data_free_predictor(proxy: Proxy) -> tuple[Proxy, dict[str, str]]:
    """``proxy`` restricted to what scores without data (an ensemble keeps its data-free members), and each member left
    out with the reason. A predictor with nothing data-free is refused, naming the data-free predictors."""
    members = proxy.proxies if isinstance(proxy, ZeroShotEnsemble) else [proxy]
    left_out = {member.name: reason for member in members if (reason := why_not_data_free(member))}
    kept = [member for member in members if member.name not in left_out]
    if not kept:
        allowed = [name for name in available() if why_not_data_free(load_proxy(name)) is None]
        raise ValueError(f"predictor {proxy.name!r} cannot score without data ({', '.join(f'{k}: {v}' for k, v in left_out.items())}); "
                         f"with data=characteristics use one of {allowed}")
    if not isinstance(proxy, ZeroShotEnsemble) or not left_out:
        return proxy, left_out
    return ZeroShotEnsemble(kept, aggregation=proxy.aggregation, name=proxy.name), left_out
