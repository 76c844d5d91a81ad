"""Recipe ``pick_vs_default``: the win rule and the tally over tasks and seeds (the main job itself is tested elsewhere)."""

import json

import pytest
from hydra import compose, initialize_config_module

from lnas.benchmarks import pick_vs_default
from lnas.benchmarks.pick_vs_default import WinRule
from lnas.reproduce import run_recipe


@pytest.mark.parametrize(("delta", "pick_ms", "default_ms", "spread", "win"), [
    (0.0, 1.0, 1.0, 0.0, True),     # as accurate, as fast
    (0.4, 1.05, 1.0, 0.1, True),    # more accurate, slower only within the measurement's spread
    (0.4, 1.2, 1.0, 0.1, False),    # more accurate but slower
    (-0.5, 0.66, 1.0, 0.0, True),   # 1.5x faster, half a point less accurate
    (-0.6, 0.5, 1.0, 0.0, False),   # 2x faster but too much less accurate
    (-0.1, 0.8, 1.0, 0.0, False),   # faster, slightly worse, but not 1.5x faster
])
def test_a_pick_wins_when_as_good_and_no_slower_or_much_faster_and_nearly_as_good(delta, pick_ms, default_ms, spread, win):
    assert WinRule(1.5, 0.5).wins(delta, default_ms / pick_ms, pick_ms, default_ms, spread) is win


def _summary(pick_map: float, pick_ms: float) -> dict:
    def entry(arch: str, value: float, ms: float) -> dict:
        return {"arch": arch, "metrics": {"map": value}, "latency_ms": {"cpu": ms}, "latency_spread_ms": {"cpu": 0.01}}

    return {"metric": "map", "devices": ["cpu"], "budgets_ms": {"cpu": 0.7}, "pick": entry("p", pick_map, pick_ms),
            "baseline": entry("d", 0.30, 1.0)}


def test_the_recipe_tallies_wins_over_tasks_and_seeds_and_fails_below_the_expected_share(tmp_path, monkeypatch):
    outcomes = {0: _summary(0.31, 0.6), 1: _summary(0.28, 0.6), 2: _summary(0.30, 1.0)}  # win (faster, better), loss, win (tie)
    calls = []

    def fake_run(task, seed, overrides, run_dir):
        calls.append((task, seed, overrides))
        return outcomes[seed]

    monkeypatch.setattr(pick_vs_default, "run_one", fake_run)
    with initialize_config_module("lnas.recipes", version_base="1.3"):
        cfg = compose(config_name="pick_vs_default", overrides=["tasks=[detection]", "task_overrides.detection=['a=1']", "train=['final_epochs=2']"])
    assert run_recipe(cfg, tmp_path) == 1  # 2 of 3 is below 5 of 6
    assert calls == [("detection", s, ["a=1", "final_epochs=2"]) for s in (0, 1, 2)]
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [r["win"] for r in results["runs"]] == [True, False, True] and results["wins"] == 2 and results["total"] == 3
    assert results["runs"][1]["delta_points"] == pytest.approx(-2.0) and results["runs"][0]["speedup"] == pytest.approx(1 / 0.6)
    outcomes[1] = _summary(0.30, 0.6)
    assert run_recipe(cfg, tmp_path / "again") == 0
