import math
from functools import partial

import numpy as np
import optuna
import pytest

from lnas.search import (
    Candidate,
    Constraint,
    Leaderboard,
    NoFeasibleCandidateError,
    Objective,
    OptunaSearch,
    RegularizedEvolutionSampler,
    non_dominated_ranks,
)
from lnas.search.objectives import MAXIMIZE, MINIMIZE
from lnas.spaces import MBConvSpace
from lnas.spaces.nb201 import NB201Space

SCORE_UP, LATENCY = Objective("score", MAXIMIZE), Objective("latency_ms.cpu", MINIMIZE)


def test_non_dominated_sorting_on_known_cases():
    # maximise both columns: (3, -3) dominates (2, -4); (1, -1), (3, -3), (4, -9) are non-dominated
    assert non_dominated_ranks(np.array([[1, -1], [3, -3], [2, -4], [4, -9], [4, -10]])).tolist() == [0, 0, 1, 0, 1]
    three = np.array([[1, 1, 1], [2, 0, 0], [0, 0, 2], [0, 0, 0], [-1, -1, -1]])
    assert non_dominated_ranks(three).tolist() == [0, 0, 0, 1, 2]
    assert non_dominated_ranks(np.array([[1.0, 1.0], [1.0, 1.0]])).tolist() == [0, 0]  # equal points do not dominate each other


def test_objectives_orient_values_and_constraints_treat_a_missing_measure_as_violated():
    assert SCORE_UP.oriented(2.0) == 2.0 and LATENCY.oriented(2.0) == -2.0 and LATENCY.oriented(math.nan) == -math.inf
    with pytest.raises(ValueError, match="maximize"):
        Objective("score", "up")
    budget = Constraint("latency_ms.cpu", 1.0)
    assert budget.violation(0.5) == -0.5 and budget.violation(math.nan) == math.inf
    assert budget.describe(1.5) == "latency_ms.cpu 1.5 > 1" and budget.describe(math.nan) == "latency_ms.cpu not measured"


def _row(arch: str, score: float, latency: float, **extra) -> Candidate:
    return Candidate(arch=arch, measures={"score": score, "latency_ms.cpu": latency, "params": 1.0, "flops": 1.0}, **extra)


def test_best_meets_every_constraint_and_unmeasured_or_reference_rows_are_never_picked_nor_on_the_front():
    board = Leaderboard([SCORE_UP, LATENCY], [Constraint("latency_ms.cpu", 1.0)])
    board.add(_row("a", 5.0, 0.5))
    with pytest.warns(RuntimeWarning, match="arch b"):
        board.add(_row("b", math.nan, 0.4))
    board.add(_row("c", 9.0, 3.0))
    board.add(_row("d", 8.0, math.nan, errors=["latency_ms.cpu not measured: RuntimeError: boom"]))
    board.add(_row("baseline", 99.0, 0.1, reference=True))
    assert board.best().arch == "a"
    assert [r.arch for r in board.front()] == ["a"]  # b: no finite score; c: over budget; d: not measured; baseline: a reference
    assert board.reasons(board.get("c")) == ["latency_ms.cpu 3 > 1"] and "boom" in board.reasons(board.get("d"))[0]
    assert [r.arch for r in board.ranked()] == ["a", "b", "c", "d", "baseline"]
    assert [r.arch for r in board.ranked(first="c")] == ["c", "a", "b", "d", "baseline"]  # the pick heads leaderboard.csv
    assert [line.split(",")[1] for line in board.to_csv(first="c").splitlines()[1:3]] == ["c", "a"]
    assert board.best(constraints=[]).arch == "c"  # without the budget: the best score
    lower = Leaderboard([Objective("score", MINIMIZE)])
    lower.add(_row("x", 5.0, 0.1))
    lower.add(_row("y", 2.0, 0.1))
    assert lower.best().arch == "y"


def test_the_front_has_every_non_dominated_candidate_over_three_objectives():
    board = Leaderboard([SCORE_UP, LATENCY, Objective("params", MINIMIZE)])
    for arch, score, latency, params in (("a", 3, 1, 9), ("b", 2, 2, 1), ("c", 1, 3, 8), ("d", 3, 1, 10)):
        board.add(Candidate(arch, {"score": score, "latency_ms.cpu": latency, "params": params}))
    assert sorted(r.arch for r in board.front()) == ["a", "b"]  # c is dominated by b, d by a


def test_no_feasible_candidate_error_gives_the_lowest_value_of_each_bounded_measure():
    board = Leaderboard([SCORE_UP, LATENCY], [Constraint("latency_ms.cpu", 1.0)])
    board.add(_row("a", 1.0, 2.5))
    board.add(_row("b", 2.0, 1.75))
    with pytest.raises(NoFeasibleCandidateError, match=r"the lowest latency_ms\.cpu seen was 1\.750.*target_speedup"):
        board.best()


