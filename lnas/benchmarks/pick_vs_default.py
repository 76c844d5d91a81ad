"""Recipe ``pick_vs_default``: does searching beat not searching? The default search of each task, several seeds.

Each run is the main job (``python -m lnas.train +experiment=<task> seed=<seed>``, in a child process, as a user would)
with its defaults: the search picks within the budget the space default sets (its latency / ``target_speedup``), and
the pick and the space default are trained with the same final recipe, tested, and measured side by side. A run is a
*win* for the search when the pick is at least as accurate at no more latency (within the two measurements' spread),
or at least ``min_speedup`` times faster and at most ``max_drop_points`` less accurate.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from lnas.report import metric_delta_points, speedup


@dataclass(frozen=True)
class WinRule:
    """When a pick beats the default (see the module docstring)."""

    min_speedup: float = 1.5
    max_drop_points: float = 0.5

    def wins(self, delta_points: float, ratio: float, pick_ms: float, default_ms: float, spread_ms: float) -> bool:
        """``delta_points``: the pick's metric minus the default's, in points; ``ratio``: the default's latency over the pick's;
        ``spread_ms``: the larger measurement spread of the two latencies."""
        as_good_no_slower = delta_points >= 0.0 and pick_ms <= default_ms + spread_ms
        faster_nearly_as_good = ratio >= self.min_speedup and delta_points >= -self.max_drop_points
        return as_good_no_slower or faster_nearly_as_good


def run_one(task: str, seed: int, overrides: list[str], run_dir: Path) -> dict:
    """One main job; its ``summary.json``."""
    command = [sys.executable, "-m", "lnas.train", f"+experiment={task}", f"seed={seed}", "++trainer.enable_progress_bar=false",
               f"hydra.run.dir={run_dir}", *overrides]
    print("running:", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return json.loads((run_dir / "summary.json").read_text())


def compare(summary: dict, rule: WinRule) -> dict:
    """The pick and the default of one run, side by side, and whether the pick wins."""
    device = summary["devices"][0]
    entry = {role: {"arch": summary[role]["arch"], "metric": summary[role]["metrics"][summary["metric"]],
                    "latency_ms": summary[role]["latency_ms"][device], "latency_spread_ms": summary[role]["latency_spread_ms"][device]}
             for role in ("pick", "baseline")}
    delta, ratio = metric_delta_points(summary), speedup(summary)
    spread = max(entry["pick"]["latency_spread_ms"], entry["baseline"]["latency_spread_ms"])
    return {"metric_name": summary["metric"], "pick": entry["pick"], "default": entry["baseline"], "delta_points": delta,
            "speedup": ratio, "win": rule.wins(delta, ratio, entry["pick"]["latency_ms"], entry["baseline"]["latency_ms"], spread),
            "budget_ms": summary["budgets_ms"][device]}


def run(cfg: DictConfig, out_dir: Path) -> dict:
    rule = WinRule(cfg.min_speedup, cfg.max_drop_points)
    runs, start = [], time.perf_counter()
    for task in cfg.tasks:
        task_overrides = cfg.task_overrides.get(task, [])
        for seed in cfg.seeds:
            run_dir = out_dir / f"{task}_seed{seed}"
            began = time.perf_counter()
            summary = run_one(task, seed, [*map(str, task_overrides), *map(str, cfg.train)], run_dir)
            result = {"task": task, "seed": seed, **compare(summary, rule), "seconds": time.perf_counter() - began, "run_dir": str(run_dir)}
            print(f"{task} seed {seed}: pick {result['pick']['metric']:.4f} @ {result['pick']['latency_ms']:.3f} ms, default "
                  f"{result['default']['metric']:.4f} @ {result['default']['latency_ms']:.3f} ms, {result['speedup']:.2f}x, "
                  f"{result['delta_points']:+.2f} pt: {'win' if result['win'] else 'loss'}", flush=True)
            runs.append(result)
    wins = sum(r["win"] for r in runs)
    return {"runs": runs, "wins": wins, "total": len(runs), "win_rate": wins / len(runs), "seconds": time.perf_counter() - start}
