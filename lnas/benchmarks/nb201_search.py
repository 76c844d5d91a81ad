"""Recipe ``nb201_search``: how good the search's picks are, measured on NAS-Bench-201 with real device latencies.

Ground truth: every cell's CIFAR-10 test accuracy (``nb201_cifar10.csv``) and its latency on each device (a table laid out
as ``nb201_latency.csv``: column ``idx``, then one column of milliseconds per device; ``latency_csv=``). For each device
and each budget (``percentiles`` of that device's latencies over all cells), and each seed, the search runs as the
product does: the strategy of ``conf/search/<strategy>.yaml`` screens ``screen`` cells by their FLOPs and looked-up
latency (the cascade, :mod:`lnas.search.cascade`; ``screen=0``: the strategy proposes the scored cells itself), then
``candidates`` cells, the space's default first, are scored with the default predictor, and the feasible cell with
the best predicted accuracy is picked. Its *regret* is the best test accuracy of any cell within the budget minus the pick's, in
points. Random sampling (``conf/search/random.yaml``) with the same predictor and the same number of scored cells is
the reference every search must beat.

Scores follow the ``nb201_proxies`` protocol (each cell built with its seeded initialisation and scored on its own
augmented batch of real CIFAR-10 images), so that recipe's ``scores.csv`` can be reused (``scores=``); every cell is
scored once per run whatever the device, budget, seed or strategy, and the scores are written to ``scores.csv`` as they
come. The ensemble aggregates its members over each search's own population, as in a search.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lnas.benchmarks.nb201_proxies import (
    CifarSample,
    architecture_batch,
    build_seeded,
    ensemble_of,
    load_scores,
    load_table,
    resolve_device,
    scores_csv,
)
from lnas.io import atomic_write, atomic_write_text, data_dir, nb201_table, read_csv_rows
from lnas.predictors.base import score_proxies
from lnas.predictors.ensemble import ZeroShotEnsemble
from lnas.predictors.flops import Flops
from lnas.search import Candidate, Constraint, Leaderboard, Objective, OptunaSearch
from lnas.search.cascade import Cascade
from lnas.search.loop import SearchLoop
from lnas.search.objectives import MAXIMIZE, MINIMIZE, PARAMS, SCORE, latency_measure
from lnas.spaces.nb201 import NB201Space
from lnas.spaces.parts import PartCosts

CIFAR_INPUT = (3, 32, 32)


class CellScores:
    """Every member's score of each cell, computed once (nb201_proxies protocol) and reused by every search of the run."""

    def __init__(self, ensemble: ZeroShotEnsemble, cfg: DictConfig, cifar: CifarSample, reused: dict[int, dict[str, float]]) -> None:
        self.ensemble, self.cfg, self.cifar = ensemble, cfg, cifar
        self.space, self.device = NB201Space(cell_conv_bias=cfg.cell_conv_bias), resolve_device(cfg.device)
        self.scores = {idx: values for idx, values in reused.items() if all(p.name in values for p in ensemble.proxies)}
        self.computed, self.seconds = 0, 0.0
        self.costs = PartCosts()

    def params_and_flops(self, arch) -> tuple[int, int]:
        """A cell network's params and FLOPs for one CIFAR-10 image, counted from the arch alone."""
        return self.costs(self.space.parts(arch, CIFAR_INPUT))

    def components(self, idx: int, arch: str) -> dict[str, float]:
        if idx not in self.scores:
            started = time.perf_counter()
            model = build_seeded(self.space, arch, self.cfg.seed + idx).to(self.device)
            traced = [p for p in self.ensemble.proxies if not isinstance(p, Flops)]
            self.scores[idx] = score_proxies(traced, model, *architecture_batch(self.cifar, self.cfg, idx, self.device), on_error="nan")
            if len(traced) < len(self.ensemble.proxies):  # FLOPs from the arch (as the cascade's screen counts them), not traced
                self.scores[idx][Flops.name] = float(self.params_and_flops(self.space.decode(arch))[1])
            self.computed += 1
            self.seconds += time.perf_counter() - started
        return self.scores[idx]


def load_latencies(path: Path | None, devices: list[str]) -> dict[str, dict[int, float]]:
    """Device → cell index → ms, from a table with column ``idx`` and one column per device (``<device>_ms`` or ``<device>``)."""
    rows = read_csv_rows(path if path else nb201_table("nb201_latency.csv"))
    columns = [c for c in rows[0] if c != "idx"]
    result = {}
    for device in devices:
        column = next((c for c in (f"{device}_ms", device) if c in columns), None)
        if column is None:
            raise ValueError(f"latency table {path or 'nb201_latency.csv'} has no column for device {device!r}; its devices: {columns}")
        result[device] = {int(r["idx"]): (float(r[column]) if float(r[column]) >= 0 else math.nan) for r in rows}
    return result


def strategy_of(name: str) -> OptunaSearch:
    """A fresh strategy as ``conf/search/<name>.yaml`` configures it."""
    from importlib.resources import files

    path = files("lnas.conf") / "search" / f"{name}.yaml"
    if not path.is_file():
        options = sorted(p.name[:-5] for p in (files("lnas.conf") / "search").iterdir() if p.name.endswith(".yaml"))
        raise ValueError(f"unknown search strategy {name!r}; allowed: {options}")
    return instantiate(OmegaConf.create(path.read_text()).strategy)


