"""Recipe ``cifar10_vs_resnet18``: the product's promise on real data, "as accurate as my model, N times faster".

Runs the main job (``python -m lnas.train``, in a child process, as a user would) with ``+experiment=classification
data=cifar10 space=<space> baseline=<baseline> hardware.target_speedup=<target_speedup> inherit=false``: the budget is the baseline's
ONNX Runtime latency on this CPU (1 thread) divided by the speed-up, both networks are trained from scratch with the
same final recipe and tested on the CIFAR-10 test set, and both are measured interleaved in one session at the end.
``results.json`` takes the pick's and the baseline's top-1, latency, params and FLOPs from the run's ``summary.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig


def train_overrides(cfg: DictConfig, run_dir: Path) -> list[str]:
    """The main job's overrides for this recipe (the recipe's ``train`` list last, so it can change any of them)."""
    return ["+experiment=classification", "data=cifar10", f"space={cfg.space}", f"baseline={cfg.baseline}",
            f"hardware.target_speedup={cfg.target_speedup}",
            "inherit=false", "train_baseline=true", f"warmup_epochs={cfg.warmup_epochs}", f"final_epochs={cfg.final_epochs}",
            f"seed={cfg.seed}", "++trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", *map(str, cfg.train)]


def contender(entry: dict, device: str) -> dict:
    """One model's row of ``results.json``: top-1 in percent, latency on ``device``, params, FLOPs."""
    return {"name": entry["name"], "arch": entry["arch"], "top1": 100.0 * entry["metrics"]["top1"],
            "latency_ms": entry["latency_ms"][device], "latency_spread_ms": entry["latency_spread_ms"][device],
            "params": entry["params"], "flops": entry["flops"]}


def run(cfg: DictConfig, out_dir: Path) -> dict:
    run_dir = out_dir / "run"
    command = [sys.executable, "-m", "lnas.train", *train_overrides(cfg, run_dir)]
    print("running:", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    summary = json.loads((run_dir / "summary.json").read_text())
    device = summary["devices"][0]
    pick, baseline = contender(summary["pick"], device), contender(summary["baseline"], device)
    return {"device": device, "pick": pick, "baseline": baseline,
            "speedup": baseline["latency_ms"] / pick["latency_ms"], "top1_delta": pick["top1"] - baseline["top1"],
            "budget_ms": summary["budgets_ms"][device], "candidates_scored": summary["candidates_scored"],
            "seconds": seconds, "run_dir": str(run_dir)}
