"""Every scored candidate with its measures, feasibility under the constraints, and the N-objective Pareto front."""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lnas.io import atomic_write_text
from lnas.search.objectives import (
    FINETUNE_LOSS,
    LATENCY,
    MINIMIZE,
    SCORE,
    Constraint,
    Objective,
    non_dominated_ranks,
    oriented_matrix,
)

FINETUNED_OBJECTIVE = Objective(FINETUNE_LOSS, MINIMIZE)


class NoFeasibleCandidateError(RuntimeError):
    """No scored candidate meets the constraints."""


@dataclass
class Candidate:
    """One row of the leaderboard.

    ``measures``: named numbers (``score``, ``params``, ``flops``, ``latency_ms.<device>``, ...; NaN when not taken);
    ``spreads``: the measurement spread of some of them (latencies); ``components``: each ensemble member's score;
    ``errors``: why a measure could not be taken; ``stage``: the last stage that scored it; ``reference``: a model
    the search compares with (the baseline) rather than a candidate it may pick.
    """

    arch: str
    measures: dict[str, float] = field(default_factory=dict)
    spreads: dict[str, float] = field(default_factory=dict)
    components: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    stage: str = "score"
    step: int = 0
    reference: bool = False

    @property
    def score(self) -> float:
        return self.measures.get(SCORE, math.nan)


Aggregator = Callable[[Sequence[Mapping[str, float]]], list[float]]


