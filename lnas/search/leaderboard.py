"""Every scored candidate with its objectives, its feasibility and the reason when infeasible."""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from lnas.io import atomic_write_text


class NoFeasibleCandidateError(RuntimeError):
    """No scored candidate meets the constraints."""


@dataclass
class Candidate:
    """One row of the leaderboard. ``latency_ms`` is NaN when not measured; ``reason`` is empty when feasible."""

    arch: str
    score: float
    params: int
    flops: int
    latency_ms: float = math.nan
    latency_spread_ms: float = math.nan
    feasible: bool = True
    reason: str = ""
    step: int = 0
    components: dict[str, float] = field(default_factory=dict)

Aggregator = Callable[[Sequence[Mapping[str, float]]], list[float]]


def _objective(score: float, higher_is_better: bool) -> float:
    """Score oriented so that larger is better; non-finite scores rank last."""
    if not math.isfinite(score):
        return -math.inf
    return score if higher_is_better else -score


def pareto_mask(points: list[tuple[float, float]]) -> list[bool]:
    """Non-dominated points when maximising the first coordinate and minimising the second."""
    mask = []
    for i, (gain_i, cost_i) in enumerate(points):
        dominated = any(
            gain_j >= gain_i and cost_j <= cost_i and (gain_j > gain_i or cost_j < cost_i)
            for j, (gain_j, cost_j) in enumerate(points) if j != i
        )
        mask.append(not dominated)
    return mask


class Leaderboard:
    """Scored candidates in scoring order; selection and Pareto front under the proxy's direction.

    With an ``aggregate`` function (a population-level ensemble such as rank aggregation), every row keeps its
    per-proxy ``components`` and all scores are recomputed from the whole population whenever a row is added.
    """

    def __init__(self, higher_is_better: bool = True, aggregate: Aggregator | None = None) -> None:
        self.higher_is_better = higher_is_better
        self.aggregate = aggregate
        self.rows: list[Candidate] = []
        self._keys: set[str] = set()

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, arch: str) -> bool:
        return arch in self._keys

    def add(self, candidate: Candidate) -> None:
        self.rows.append(candidate)
        self._keys.add(candidate.arch)
        if self.aggregate is not None:
            for row, score in zip(self.rows, self.aggregate([r.components for r in self.rows]), strict=True):
                row.score = score
        bad = [f"{k}={v}" for k, v in candidate.components.items() if not math.isfinite(v)]
        if bad or not math.isfinite(candidate.score):
            detail = ", ".join(bad) if bad else f"score={candidate.score}"
            warnings.warn(f"proxy score of arch {candidate.arch} is not finite ({detail}); it ranks last", RuntimeWarning, stacklevel=2)

    def objective(self, candidate: Candidate) -> float:
        return _objective(candidate.score, self.higher_is_better)

    def feasible(self) -> list[Candidate]:
        return [row for row in self.rows if row.feasible]

    def best(self) -> Candidate:
        """The feasible candidate with the best score; raises :class:`NoFeasibleCandidateError` if there is none."""
        feasible = self.feasible()
        if not feasible:
            latencies = [row.latency_ms for row in self.rows if math.isfinite(row.latency_ms)]
            lowest = f"; the lowest latency seen was {min(latencies):.3f} ms" if latencies else ""
            reasons = sorted({row.reason for row in self.rows})[:3]
            raise NoFeasibleCandidateError(
                f"none of the {len(self.rows)} scored candidates meets the constraints{lowest} "
                f"(e.g. {'; '.join(reasons)}). Relax the constraint (e.g. hardware.target_latency_ms) or shrink the space."
            )
        return max(feasible, key=self.objective)

    def pareto(self) -> list[Candidate]:
        """Feasible-or-not candidates on the front of (score ↑, latency ↓); unmeasured latency counts as 0."""
        points = [(self.objective(r), r.latency_ms if math.isfinite(r.latency_ms) else 0.0) for r in self.rows]
        return [row for row, keep in zip(self.rows, pareto_mask(points), strict=True) if keep]

    def ranked(self) -> list[Candidate]:
        """Rows sorted best first: feasible before infeasible, then by score."""
        return sorted(self.rows, key=lambda r: (not r.feasible, -self.objective(r)))

    def to_csv(self) -> str:
        on_front = {row.arch for row in self.pareto()}
        buffer = io.StringIO()
        component_names = sorted({name for row in self.rows for name in row.components})
        columns = ["rank"] + [f.name for f in fields(Candidate) if f.name != "components"] + ["pareto"] + [f"proxy.{n}" for n in component_names]
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for rank, row in enumerate(self.ranked(), start=1):
            record = {k: v for k, v in asdict(row).items() if k != "components"}
            writer.writerow({"rank": rank, **record, "pareto": row.arch in on_front, **{f"proxy.{n}": v for n, v in row.components.items()}})
        return buffer.getvalue()

    def write_csv(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.to_csv())

    def state_dict(self) -> dict:
        return {"higher_is_better": self.higher_is_better, "rows": [asdict(row) for row in self.rows]}

    def load_state_dict(self, state: dict) -> None:
        self.higher_is_better = state["higher_is_better"]
        self.rows, self._keys = [], set()
        for row in state["rows"]:
            self.rows.append(Candidate(**row))
            self._keys.add(row["arch"])
