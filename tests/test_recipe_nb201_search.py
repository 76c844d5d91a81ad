"""Recipe ``nb201_search`` on a small grid: the picks meet their budgets, the regret is computed against the best cell
within the budget from the shipped tables, every cell is scored once per run, and a second run reuses the scores.

The images are generated (the shared CIFAR-10 sample is not shipped), so the regrets say nothing about the predictor
here; the full run's expected values are checked on the config."""

import csv
import json
import math

import pytest
from hydra import compose, initialize_config_module

from lnas.benchmarks.nb201_proxies import ensemble_of, load_table
from lnas.benchmarks.nb201_search import load_latencies
from lnas.predictors.registry import load_proxy
from lnas.reproduce import run_recipe


def compose_recipe(*overrides: str):
    with initialize_config_module("lnas.recipes", version_base="1.3"):
        return compose(config_name="nb201_search", overrides=list(overrides))


def test_the_full_run_expects_a_median_regret_of_at_most_half_a_point_below_random():
    cfg = compose_recipe()
    assert cfg.expected.median_regret.max == 0.5 and cfg.expected.regret_below_random.min > 0
    assert cfg.candidates == 200 and len(cfg.seeds) >= 3 and len(cfg.devices) >= 3 and list(cfg.percentiles) == [25, 50]


def test_a_small_grid_picks_within_budget_scores_each_cell_once_and_reuses_scores(tmp_path, capsys, generated_data_dir):
    small = ("screen=20", "candidates=5", "seeds=[0]", "devices=[edgegpu,fpga]", "percentiles=[90]", "batch_size=16",
             "device=cpu", f"data_dir={generated_data_dir}")
    cfg = compose_recipe(*small)
    cfg.expected = {"median_regret": {"min": 0.0, "source": "regret is never negative"}}
    assert run_recipe(cfg, tmp_path / "first") == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("| median_regret |")
    results = json.loads((tmp_path / "first" / "results.json").read_text())["results"]

    accuracy = {row["idx"]: row["cifar10_test_acc"] for row in load_table()}
    index_of = {row["arch"]: row["idx"] for row in load_table()}
    latencies = load_latencies(None, ["edgegpu", "fpga"])
    for device in ("edgegpu", "fpga"):
        entry = results["per_device"][device]["p90"]
        budget = entry["budget_ms"]
        assert entry["best_accuracy"] == max(accuracy[i] for i, ms in latencies[device].items() if ms <= budget)
        for prefix in ("", "random_"):
            assert len(entry[f"{prefix}picks"]) == 1
            for arch, regret in zip(entry[f"{prefix}picks"], entry[f"{prefix}regret"], strict=True):
                assert latencies[device][index_of[arch]] <= budget
                assert regret == pytest.approx(entry["best_accuracy"] - accuracy[index_of[arch]]) and regret >= 0
    # 2 devices x 2 strategies x 5 scored cells, each scored once however often the searches meet it
    assert results["cells_computed"] == results["cells_scored"] <= 20
    with open(tmp_path / "first" / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == results["cells_scored"] and list(rows[0])[2:] == load_proxy("ensemble").used
    assert (tmp_path / "first" / "regret.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = compose_recipe(*small, f"scores={tmp_path / 'first' / 'scores.csv'}")
    again.expected = {}
    assert run_recipe(again, tmp_path / "again") == 0
    rerun = json.loads((tmp_path / "again" / "results.json").read_text())["results"]
    assert rerun["cells_computed"] == 0 and rerun["per_device"] == results["per_device"]


def test_a_latency_table_without_the_device_names_its_columns(tmp_path):
    table = tmp_path / "latency.csv"
    table.write_text("idx,phone_ms,watch\n0,1.5,2.0\n1,3.0,-1\n")
    loaded = load_latencies(table, ["phone", "watch"])
    assert loaded["phone"] == {0: 1.5, 1: 3.0} and loaded["watch"][0] == 2.0 and math.isnan(loaded["watch"][1])
    with pytest.raises(ValueError, match=r"no column for device 'tv'.*\['phone_ms', 'watch'\]"):
        load_latencies(table, ["tv"])


def test_the_predictor_is_an_ensemble_config_or_a_list_of_proxy_names():
    configured = ensemble_of("ensemble")
    assert configured.used == load_proxy("ensemble").used and configured.used[0] == "flops"
    listed = ensemble_of(["flops", "trainability", "progressivity"])
    assert listed.used == ["flops", "trainability", "progressivity"] and listed.aggregation == configured.aggregation
    with pytest.raises(ValueError, match=r"predictor 'synflow' is not an ensemble.*list of proxy names"):
        ensemble_of("synflow")
