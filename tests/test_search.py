import math

import pytest
import torch

from lnas.search import Candidate, EvolutionSearch, Leaderboard, NoFeasibleCandidateError, RandomSearch, pareto_mask
from lnas.spaces import MBConvSpace


def test_pareto_mask_on_a_known_case():
    # maximise gain, minimise cost: (3, 3) dominates (2, 4); (1, 1) and (3, 3) and (4, 9) are non-dominated
    points = [(1, 1), (3, 3), (2, 4), (4, 9), (4, 10)]
    assert pareto_mask(points) == [True, True, False, True, False]


def _row(arch: str, score: float, latency: float, feasible: bool = True) -> Candidate:
    return Candidate(arch=arch, score=score, params=1, flops=1, latency_ms=latency, feasible=feasible,
                     reason="" if feasible else f"latency {latency} ms > target 1 ms")


def test_best_skips_infeasible_and_non_finite_scores():
    board = Leaderboard(higher_is_better=True)
    board.add(_row("a", 5.0, 0.5))
    with pytest.warns(RuntimeWarning, match="arch b"):
        board.add(_row("b", math.nan, 0.5))
    board.add(_row("c", 9.0, 3.0, feasible=False))
    assert board.best().arch == "a"
    assert [r.arch for r in board.ranked()] == ["a", "b", "c"]
    lower = Leaderboard(higher_is_better=False)
    lower.add(_row("x", 5.0, 0.1))
    lower.add(_row("y", 2.0, 0.1))
    assert lower.best().arch == "y"


def test_no_feasible_candidate_error_gives_the_lowest_latency():
    board = Leaderboard()
    board.add(_row("a", 1.0, 2.5, feasible=False))
    board.add(_row("b", 2.0, 1.75, feasible=False))
    with pytest.raises(NoFeasibleCandidateError, match=r"lowest latency seen was 1\.750 ms"):
        board.best()


def test_leaderboard_state_round_trip_and_csv():
    board = Leaderboard()
    board.add(_row("a", 1.0, 2.0))
    board.add(_row("b", 2.0, 1.0))
    restored = Leaderboard()
    restored.load_state_dict(board.state_dict())
    assert restored.to_csv() == board.to_csv() and "b" in restored
    lines = board.to_csv().splitlines()
    assert lines[0].startswith("rank,arch,score") and lines[1].startswith("1,b,")


def test_strategies_propose_valid_deterministic_archs():
    space = MBConvSpace(stages=[{"channels": 8, "stride": 2, "depths": [1, 2]}] * 2, out_indices=[1])
    for strategy in (RandomSearch(), EvolutionSearch(population=4, tournament=2)):
        runs = []
        for _ in range(2):
            board, generator = Leaderboard(), torch.Generator().manual_seed(0)
            for i in range(12):
                arch = strategy.propose(space, board, generator)
                space.validate(arch)
                board.add(_row(space.encode(arch), float(i), 1.0))
            runs.append([r.arch for r in board.rows])
        assert runs[0] == runs[1]
    with pytest.raises(ValueError, match="tournament"):
        EvolutionSearch(population=2, tournament=3)


def test_population_aggregate_rescores_every_row():
    def mean_rank(rows):  # rank of each row's single component among all rows (higher component, higher rank)
        values = [r["a"] for r in rows]
        return [float(sorted(values).index(v)) for v in values]

    board = Leaderboard(aggregate=mean_rank)
    for arch, value in (("x", 3.0), ("y", 1.0), ("z", 2.0)):
        board.add(Candidate(arch=arch, score=math.nan, params=1, flops=1, components={"a": value}))
    assert [r.score for r in board.rows] == [2.0, 0.0, 1.0]
    assert board.best().arch == "x"
    header = board.to_csv().splitlines()[0]
    assert header.endswith("pareto,proxy.a")