class Leaderboard:
    """Scored candidates in scoring order under ``objectives`` (the first is the predicted accuracy, ``score``) and
    ``constraints``.

    With an ``aggregate`` function (a population-level ensemble such as rank aggregation), every row keeps its
    per-proxy ``components`` and all scores are recomputed from the whole population whenever a row is added.
    """

    def __init__(self, objectives: Sequence[Objective], constraints: Sequence[Constraint] = (), aggregate: Aggregator | None = None) -> None:
        if not objectives or objectives[0].name != SCORE:
            raise ValueError(f"the first objective must be {SCORE!r} (the predicted accuracy), got {[o.name for o in objectives]}")
        self.objectives, self.constraints, self.aggregate = list(objectives), list(constraints), aggregate
        self.rows: list[Candidate] = []
        self._index: dict[str, Candidate] = {}

    @property
    def score_objective(self) -> Objective:
        return self.objectives[0]

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, arch: str) -> bool:
        return arch in self._index

    def get(self, arch: str) -> Candidate:
        return self._index[arch]

    def candidates(self) -> list[Candidate]:
        """The rows that may be picked (not references)."""
        return [row for row in self.rows if not row.reference]

    def add(self, candidate: Candidate) -> None:
        if candidate.arch in self._index:
            raise ValueError(f"{candidate.arch} is already on the leaderboard")
        self.rows.append(candidate)
        self._index[candidate.arch] = candidate
        self._scored(candidate)

    def replace(self, candidate: Candidate) -> None:
        """Put ``candidate`` in the place of the row with its arch (a later stage scored it again)."""
        index = self.rows.index(self._index[candidate.arch])
        self.rows[index] = self._index[candidate.arch] = candidate
        self._scored(candidate)

    def _scored(self, candidate: Candidate) -> None:
        if candidate.components:  # a row without components leaves the population's aggregate as it is
            self.rescore()
        if candidate.stage == "screen":  # a screened row has a cheap score only
            return
        bad = [f"{k}={v}" for k, v in candidate.components.items() if not math.isfinite(v)]
        if bad or not math.isfinite(candidate.score):
            detail = ", ".join(bad) if bad else f"score={candidate.score}"
            warnings.warn(f"proxy score of arch {candidate.arch} is not finite ({detail}); it ranks last", RuntimeWarning, stacklevel=2)

    def rescore(self) -> None:
        """Recompute every aggregated score from the population's components (no-op without an aggregate)."""
        scored = [row for row in self.rows if row.components]
        if self.aggregate is not None and scored:
            for row, score in zip(scored, self.aggregate([r.components for r in scored]), strict=True):
                row.measures[SCORE] = score

    def objective(self, candidate: Candidate) -> float:
        """The candidate's score, oriented larger-is-better (non-finite: worst)."""
        return self.score_objective.oriented(candidate.score)

    def finetuned(self, candidate: Candidate) -> float:
        """The candidate's fine-tune loss (``finetune_loss``), oriented larger-is-better (not taken: worst)."""
        return FINETUNED_OBJECTIVE.oriented(candidate.measures.get(FINETUNE_LOSS, math.nan))

    def reasons(self, candidate: Candidate, constraints: Sequence[Constraint] | None = None) -> list[str]:
        """Why ``candidate`` is infeasible under ``constraints`` (default: all): its errors and every violated constraint."""
        constraints = self.constraints if constraints is None else constraints
        values = candidate.measures
        return list(candidate.errors) + [c.describe(values.get(c.measure)) for c in constraints if c.violation(values.get(c.measure)) > 0]

    def violations(self, candidate: Candidate) -> dict[str, float]:
        """Constraint (its measure) → how far the candidate is over it (<= 0: met; Optuna's convention)."""
        return {c.measure: c.violation(candidate.measures.get(c.measure)) for c in self.constraints}

    def is_feasible(self, candidate: Candidate, constraints: Sequence[Constraint] | None = None) -> bool:
        return not self.reasons(candidate, constraints)

    def feasible(self, constraints: Sequence[Constraint] | None = None) -> list[Candidate]:
        """The candidates (not references) that meet ``constraints`` (default: all)."""
        return [row for row in self.candidates() if self.is_feasible(row, constraints)]

    def best(self, constraints: Sequence[Constraint] | None = None, only: Callable[[Candidate], bool] | None = None,
             key: Callable[[Candidate], float] | None = None) -> Candidate:
        """The feasible candidate with the best finite score, or the largest finite ``key`` (among those ``only``
        accepts); raises :class:`NoFeasibleCandidateError` if there is none."""
        key = key or self.objective
        feasible = [row for row in self.feasible(constraints) if math.isfinite(key(row)) and (only is None or only(row))]
        if not feasible:
            constraints = self.constraints if constraints is None else constraints
            lowest = []
            for measure in sorted({c.measure for c in constraints}):
                values = [row.measures[measure] for row in self.candidates() if math.isfinite(row.measures.get(measure, math.nan))]
                if values:
                    lowest.append(f"the lowest {measure} seen was {min(values):.3f}")
            reasons = sorted({"; ".join(self.reasons(row, constraints)) for row in self.candidates()})[:3]
            raise NoFeasibleCandidateError(
                f"none of the {len(self.candidates())} scored candidates meets the constraints"
                f"{'; ' + ', '.join(lowest) if lowest else ''} (e.g. {' | '.join(reasons)}). Relax the constraint "
                "(e.g. hardware.target_latency_ms or hardware.target_speedup) or shrink the space."
            )
        return max(feasible, key=key)

    def front(self) -> list[Candidate]:
        """The feasible candidates on the Pareto front of the objectives (non-dominated; every objective finite)."""
        rows = [row for row in self.feasible() if all(math.isfinite(row.measures.get(o.name, math.nan)) for o in self.objectives)]
        if not rows:
            return []
        ranks = non_dominated_ranks(oriented_matrix([row.measures for row in rows], self.objectives))
        return [row for row, rank in zip(rows, ranks, strict=True) if rank == 0]

    def ranked(self, first: str | None = None) -> list[Candidate]:
        """Rows sorted best first: the arch ``first`` (the pick), feasible candidates, then infeasible ones, then
        references; each by stage (fine-tuned, measured, scored, screened) and score (fine-tuned ones by their fine-tune loss)."""
        stage = {"finetune": -1, "measure": 0, "score": 1, "screen": 2}
        return sorted(self.rows, key=lambda r: (r.arch != first, r.reference, not self.is_feasible(r), stage.get(r.stage, 1),
                                                -(self.finetuned(r) if r.stage == "finetune" else self.objective(r))))

    def measure_names(self) -> list[str]:
        """Every measure on the board: score, costs, then the latency of each device."""
        names = {name for row in self.rows for name in row.measures}
        latencies = sorted(name for name in names if name.startswith(LATENCY))
        return [SCORE] + sorted(names - {SCORE} - set(latencies)) + latencies

    def to_csv(self, first: str | None = None) -> str:
        """The board as CSV, rows in :meth:`ranked` order (``first`` at the top)."""
        on_front = {row.arch for row in self.front()}
        measures = self.measure_names()
        spreads = sorted({name for row in self.rows for name in row.spreads})
        components = sorted({name for row in self.rows for name in row.components})
        columns = (["rank", "arch", "stage", "feasible", "reason", "pareto", "reference", *measures]
                   + [name.replace(LATENCY, "latency_spread_ms", 1) for name in spreads] + ["step"] + [f"proxy.{n}" for n in components])
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for rank, row in enumerate(self.ranked(first), start=1):
            writer.writerow({"rank": rank, "arch": row.arch, "stage": row.stage, "feasible": self.is_feasible(row),
                             "reason": "; ".join(self.reasons(row)), "pareto": row.arch in on_front, "reference": row.reference,
                             **{name: row.measures.get(name, math.nan) for name in measures},
                             **{name.replace(LATENCY, "latency_spread_ms", 1): value for name, value in row.spreads.items()},
                             "step": row.step, **{f"proxy.{n}": v for n, v in row.components.items()}})
        return buffer.getvalue()

    def write_csv(self, path: str | Path, first: str | None = None) -> Path:
        return atomic_write_text(path, self.to_csv(first))

    def state_dict(self) -> dict:
        return {"rows": [asdict(row) for row in self.rows]}

    def load_state_dict(self, state: dict) -> None:
        self.rows, self._index = [], {}
        for data in state["rows"]:
            row = Candidate(**data)
            self.rows.append(row)
            self._index[row.arch] = row
