"""The ask → score → tell loop shared by the Lightning search callback and the benchmark recipes."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict

from lnas.search.leaderboard import Candidate, Leaderboard
from lnas.search.strategies import OptunaSearch
from lnas.spaces.arch import Arch
from lnas.spaces.base import SearchSpace

Evaluate = Callable[[Arch, str], Candidate]
"""Scores one arch (given with its key): its measures, components and errors."""
EvaluateRound = Callable[[Sequence[tuple[Arch, str]]], list[Candidate]]
"""Scores a round of archs (with their keys), one candidate each, in order."""


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

    def run_until(self, count: int, evaluate: Evaluate, max_attempts: int, round_size: int = 1,
                  evaluate_round: EvaluateRound | None = None, limit: int | None = None) -> int:
        """Score until ``count`` candidates (not references) are on the board or ``max_attempts`` proposals were made;
        returns how many were scored.

        Proposals come in rounds of ``round_size`` new archs: asked together, scored together by ``evaluate_round``
        (e.g. shared out over DDP ranks; default: ``evaluate`` on each in turn), then told in the order asked. A round
        is cut short only where it would put more than ``limit`` (default ``count``) candidates on the board, so with
        a fixed ``limit`` the proposals depend on ``round_size`` alone, not on how ``count`` grows from call to call
        nor on who scores them.
        """
        limit = count if limit is None else limit
        evaluate_round = evaluate_round or (lambda items: [evaluate(arch, key) for arch, key in items])
        scored, attempts = 0, 0
        while attempts < max_attempts:
            self.sync()
            on_board = len(self.leaderboard.candidates())
            if on_board >= count:
                break
            asked, fresh = [], {}
            while len(fresh) < min(round_size, limit - on_board) and attempts < max_attempts:
                attempts += 1
                trial, arch = self.strategy.ask()
                key = self.space.encode(arch)
                if key in self.leaderboard:
                    self.tell(trial, self.leaderboard.get(key))
                    continue
                asked.append((trial, key))
                fresh.setdefault(key, arch)
            for row in evaluate_round([(arch, key) for key, arch in fresh.items()]):
                self.leaderboard.add(row)
                scored += 1
            for trial, key in asked:
                self.tell(trial, self.leaderboard.get(key))
        return scored