def test_leaderboard_csv_has_a_column_per_device_and_round_trips_its_state():
    board = Leaderboard([SCORE_UP, LATENCY, Objective("latency_ms.gpu", MINIMIZE)], [Constraint("latency_ms.gpu", 1.0)])
    board.add(Candidate("a", {"score": 1.0, "latency_ms.cpu": 2.0, "latency_ms.gpu": 0.5}, spreads={"latency_ms.cpu": 0.1}))
    board.add(Candidate("b", {"score": 2.0, "latency_ms.cpu": 1.0, "latency_ms.gpu": 1.5}))
    header, first, second = board.to_csv().splitlines()
    assert header.startswith("rank,arch,stage,feasible,reason,pareto,reference,score,")
    assert {"latency_ms.cpu", "latency_ms.gpu", "latency_spread_ms.cpu"} <= set(header.split(","))
    assert first.startswith("1,a,score,True,,True") and second.startswith("2,b,score,False,latency_ms.gpu 1.5 > 1,False")
    restored = Leaderboard(board.objectives, board.constraints)
    restored.load_state_dict(board.state_dict())
    assert restored.to_csv() == board.to_csv() and "b" in restored


def test_a_population_aggregate_rescores_every_row():
    def rank_of(rows):  # rank of each row's single component among all rows
        values = [r["a"] for r in rows]
        return [float(sorted(values).index(v)) for v in values]

    board = Leaderboard([SCORE_UP], aggregate=rank_of)
    for arch, value in (("x", 3.0), ("y", 1.0), ("z", 2.0)):
        board.add(Candidate(arch, components={"a": value}))
    assert [r.score for r in board.rows] == [2.0, 0.0, 1.0] and board.best().arch == "x"


SAMPLERS = {
    "random": optuna.samplers.RandomSampler,
    "nsga2": partial(optuna.samplers.NSGAIISampler, population_size=4),
    "tpe": partial(optuna.samplers.TPESampler, n_startup_trials=4),
    "evolution": partial(RegularizedEvolutionSampler, population=4, tournament=2),
}
SPACES = {"mbconv": lambda: MBConvSpace(stages=[{"channels": 8, "stride": 2, "depths": [1, 2]}] * 2, out_indices=[1], resolutions=[32, 64]),
          "nb201": NB201Space}


def _run(strategy: OptunaSearch, space, count: int, start: bool = True) -> list[str]:
    if start:
        strategy.start(space, [SCORE_UP, LATENCY], seed=0)
    archs = []
    for _ in range(count):
        trial, arch = strategy.ask()
        space.validate(arch)
        key = space.encode(arch)
        score, latency = float(len(key) % 7), float(len(key) % 5) + 0.5
        strategy.tell(trial, [score, latency], {"latency_ms.cpu": latency - 3.0})
        archs.append(key)
    return archs


@pytest.mark.parametrize("space_name", sorted(SPACES))
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_strategy_proposes_valid_archs_deterministically_and_resumes_from_its_state(sampler, space_name):
    space = SPACES[space_name]()
    first = _run(OptunaSearch(SAMPLERS[sampler]), space, 12)
    again = OptunaSearch(SAMPLERS[sampler])
    assert _run(again, space, 12) == first
    half = OptunaSearch(SAMPLERS[sampler])
    head = _run(half, space, 6)
    resumed = OptunaSearch(SAMPLERS[sampler])
    resumed.load_state_dict(half.state_dict())
    resumed.start(space, [SCORE_UP, LATENCY], seed=0)
    assert head + _run(resumed, space, 6, start=False) == first


def test_the_strategy_seeds_its_sampler_and_tells_every_constraint_by_name():
    seen = {}

    def factory(seed):
        seen["seed"] = seed
        return optuna.samplers.RandomSampler(seed)

    strategy = OptunaSearch(factory)
    strategy.start(NB201Space(), [SCORE_UP, LATENCY], seed=7)
    assert seen == {"seed": 7}
    trial, _ = strategy.ask()
    strategy.tell(trial, [1.0, 2.0], {"latency_ms.cpu": 0.5, "params": math.inf})
    assert strategy.study.trials[0].constraints == {"latency_ms.cpu": 0.5, "params": 1e30}  # not measured: a large violation


def test_the_default_arch_can_be_enqueued_first_and_a_failed_score_fails_its_trial():
    space = NB201Space()
    strategy = OptunaSearch()
    strategy.start(space, [SCORE_UP, LATENCY], seed=0)
    strategy.enqueue(space.default())
    trial, arch = strategy.ask()
    assert arch == space.default()
    strategy.tell(trial, [math.nan, 1.0], {"latency_ms.cpu": 0.0})
    assert strategy.study.trials[0].state == optuna.trial.TrialState.FAIL


def test_regularized_evolution_mutates_one_choice_of_a_feasible_parent():
    space = NB201Space()
    strategy = OptunaSearch(partial(RegularizedEvolutionSampler, population=8, tournament=8))
    strategy.start(space, [SCORE_UP], seed=1)
    told = []
    for index in range(30):
        trial, arch = strategy.ask()
        # the random first generation: odd trials score highest but break their constraint, so they must never be parents
        ok = index >= 8 or index % 2 == 0
        strategy.tell(trial, [1000.0 + index if not ok else float(index)], {"c": -1.0 if ok else 1.0})
        if index >= 8:
            distance = {i: sum(arch[k] != a[k] for k in arch) for i, (a, _) in enumerate(told)}
            feasible = [d for i, d in distance.items() if told[i][1]]
            assert min(feasible) <= 1 and (index > 8 or min(feasible) == 1)
        told.append((arch, ok))
    with pytest.raises(ValueError, match="tournament"):
        RegularizedEvolutionSampler(population=2, tournament=3)
