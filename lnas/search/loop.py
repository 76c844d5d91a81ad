"""The ask → score → tell loop shared by the Lightning search callback and the benchmark recipes."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict

from lnas.search.leaderboard import Candidate, Leaderboard
from lnas.search.strategies import OptunaSearch
from lnas.spaces.arch import Arch
from lnas.spaces.base import SearchSpace

Evaluate = Callable[[Arch, str], Candidate]
"""Scores one arch (given with its key): its measures, components and errors."""


class SearchLoop:
    """Ask ``strategy`` for archs, score each new one with ``evaluate``, add it to ``leaderboard`` and tell the strategy its
    objective values and constraint violations. An arch already on the board is told its known result, not scored again."""

    def __init__(self, space: SearchSpace, strategy: OptunaSearch, leaderboard: Leaderboard) -> None:
        self.space, self.strategy, self.leaderboard = space, strategy, leaderboard

    def tell(self, trial, row: Candidate) -> None:
        self.strategy.tell(trial, [row.measures.get(o.name, math.nan) for o in self.leaderboard.objectives], self.leaderboard.violations(row),
                           record=asdict(row) if self.strategy.storage else None)

    def sync(self) -> int:
        """Put the candidates that other processes scored into a shared study on the board; returns how many."""
        added = 0
        for record in self.strategy.stored_candidates() if self.strategy.storage else []:
            if record["arch"] not in self.leaderboard:
                self.leaderboard.add(Candidate(**record))
                added += 1
        return added

    def run_until(self, count: int, evaluate: Evaluate, max_attempts: int) -> int:
        """Score until ``count`` candidates (not references) are on the board or ``max_attempts`` proposals were made;
        returns how many were scored."""
        scored, attempts = 0, 0
        while attempts < max_attempts:
            self.sync()
            if len(self.leaderboard.candidates()) >= count:
                break
            attempts += 1
            trial, arch = self.strategy.ask()
            key = self.space.encode(arch)
            if key in self.leaderboard:
                self.tell(trial, self.leaderboard.get(key))
                continue
            row = evaluate(arch, key)
            self.leaderboard.add(row)
            self.tell(trial, row)
            scored += 1
        return scored
