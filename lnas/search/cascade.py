"""The search cascade: screen many candidates cheaply, score the best of them with the full predictor, then measure the
finalists on the device (as nn-Meter's and Once-for-All's searches do: a cheap model first, the device at the end).

0. *calibrate*: where a device estimates latency from the arch (a look-up table), a few candidates are measured end to
   end first to calibrate it.
1. *screen*: the strategy explores with costs from the arch alone: its predicted accuracy there is a cheap proxy
   (FLOPs, AZ-NAS's complexity), its latency the device's estimate from the arch (a look-up table) where the device
   has one; the constraints it can evaluate apply.
2. *score*: the screened candidates that meet the constraints, best cheap score first, get the full predictor (the
   pick is the best predicted accuracy within the constraints, so the predictor goes where the cheap estimate of it
   is highest), then those that miss them, nearest the bounds first.
3. *measure*: the best scored candidates that meet the constraints are measured on the device, side by side; the pick
   is made on the measured latency. Their measurements refit the estimates from the arch.
4. *finetune* (optional): a short list of the measured candidates that meet the trained device's constraints (the
   best of the predictor and of each ensemble member in turn), the space's default among them, is trained for a few
   steps from the supernet's weights; the pick is the one whose training loss fell fastest (the lowest mean loss over
   those steps: the training speed estimate of Ru et al., "Speedy Performance Estimation for Neural Architecture
   Search", NeurIPS 2021). A zero-shot score cannot tell apart candidates that train very differently; a short
   training run can.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from lnas.search.leaderboard import Candidate, Leaderboard
from lnas.search.loop import Evaluate, SearchLoop
from lnas.search.objectives import SCORE, SCREEN_SCORE, Constraint, Objective
from lnas.search.strategies import OptunaSearch
from lnas.spaces.base import SearchSpace

CALIBRATED, SCREEN, SCORED, MEASURED, FINETUNED = "calibrate", "screen", "score", "measure", "finetune"


def total_violation(board: Leaderboard, row: Candidate) -> float:
    """How far ``row`` is over its constraints, summed (0 when it meets them all)."""
    return sum(max(v, 0.0) for v in board.violations(row).values())


def promotion_order(board: Leaderboard) -> list[str]:
    """The screened candidates in the order the full predictor scores them (see the module docstring)."""
    feasible = sorted(board.feasible(), key=board.objective, reverse=True)
    infeasible = sorted((row for row in board.candidates() if not board.is_feasible(row)), key=lambda row: total_violation(board, row))
    return [row.arch for row in feasible + infeasible]


def finalists(board: Leaderboard, count: int, measured: set[str]) -> list[Candidate]:
    """The ``count`` best-scored candidates that meet every constraint and were not measured yet; when none is left,
    the ``count`` scored ones nearest to meeting them (an estimate from the arch can put every candidate near the
    budget over it once the finalists' measurements recalibrate it: measuring goes on down from the bounds)."""
    chosen = shortlist(board, count, board.constraints, lambda row: row.arch not in measured)
    if chosen:
        return chosen
    rest = [row for row in board.candidates() if row.stage != SCREEN and row.arch not in measured and math.isfinite(row.score)]
    return sorted(rest, key=lambda row: total_violation(board, row))[:count]


def shortlist(board: Leaderboard, count: int, constraints: Sequence[Constraint], only: Callable[[Candidate], bool] | None,
              always: Sequence[str] = (), rankings: Sequence[Callable[[Candidate], float]] = ()) -> list[Candidate]:
    """``count`` candidates that meet ``constraints`` (among those ``only`` accepts): first the feasible ones of ``always``
    (e.g. the space's default and its scalings), in order, at most half of ``count`` (rounded up), then the rest.

    The rest are taken in turn from the score's ranking and from each of ``rankings`` (larger is better; e.g. each
    ensemble member's), the best of each not taken yet: one predictor's bias does not fill the whole list.
    """
    pool = [row for row in board.feasible(constraints) if math.isfinite(row.score) and (only is None or only(row))]
    extra = [board.get(key) for key in dict.fromkeys(always) if key in board and board.is_feasible(board.get(key), constraints)]
    chosen = extra[:count - count // 2]
    orders = [sorted(pool, key=key, reverse=True) for key in (board.objective, *rankings)]
    while len(chosen) < count and any(row not in chosen for row in pool):
        for order in orders:
            best = next((row for row in order if row not in chosen), None)
            if best is not None and len(chosen) < count:
                chosen.append(best)
    return chosen


class Cascade:
    """Stages 1 and 2 of the cascade over ``leaderboard``: :meth:`screen` with the strategy and cheap evaluations, then
    :meth:`score_until` with the full predictor, in :func:`promotion_order` (the space's default first when
    ``include_default``). Screened rows keep their cheap score as ``screen_score``."""

    def __init__(self, space: SearchSpace, strategy: OptunaSearch, leaderboard: Leaderboard, include_default: bool = True) -> None:
        self.space, self.strategy, self.leaderboard, self.include_default = space, strategy, leaderboard, include_default
        self.promotions: list[str] = []
        self.screened = False

    def screen(self, count: int, objectives: Sequence[Objective], constraints: Sequence[Constraint], evaluate: Evaluate,
               first: Sequence[str] = ()) -> Leaderboard:
        """Screen ``count`` candidates: ``evaluate`` gives each its cheap score (``score``) and arch-level measures.
        The space's default (with ``include_default``) and the keys ``first`` are promoted first, in that order; a
        candidate the full predictor scored already keeps its row (and gains its screen score)."""
        board = Leaderboard(objectives, constraints)
        SearchLoop(self.space, self.strategy, board).run_until(count, evaluate, max_attempts=100 * count)
        default = [self.space.encode(self.space.default())] if self.include_default else []
        self.promotions = list(dict.fromkeys([*default, *first, *promotion_order(board)]))
        for row in board.rows:
            row.measures[SCREEN_SCORE] = row.measures.pop(SCORE)
            if row.arch in self.leaderboard:
                self.leaderboard.get(row.arch).measures.setdefault(SCREEN_SCORE, row.measures[SCREEN_SCORE])
            else:
                row.stage = SCREEN
                self.leaderboard.add(row)
        self.screened = True
        return board

    def scored(self) -> list[Candidate]:
        """The candidates the full predictor scored (measured finalists included)."""
        return [row for row in self.leaderboard.candidates() if row.stage != SCREEN]

    def score_until(self, count: int, evaluate: Evaluate) -> int:
        """Score promoted candidates with ``evaluate`` until ``count`` are scored or none are left; returns how many."""
        done = 0
        while len(self.scored()) < count and self.promotions:
            key = self.promotions.pop(0)
            if key in self.leaderboard and self.leaderboard.get(key).stage != SCREEN:
                continue  # scored already
            row = evaluate(self.space.decode(key), key)
            row.stage = SCORED
            if key in self.leaderboard:
                row.measures.setdefault(SCREEN_SCORE, self.leaderboard.get(key).measures.get(SCREEN_SCORE, math.nan))
                self.leaderboard.replace(row)
            else:
                self.leaderboard.add(row)
            done += 1
        return done
