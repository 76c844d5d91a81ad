import json

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from lnas.benchmarks.latency_fidelity import fidelity_metrics
from lnas.reproduce import run_recipe

TINY_SPACE = {"_target_": "lnas.spaces.MBConvSpace", "stem_channels": 8, "kernels": [3, 5], "expands": [2, 4], "out_indices": [0, 1],
              "stages": [{"channels": 16, "stride": 2, "depths": [1, 2]}, {"channels": 24, "stride": 2, "depths": [1, 2]}]}


def test_fidelity_metrics_compare_predictions_with_each_measurement_and_measurements_with_each_other():
    measured = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.8]])  # the last model disagrees by 18% between processes
    exact = fidelity_metrics(measured[0], measured)
    assert exact["within_10pct"] == 7 / 8 and exact["spearman"] == 1.0
    assert exact["repeat_within_10pct"] == 0.75 and exact["repeatability_pct"] == 0.0
    assert exact["fidelity_ok"] == 1.0  # the measurement does not repeat, and the median error (0) is no larger than its disagreement
    repeatable = np.array([[1.0, 2.0, 3.0, 4.0]] * 2)
    off = fidelity_metrics(repeatable[0] * 1.15, repeatable)
    assert off["within_10pct"] == 0.0 and off["median_abs_pct_error"] == pytest.approx(15.0) and off["fidelity_ok"] == 0.0
    noisy = np.array([[1.0, 2.0, 3.0, 4.0], [1.3, 1.6, 3.6, 4.8]])  # disagreements of 26%, 22%, 18%, 18%
    metrics = fidelity_metrics(np.array([1.15, 1.8, 3.3, 4.4]), noisy)
    assert metrics["repeatability_pct"] == pytest.approx(100 * np.median([0.3 / 1.15, 0.4 / 1.8, 0.6 / 3.3, 0.8 / 4.4]))
    assert metrics["repeat_within_10pct"] == 0.0
    assert metrics["median_abs_pct_error"] < metrics["repeatability_pct"] and metrics["fidelity_ok"] == 1.0
    assert fidelity_metrics(np.array([4.0, 3.0, 2.0, 1.0]), noisy)["spearman"] == -1.0


def test_tiny_latency_fidelity_recipe_writes_its_results(tmp_path):
    overrides = ["n=3", "calibration_n=3", "dynamo_samples=0", "input_shape=[3,32,32]", "estimator.warmup=1", "estimator.runs=3",
                 "estimator.repeats=2", "expected.fidelity_ok.min=0", "expected.spearman.min=-1", "expected.export_seconds_per_candidate.max=60"]
    with initialize_config_module("lnas.recipes", version_base="1.3"):
        cfg = compose(config_name="latency_fidelity", overrides=overrides)
    OmegaConf.update(cfg, "space", TINY_SPACE, force_add=True)
    assert run_recipe(cfg, tmp_path) == 0
    record = json.loads((tmp_path / "results.json").read_text())
    results = record["results"]
    assert record["passed"] and len(results["candidates"]) == 3 and results["table_blocks"] >= results["table_blocks_measured"] > 0
    for key in ("within_10pct", "spearman", "median_abs_pct_error", "repeatability_pct", "export_seconds_per_candidate",
                "predict_seconds_per_candidate"):
        assert np.isfinite(results[key]), key
    assert all(len(c["measured_ms"]) == 2 and c["predicted_ms"] > 0 for c in results["candidates"])
    assert 0 < results["lookup_seconds_per_candidate"] < results["predict_seconds_per_candidate"]
