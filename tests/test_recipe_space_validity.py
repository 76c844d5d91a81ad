"""Recipe ``space_validity``: the summary's statistics, the architecture sample, and one tiny end-to-end run."""

import json
import math

import pytest
from conftest import QUICK_LATENCY
from hydra import compose, initialize_config_module

from lnas.benchmarks.space_validity import spread_over_costs, summarise
from lnas.reproduce import run_recipe
from lnas.spaces import MBConvSpace
from lnas.tasks import ClassificationTask, SupernetModule


def _row(arch: str, metric: list[float], scratch: float, ms: float, synflow: float, finetune: float, default: bool = False) -> dict:
    return {"arch": arch, "default": default, "params": ms * 10, "flops": -ms, "proxies": {"synflow": synflow, "snip": math.nan},
            "ensemble": synflow, "one_shot": scratch, "finetune_loss": finetune, "latency_ms": ms, "latency_spread_ms": 0.01,
            "inherit": metric, "scratch": scratch}


def test_summary_orients_each_predictor_and_reports_spread_inheritance_and_the_best_faster_arch():
    rows = [_row("a", [0.10, 0.12], 0.05, 1.0, synflow=1.0, finetune=3.0),
            _row("b", [0.20], 0.18, 2.0, synflow=2.0, finetune=2.0),
            _row("c", [0.30, 0.34, 0.32], 0.31, 4.0, synflow=3.0, finetune=1.0, default=True),
            _row("d", [0.25], 0.30, 5.0, synflow=4.0, finetune=1.5)]
    result = summarise("detection", "map", True, ["synflow"], rows, seconds=1.0)
    tau = result["kendall_inherit"]
    # synflow agrees with the metric on 5 of 6 pairs; the fine-tune loss is lower-is-better and agrees on all 6
    assert tau["proxy.synflow"] == pytest.approx(4 / 6) and tau["finetune_loss"] == pytest.approx(1.0)
    assert tau["params"] == pytest.approx(4 / 6) and tau["flops"] == pytest.approx(-4 / 6)
    assert math.isnan(tau["proxy.snip"])  # a proxy that failed everywhere has no correlation, not a made-up one
    assert result["kendall_scratch"]["one_shot"] == pytest.approx(1.0)
    assert result["seed_std_points_median"] == pytest.approx((2 ** 0.5 + 2.0) / 2)  # sample std of a (1.41 pt) and c (2 pt)
    assert result["seed_std_points_max"] == pytest.approx(2.0)
    assert result["default_rank"] == 1
    assert result["best_1p5x_faster"]["arch"] == "b" and result["best_1p5x_faster"]["delta_points_vs_default"] == pytest.approx(-12.0)
    assert result["inherit_minus_scratch_points_median"] == pytest.approx(1.5)  # median of +6, +2, +1, -5 points


def test_the_sample_spreads_over_costs_and_always_holds_the_default():
    space = MBConvSpace(stages=[{"channels": c, "stride": 2, "depths": [1, 2]} for c in (8, 16, 24, 32)], stem_channels=8,
                        widths=[0.5, 1.0], resolutions=[32, 48])
    supernet = SupernetModule(space, ClassificationTask(3, head_width=16))
    archs = spread_over_costs(space, supernet, (3, 48, 48), n=5, pool=40, seed=0)
    flops = [supernet.arch_costs(arch, (3, 48, 48))[1] for arch in archs]
    keys = [space.encode(arch) for arch in archs]
    assert len(set(keys)) == 5 and space.encode(space.default()) in keys and flops == sorted(flops)
    assert flops[0] < flops[-1]
    with pytest.raises(ValueError, match="n >= 3"):
        spread_over_costs(space, supernet, (3, 48, 48), n=2, pool=40, seed=0)


def test_a_tiny_run_trains_every_arch_and_writes_the_tau_of_every_predictor(tmp_path):
    overrides = ["+debug=fast", "data.image_size=32", "data.num_train=16", *QUICK_LATENCY]
    with initialize_config_module("lnas.recipes", version_base="1.3"):
        cfg = compose(config_name="space_validity", overrides=[
            "tasks=[detection]", f"task_overrides.detection={json.dumps(overrides)}", "n=3", "pool=3", "epochs=1",
            "seeds=[0,1]", "seeded=1", "recalibration_batches=1", "proxies=[synflow,naswot]"])
    cfg.expected = {"tasks.detection.architectures": {"value": 3, "tolerance": 0, "source": "n=3"}}
    assert run_recipe(cfg, tmp_path) == 0
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    result = results["tasks"]["detection"]
    assert results["over_tasks"]["default_rank_max"] == result["default_rank"]  # one task: its own values are the worst
    assert result["architectures"] == len(result["rows"]) == 3
    assert set(result["kendall_inherit"]) == {"proxy.synflow", "proxy.naswot", "ensemble", "params", "flops", "one_shot", "finetune_loss"}
    default = [row for row in result["rows"] if row["default"]]
    assert len(default) == 1 and len(default[0]["inherit"]) == 2  # the default always gets every seed
    assert all(row["latency_ms"] > 0 and 0 <= row["scratch"] <= 1 and 0 <= row["one_shot"] <= 1 for row in result["rows"])
