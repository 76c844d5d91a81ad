"""Recipe ``search_scale``: the search cascade at scale on the default detection space, and DDP scoring against one process.

1. *Throughput*: the default detection job (``python -m lnas.train +experiment=detection``, in a child process, as a
   user runs it) with its defaults; its ``summary.json`` gives how many candidates each stage of the cascade handled
   (calibrate, screen, score, measure, fine-tune), each stage's wall time per candidate, and the whole run's wall time.
2. *DDP*: the same search twice more, once in one process and once under ``trainer=ddp_cpu`` (2 gloo processes), with
   what would make two runs differ for reasons other than the sharding taken out: no finalists and no fine-tune (both
   measure on the device, and measurements are noisy), the latency the raw look-up-table sum (no end-to-end calibration
   measurements; the table on disk is shared, so every part has one value), and an absolute budget. Both leaderboards
   (the scored candidates, each one's stage, ensemble member scores and latency, :func:`same_leaderboard`) and
   both picks are compared; the speed-up is the score stage's candidates per second of the two runs.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from omegaconf import DictConfig


def run_job(overrides: list[str], run_dir: Path, env: dict[str, str]) -> tuple[dict, float]:
    """One main job (detection) in a child process; its ``summary.json`` and wall time (s)."""
    command = [sys.executable, "-m", "lnas.train", "+experiment=detection", "++trainer.enable_progress_bar=false",
               f"hydra.run.dir={run_dir}", *overrides]
    print("running:", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    return json.loads((run_dir / "summary.json").read_text()), time.perf_counter() - started


def scored_rows(run_dir: Path) -> list[dict]:
    """The leaderboard's candidates the full predictor scored, in leaderboard order: arch, stage and every measure."""
    with (run_dir / "leaderboard.csv").open() as handle:
        return [row for row in csv.DictReader(handle) if row["stage"] != "screen" and row["reference"] != "True"]


def same_leaderboard(first: list[dict], second: list[dict], rel: float) -> bool:
    """The same candidates, each in the same stage, each ensemble member's score and each latency within ``rel`` of each
    other. (Neither the aggregated score nor the leaderboard order, which follows it: one process uses both cores'
    threads, each of two processes one, so float sums differ in their last digits, and a rank aggregate turns that into
    swaps between near-ties.)"""
    def close(a: str, b: str) -> bool:
        x, y = float(a), float(b)
        return x == y or abs(x - y) <= rel * max(abs(x), abs(y))

    columns = [c for c in first[0] if c.startswith(("proxy.", "latency_ms."))] if first else []
    by_arch = {row["arch"]: row for row in second}
    return len(first) == len(second) == len(by_arch) and all(
        row["arch"] in by_arch and row["stage"] == by_arch[row["arch"]]["stage"] and all(close(row[c], by_arch[row["arch"]][c]) for c in columns)
        for row in first)


def score_rate(summary: dict) -> float:
    """Candidates per second of the full predictor's stage."""
    stage = summary["search_stages"]["score"]
    return stage["candidates"] / stage["seconds"]


def pick(run_dir: Path) -> str:
    record = yaml.safe_load((run_dir / "picks.yaml").read_text())
    return record["devices"][record["trained"]]["arch"]


def run(cfg: DictConfig, out_dir: Path) -> dict:
    env = {**os.environ, "LNAS_CACHE_DIR": str(Path(cfg.cache_dir or out_dir / "cache").resolve())}
    started = time.perf_counter()
    summary, seconds = run_job([*map(str, cfg.train)], out_dir / "default", env)
    stages = summary["search_stages"]
    results = {
        "screened": stages.get("screen", {}).get("candidates", 0), "scored": stages.get("score", {}).get("candidates", 0),
        "measured": stages.get("measure", {}).get("candidates", 0), "seconds": seconds,
        "per_stage_ms": {name: stage["ms_per_candidate"] for name, stage in stages.items()},
        "per_stage_seconds": {name: stage["seconds"] for name, stage in stages.items()},
        "pick": summary["pick"]["arch"], "budget_ms": summary["budgets_ms"][summary["devices"][0]],
    }
    print(f"default run: screened {results['screened']}, scored {results['scored']}, measured {results['measured']} in {seconds:.0f} s; "
          f"ms per candidate: {results['per_stage_ms']}", flush=True)
    search_only = [*map(str, cfg.ddp_search), "hardware.target_speedup=null",
                   f"hardware.devices.cpu.target_latency_ms={results['budget_ms']}"]
    one, _ = run_job(search_only, out_dir / "one_process", env)
    two, _ = run_job([*search_only, "trainer=ddp_cpu", "trainer.devices=2"], out_dir / "two_processes", env)
    rows_one, rows_two = scored_rows(out_dir / "one_process"), scored_rows(out_dir / "two_processes")
    results |= {
        "ddp_same_pick": pick(out_dir / "one_process") == pick(out_dir / "two_processes"),
        "ddp_same_leaderboard": same_leaderboard(rows_one, rows_two, cfg.score_rel_tolerance),
        "ddp_candidates_per_second": {"one_process": score_rate(one), "two_processes": score_rate(two)},
        "ddp_speedup": score_rate(two) / score_rate(one),
        "ddp_picks": {"one_process": pick(out_dir / "one_process"), "two_processes": pick(out_dir / "two_processes")},
        "recipe_seconds": time.perf_counter() - started,
    }
    print(f"DDP: same pick {results['ddp_same_pick']}, same leaderboard {results['ddp_same_leaderboard']}; scoring "
          f"{score_rate(one):.3f} candidates/s in 1 process, {score_rate(two):.3f} in 2 ({results['ddp_speedup']:.2f}x)", flush=True)
    return results