def search_once(strategy: str, screen: int, device: str, budget: float, seed: int, cfg: DictConfig, cells: CellScores,
                index_of: dict[str, int], latency: dict[int, float]) -> Candidate:
    """One search as the product runs it: with ``screen`` > 0 the cascade (``screen`` cells screened by their FLOPs and
    looked-up latency, the best ``cfg.candidates`` scored), else the strategy proposes the ``cfg.candidates`` scored cells;
    the best predicted feasible cell is picked."""
    space, measure = cells.space, latency_measure(device)
    objectives = [Objective(SCORE, MAXIMIZE), Objective(measure, MINIMIZE)]
    constraints = [Constraint(measure, budget)]
    board = Leaderboard(objectives, constraints, aggregate=cells.ensemble.aggregate)
    search = strategy_of(strategy)
    search.start(space, objectives, seed)
    search.enqueue(space.default())

    def evaluate(arch, key: str) -> Candidate:
        idx = index_of[key]
        return Candidate(key, measures={measure: latency[idx]}, components=dict(cells.components(idx, key)))

    def screen_evaluate(arch, key: str) -> Candidate:
        params, flops = cells.params_and_flops(arch)
        return Candidate(key, measures={SCORE: float(flops), PARAMS: float(params), measure: latency[index_of[key]]})

    if screen:
        cascade = Cascade(space, search, board)
        cascade.screen(screen, objectives, constraints, screen_evaluate)
        cascade.score_until(cfg.candidates, evaluate)
    else:
        SearchLoop(space, search, board).run_until(cfg.candidates, evaluate, max_attempts=100 * cfg.candidates)
    return board.best()


def write_regret_plot(per_device: dict, path: Path) -> Path:
    """Regret per device and budget: every seed of the default strategy and of random sampling, and their medians."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{device}\n{pct}" for device, budgets in per_device.items() for pct in budgets]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(labels)), 4.0), dpi=120)
    for offset, (strategy, colour) in ((-0.15, ("default", "tab:blue")), (0.15, ("random", "tab:gray"))):
        x = 0
        for budgets in per_device.values():
            for entry in budgets.values():
                regrets = entry["regret"] if strategy == "default" else entry["random_regret"]
                ax.scatter([x + offset] * len(regrets), regrets, c=colour, s=16, alpha=0.7, label=None)
                ax.plot([x + offset - 0.1, x + offset + 0.1], [statistics.median(regrets)] * 2, c=colour, lw=2,
                        label=f"{strategy} (median)" if x == 0 else None)
                x += 1
    ax.axhline(0.5, ls="--", c="tab:red", lw=1, label="target median regret 0.5")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("regret (points of CIFAR-10 test accuracy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    written = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return written


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Search every device × budget × seed with the default strategy and with random sampling; return the regrets."""
    if cfg.candidates < 1 or not cfg.seeds or not cfg.devices or not cfg.percentiles:
        raise ValueError("candidates must be >= 1, and seeds, devices and percentiles non-empty")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    started = time.perf_counter()
    table = load_table()
    accuracy = {row["idx"]: row["cifar10_test_acc"] for row in table}
    index_of = {row["arch"]: row["idx"] for row in table}
    latencies = load_latencies(Path(cfg.latency_csv) if cfg.latency_csv else None, list(cfg.devices))
    ensemble = ensemble_of(cfg.predictor)
    cifar = CifarSample((Path(cfg.data_dir) if cfg.get("data_dir") else data_dir()) / "cifar10" / "cifar10_train_1000.npz")
    cells = CellScores(ensemble, cfg, cifar, load_scores([cfg.scores]) if cfg.scores else {})
    per_device: dict = {}
    default_regrets, random_regrets = [], []
    for device in cfg.devices:
        latency = latencies[device]
        valid = np.array([v for v in latency.values() if math.isfinite(v)])
        per_device[device] = {}
        for pct in cfg.percentiles:
            budget = float(np.percentile(valid, pct))
            best = max(accuracy[i] for i, ms in latency.items() if ms <= budget)
            entry = {"budget_ms": budget, "best_accuracy": best, "picks": [], "regret": [], "random_picks": [], "random_regret": []}
            for seed in cfg.seeds:
                for strategy, screen, prefix in ((cfg.strategy, cfg.screen, ""), ("random", 0, "random_")):
                    pick = search_once(strategy, screen, device, budget, int(seed), cfg, cells, index_of, latency)
                    entry[f"{prefix}picks"].append(pick.arch)
                    entry[f"{prefix}regret"].append(best - accuracy[index_of[pick.arch]])
            entry["median_regret"] = statistics.median(entry["regret"])
            entry["random_median_regret"] = statistics.median(entry["random_regret"])
            default_regrets += entry["regret"]
            random_regrets += entry["random_regret"]
            per_device[device][f"p{pct:g}"] = entry
            print(f"[nb201_search] {device} p{pct:g} budget {budget:.3f} ms: best {best:.2f}; regret {cfg.strategy} "
                  f"{[round(r, 2) for r in entry['regret']]} random {[round(r, 2) for r in entry['random_regret']]} "
                  f"({cells.computed} cells scored, {time.perf_counter() - started:.0f} s)", flush=True)
            atomic_write_text(out_dir / "scores.csv", scores_csv([{"idx": i, "arch": table[i]["arch"], **s} for i, s in sorted(cells.scores.items())],
                                                                [p.name for p in ensemble.proxies]))
    write_regret_plot(per_device, out_dir / "regret.png")
    return {
        "strategy": cfg.strategy, "screen": cfg.screen, "candidates": cfg.candidates, "seeds": list(cfg.seeds), "devices": list(cfg.devices),
        "percentiles": list(cfg.percentiles), "predictor": ensemble.used,
        "median_regret": statistics.median(default_regrets), "random_median_regret": statistics.median(random_regrets),
        "regret_below_random": statistics.median(random_regrets) - statistics.median(default_regrets),
        "per_device": per_device,
        "cells_scored": len(cells.scores), "cells_computed": cells.computed,
        "seconds_per_computed_cell": cells.seconds / cells.computed if cells.computed else math.nan,
        "seconds": time.perf_counter() - started,
    }
