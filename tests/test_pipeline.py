"""End-to-end runs of ``lnas.train`` on the embedded data, shrunk by ``+debug=fast``."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import QUICK_LATENCY
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from lnas.hardware import Nb201LatencyTable, check_onnx_matches
from lnas.report import headline
from lnas.search import NoFeasibleCandidateError
from lnas.spaces.nb201 import NB201Space
from lnas.tasks import SupernetModule
from lnas.train import train

RESULT_FILES = ("arch.yaml", "leaderboard.csv", "model.onnx", "baseline.onnx", "report.md")


def _run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "lnas.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    """One fast end-to-end run through the command line, from a directory outside the checkout, shared by the tests
    that inspect its outputs: its config, run folder, summary and the finished process."""
    from hydra import compose, initialize_config_module

    work = tmp_path_factory.mktemp("elsewhere")
    out = work / "cli"
    args = ["+experiment=detection", "+debug=fast", *QUICK_LATENCY]
    result = _run_cli([*args, f"hydra.run.dir={out}"], cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    with initialize_config_module("lnas.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*args, f"output_dir={out}"])
    return cfg, out, json.loads((out / "summary.json").read_text()), result


def test_fast_run_writes_all_result_files(fast_run):
    cfg, out, summary, _ = fast_run
    for name in RESULT_FILES + ("pareto.png", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert len(rows) == cfg.search.num_candidates == summary["candidates_scored"]
    assert {"arch", "score", "latency_ms.cpu", "feasible", "reason", "pareto", "stage"} <= set(rows[0])
    assert all(float(r["latency_ms.cpu"]) > 0 for r in rows)
    chosen = yaml.safe_load((out / "arch.yaml").read_text())
    assert chosen["arch"] == rows[0]["arch"] == summary["pick"]["arch"]
    report = (out / "report.md").read_text()
    assert {"proxy.trainability", "proxy.progressivity", "proxy.flops"} <= set(rows[0])  # the default ensemble keeps each member's score
    assert report.startswith(f"# {headline(summary)}\n") and " than space default r" in report.splitlines()[0]
    stages = summary["search_stages"]
    assert stages["score"]["candidates"] == cfg.search.num_candidates and stages["score"]["seconds"] > 0
    assert stages["measure"]["candidates"] >= 1 and f", score {cfg.search.num_candidates} in " in report
    assert stages["calibrate"]["candidates"] == cfg.hardware.devices.cpu.estimator.calibration_size  # the table, before the search
    for text in (chosen["arch"], "test map", "candidates scored: 6", "latency", "ensemble (flops, trainability, progressivity", "same final recipe"):
        assert text in report
    assert summary["pick"]["trained"] and summary["baseline"]["trained"]
    for role in ("pick", "baseline"):
        assert 0.0 <= summary[role]["metrics"]["map"] <= 1.0 and summary[role]["latency_ms"]["cpu"] > 0
    assert summary["search_picks"]["cpu"]["arch"] == summary["pick"]["arch"]
    assert summary["budgets_ms"] == {"cpu": None} and "latency budget: none" in report  # +debug=fast sets no budget
    assert summary["baseline"]["arch"] in {r["arch"] for r in rows}  # the default arch is always a scored candidate


def test_exported_onnx_matches_the_trained_pytorch_model(fast_run):
    cfg, out, summary, _ = fast_run
    space, task = instantiate(cfg.space), instantiate(cfg.task)(num_classes=3)
    model = SupernetModule(space, task).candidate(space.decode(summary["pick"]["arch"]), inherit=False)
    model.load_state_dict(torch.load(out / "final" / "result.pt", weights_only=False)["model"])  # the trained weights of the phase
    assert check_onnx_matches(model, out / "model.onnx", torch.rand(3, 3, 64, 64)) < 1e-3
    baseline = SupernetModule(space, task).candidate(space.default(), inherit=False)
    baseline.load_state_dict(torch.load(out / "baseline" / "result.pt", weights_only=False)["model"])
    assert check_onnx_matches(baseline, out / "baseline.onnx", torch.rand(2, 3, 64, 64)) < 1e-3
    assert summary["onnx_max_abs_diff"] < 1e-3


def test_rerun_final_phase_from_arch_yaml(fast_detection, tmp_path, fast_run):
    _, out, summary, _ = fast_run
    cfg = fast_detection(f"arch={out / 'arch.yaml'}", f"output_dir={tmp_path / 'rerun'}", "train_baseline=false")
    rerun = train(cfg)
    assert rerun["pick"]["arch"] == summary["pick"]["arch"] and rerun["candidates_scored"] == 0 and not rerun["inherit"]
    assert (tmp_path / "rerun" / "model.onnx").exists() and not (tmp_path / "rerun" / "baseline").exists()
    assert not rerun["baseline"]["trained"] and "map" not in rerun["baseline"]["metrics"]
    report = (tmp_path / "rerun" / "report.md").read_text()
    assert "was not trained" in report and "baseline not measured" in report.splitlines()[0]


def test_unreachable_latency_target_fails_with_the_lowest_latency_and_no_results(fast_detection, tmp_path):
    cfg = fast_detection("hardware.target_speedup=null", "hardware.devices.cpu.target_latency_ms=0.0001", *QUICK_LATENCY)
    with pytest.raises(NoFeasibleCandidateError, match=r"lowest latency_ms.cpu seen was \d+\.\d+") as error:
        train(cfg)
    assert "target_latency_ms" in str(error.value)
    for name in ("arch.yaml", "model.onnx", "report.md"):
        assert not (tmp_path / name).exists()
    rows = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))  # complete, for diagnosis
    assert rows and all(r["feasible"] == "False" and "> 0.0001" in r["reason"] for r in rows)


def test_empty_dataset_is_rejected_before_anything_is_written(fast_detection, tmp_path):
    with pytest.raises(InstantiationException, match=r"num_train must be >= 1"):
        train(fast_detection("data.num_train=0"))
    assert not any(tmp_path.iterdir())


def test_cli_runs_from_any_directory_and_prints_the_headline(fast_run):
    _, out, summary, result = fast_run
    assert all((out / name).exists() for name in RESULT_FILES)
    assert f"{headline(summary)}; report: {out / 'report.md'}" in result.stdout


def test_cli_bad_input_exits_non_zero_with_the_allowed_values(fast_detection, tmp_path):
    result = _run_cli(["+experiment=detection", "+debug=fast", "search=no_such_search", f"hydra.run.dir={tmp_path / 'x'}"], cwd=tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "no_such_search" in output and "evolution" in output and "random" in output
    with pytest.raises(InstantiationException, match="multiple of 32"):  # the entry point turns this into exit status 1
        train(fast_detection("data.image_size=50", f"output_dir={tmp_path / 'y'}"))
    assert not (tmp_path / "y" / "arch.yaml").exists()


def test_a_budget_relative_to_the_baseline_shapes_the_pick_end_to_end(compose_cfg, tmp_path):
    """NAS-Bench-201 cells with their published edge-GPU latencies: deterministic, so the budget's effect is exact."""
    cfg = compose_cfg("+experiment=classification", "+debug=fast", "space=nb201", "hardware=nb201", "hardware.target_speedup=1.5",
                      "data.image_size=32", "search.num_candidates=8", "train_baseline=false", f"output_dir={tmp_path}")
    summary = train(cfg)
    default = NB201Space().encode(NB201Space().default())
    baseline_ms = Nb201LatencyTable("edgegpu").latency_ms(default)
    assert summary["baseline"]["arch"] == default and summary["baseline"]["latency_ms"]["edgegpu"] == baseline_ms
    assert summary["budgets_ms"]["edgegpu"] == pytest.approx(baseline_ms / 1.5)
    rows = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    for row in rows:
        assert (row["feasible"] == "True") == (float(row["latency_ms.edgegpu"]) <= baseline_ms / 1.5)
    assert summary["pick"]["latency_ms"]["edgegpu"] <= baseline_ms / 1.5 and summary["pick"]["arch"] in {r["arch"] for r in rows}
    report = (tmp_path / "report.md").read_text()
    assert report.splitlines()[0].startswith(f"# {baseline_ms / summary['pick']['latency_ms']['edgegpu']:.1f}x faster")
    assert "the baseline's latency / 1.5 on each device" in report and "(the baseline's" in report


def test_the_main_entry_runs_under_two_process_ddp_with_one_switch(tmp_path):
    """``trainer=ddp_cpu``: rank 0 searches and broadcasts the pick, both ranks train and test it, rank 0 alone writes the
    files and prints the headline, and every rank exits 0."""
    out = tmp_path / "ddp"
    result = _run_cli(["+experiment=classification", "+debug=fast", "trainer=ddp_cpu", *QUICK_LATENCY, f"hydra.run.dir={out}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert all((out / name).exists() for name in RESULT_FILES)
    assert result.stdout.count("; report: ") == 1 and f"{headline(summary)}; report: {out / 'report.md'}" in result.stdout
    assert "sync_dist" not in result.stderr  # epoch-level metrics are reduced across ranks
    assert summary["pick"]["trained"] and summary["baseline"]["trained"]
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert summary["pick"]["arch"] == rows[0]["arch"] and len(rows) == summary["candidates_scored"] > 0
