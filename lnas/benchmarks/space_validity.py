"""Recipe ``space_validity``: do the search's predictors rank this space's architectures the way training does?

For each task, the main job's configuration (``+experiment=<task>``) is composed and its supernet warmed up as the
search would warm it. ``n`` architectures of the space are taken spread over the cost range (a pool of random
architectures sorted by FLOPs, taken at evenly spaced positions) plus the space default. Each one gets every
predictor the search could use:

- every training-free proxy (``proxies``) on a freshly initialised network, as the search scores candidates, and
  the default ensemble's rank aggregate over the ``n`` (:class:`~lnas.predictors.ZeroShotEnsemble`);
- params and FLOPs;
- *one-shot accuracy*: the validation metric of the subnet with the warmed-up supernet's weights, BatchNorm statistics
  recalibrated on training batches (Once-for-All, Cai et al., ICLR 2020, §3.3; SPOS, Guo et al., ECCV 2020);
- *fine-tune loss*: the search's fine-tune stage (:meth:`~lnas.tasks.SupernetModule.finetune_loss`);

its latency is measured side by side (the experiment's hardware), and it is trained with the final recipe from the
supernet's weights (``inherit``: what the pipeline does; ``seeds`` for ``seeded`` of them, one seed for the others)
and once from scratch. The results give Kendall's tau-b between each predictor and the trained test metric, the
seed-to-seed spread of that metric, and the effect of inheriting the supernet's weights.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from lnas.benchmarks.correlation import rank_correlations
from lnas.callbacks.zero_shot_search import supervision
from lnas.io import atomic_write_text
from lnas.predictors import ZeroShotEnsemble
from lnas.predictors.registry import load_proxy
from lnas.spaces.arch import Arch
from lnas.spaces.base import SearchSpace
from lnas.spaces.recalibrate import recalibrate_batchnorm
from lnas.tasks import FinalModule, SupernetModule
from lnas.train import make_trainer, train_and_test

ONE_SHOT, FINETUNE, ENSEMBLE = "one_shot", "finetune_loss", "ensemble"


def compose_experiment(task: str, overrides: Sequence[str]) -> DictConfig:
    """The main job's configuration for ``+experiment=<task>`` with ``overrides`` (as ``python -m lnas.train`` composes it).

    The recipe runner is a Hydra app itself; its global config search path is released first (the recipe's config is
    already composed and the run folder already made), so the main job's configs can be composed in the same process."""
    GlobalHydra.instance().clear()
    with initialize_config_module("lnas.conf", version_base="1.3"):
        return compose(config_name="train", overrides=[f"+experiment={task}", *overrides])


def spread_over_costs(space: SearchSpace, supernet: SupernetModule, input_shape: tuple[int, int, int], n: int, pool: int,
                      seed: int) -> list[Arch]:
    """The space default and ``n - 1`` distinct random architectures at evenly spaced positions of a ``pool`` sorted by
    FLOPs (so the sample covers the cost range, not only its crowded middle); cheapest first."""
    if n < 3 or pool < n:
        raise ValueError(f"space_validity needs n >= 3 architectures and pool >= n; got n={n}, pool={pool}")
    generator = torch.Generator().manual_seed(seed)
    default_key = space.encode(space.default())
    drawn: dict[str, Arch] = {}
    for _ in range(pool * 20):
        if len(drawn) == pool:
            break
        arch = space.sample(generator)
        drawn.setdefault(space.encode(arch), arch)
    drawn.pop(default_key, None)
    ordered = sorted(drawn.values(), key=lambda arch: supernet.arch_costs(arch, input_shape)[1])
    if len(ordered) < n - 1:
        raise ValueError(f"the space has only {len(ordered) + 1} distinct architectures; space_validity needs n={n}")
    positions = [round(i * (len(ordered) - 1) / (n - 2)) for i in range(n - 1)]
    chosen = [ordered[p] for p in positions] + [space.default()]
    return sorted(chosen, key=lambda arch: supernet.arch_costs(arch, input_shape)[1])


def one_shot_metric(cfg: DictConfig, out: Path, supernet: SupernetModule, arch: Arch, datamodule, batches: int) -> float:
    """The primary validation metric of ``arch`` with the supernet's weights, BatchNorm recalibrated on ``batches``
    training batches."""
    model = supernet.candidate(arch, inherit=True)
    images = [batch[0] for _, batch in zip(range(batches), datamodule.train_dataloader(), strict=False)]
    recalibrate_batchnorm(model, images)
    module = FinalModule(model, supernet.task)
    results = make_trainer(cfg, out, "one_shot", 0, []).validate(module, datamodule=datamodule, verbose=False)[0]
    return float(results[f"val/{supernet.task.primary_metric}"])


def train_metric(cfg: DictConfig, out: Path, phase: str, supernet: SupernetModule, arch: Arch, datamodule, inherit: bool, seed: int) -> float:
    """The primary test metric of ``arch`` after the final recipe, from the supernet's weights or from scratch."""
    L.seed_everything(seed, workers=True)
    model = supernet.candidate(arch, inherit=inherit, seed=seed)
    return train_and_test(cfg, out, phase, model, supernet.task, datamodule)[supernet.task.primary_metric]


def kendall(values: Sequence[float], truth: Sequence[float], higher_is_better: bool) -> float:
    """Kendall's tau-b of a predictor against the trained metric (NaN predictor values left out; NaN when fewer than two remain)."""
    if sum(not math.isnan(value) for value in values) < 2:
        return math.nan
    return rank_correlations(values, truth, higher_is_better, omit_nan=True)[1]


def measure_task(name: str, overrides: Sequence[str], cfg: DictConfig, out: Path) -> dict:
    """Every architecture of one task: predictors, latency, trained metrics (see the module docstring)."""
    began = time.perf_counter()
    run = compose_experiment(name, [*overrides, f"seed={cfg.seed}", f"final_epochs={cfg.epochs}", f"output_dir={out}",
                                    "hardware.target_speedup=null", "++trainer.enable_progress_bar=false"])
    L.seed_everything(run.seed, workers=True)
    datamodule = instantiate(run.data)
    task = instantiate(run.task)(num_classes=datamodule.num_classes)
    space: SearchSpace = instantiate(run.space)
    hardware = instantiate(run.hardware)
    ensemble: ZeroShotEnsemble = instantiate(run.predictor)
    proxies = ZeroShotEnsemble(list(cfg.proxies))
    supernet = SupernetModule(space, task, instantiate(run.optimizer), seed=run.seed)
    make_trainer(run, out, "warmup", run.warmup_epochs, []).fit(supernet, datamodule=datamodule)
    input_shape = tuple(datamodule.input_shape)
    archs = spread_over_costs(space, supernet, input_shape, cfg.n, cfg.pool, cfg.seed)
    keys = [space.encode(arch) for arch in archs]
    default_key = space.encode(space.default())
    print(f"[{name}] {len(archs)} architectures after {run.warmup_epochs} warmup epochs", flush=True)

    batch = next(iter(datamodule.train_dataloader()))
    rows: list[dict] = []
    for arch, key in zip(archs, keys, strict=True):
        model = supernet.candidate(arch, inherit=False, seed=cfg.seed)
        targets = supervision(supernet, batch, model) if proxies.needs_labels else None
        params, flops = supernet.arch_costs(arch, input_shape)
        rows.append({"arch": key, "default": key == default_key, "params": float(params), "flops": float(flops),
                     "proxies": proxies.components(model, batch[0], targets),
                     ONE_SHOT: one_shot_metric(run, out, supernet, arch, datamodule, cfg.recalibration_batches),
                     FINETUNE: supernet.finetune_loss(arch, datamodule.train_dataloader(), run.search.finetune_steps)})
    for row, score in zip(rows, ensemble.aggregate([row["proxies"] for row in rows]), strict=True):
        row[ENSEMBLE] = score
    models = {key: supernet.candidate(arch, inherit=True).eval() for arch, key in zip(archs, keys, strict=True)}
    device = hardware.targets[0]
    for key, result in hardware.measure_side_by_side(models, input_shape).items():
        row = rows[keys.index(key)]
        row["latency_ms"], row["latency_spread_ms"] = result.measures[device.measure], result.spreads[device.measure]

    seeded = set(_evenly_spaced(len(archs), cfg.seeded)) | {keys.index(default_key)}
    for index, (arch, row) in enumerate(zip(archs, rows, strict=True)):
        seeds = list(cfg.seeds) if index in seeded else list(cfg.seeds)[:1]
        row["inherit"] = [train_metric(run, out, f"arch{index}/inherit_seed{seed}", supernet, arch, datamodule, True, seed) for seed in seeds]
        row["scratch"] = train_metric(run, out, f"arch{index}/scratch_seed{seeds[0]}", supernet, arch, datamodule, False, seeds[0])
        print(f"[{name}] {index + 1}/{len(archs)} {row['arch']}: {row['latency_ms']:.3f} ms, {task.primary_metric} "
              f"inherit {_fmt(row['inherit'])}, scratch {row['scratch']:.4f}, one-shot {row[ONE_SHOT]:.4f}", flush=True)
    return summarise(name, task.primary_metric, task.higher_is_better, ensemble.used, rows, time.perf_counter() - began)


def _evenly_spaced(count: int, k: int) -> list[int]:
    return [round(i * (count - 1) / max(k - 1, 1)) for i in range(min(k, count))]


def _fmt(values: Sequence[float]) -> str:
    return " / ".join(f"{v:.4f}" for v in values)


def summarise(name: str, metric: str, higher_is_better: bool, members: Sequence[str], rows: list[dict], seconds: float) -> dict:
    """Kendall's tau per predictor (against the mean inherited and the scratch metric), seed spread, inherit effect."""
    inherit = [statistics.fmean(row["inherit"]) for row in rows]
    scratch = [row["scratch"] for row in rows]
    predictors: dict[str, tuple[list[float], bool]] = {
        f"proxy.{proxy}": ([row["proxies"].get(proxy, math.nan) for row in rows], _higher_is_better(proxy))
        for proxy in rows[0]["proxies"]
    }
    predictors.update({ENSEMBLE: ([row[ENSEMBLE] for row in rows], True), "params": ([row["params"] for row in rows], True),
                       "flops": ([row["flops"] for row in rows], True), ONE_SHOT: ([row[ONE_SHOT] for row in rows], higher_is_better),
                       FINETUNE: ([row[FINETUNE] for row in rows], False)})
    sign = 1.0 if higher_is_better else -1.0
    spreads = [100 * statistics.stdev(row["inherit"]) for row in rows if len(row["inherit"]) > 1]
    default = next(row for row in rows if row["default"])
    default_metric = statistics.fmean(default["inherit"])
    faster = [(mean, row) for mean, row in zip(inherit, rows, strict=True) if row["latency_ms"] * 1.5 <= default["latency_ms"]]
    best_fast = max(faster, key=lambda pair: sign * pair[0]) if faster else None
    return {
        "task": name, "metric": metric, "ensemble_members": list(members), "architectures": len(rows), "seconds": seconds,
        "kendall_inherit": {p: kendall(v, inherit, hib) for p, (v, hib) in predictors.items()},
        "kendall_scratch": {p: kendall(v, scratch, hib) for p, (v, hib) in predictors.items()},
        "kendall_inherit_vs_scratch": kendall(scratch, inherit, higher_is_better),
        "seed_std_points_median": statistics.median(spreads) if spreads else math.nan,
        "seed_std_points_max": max(spreads) if spreads else math.nan,
        "inherit_minus_scratch_points_median": statistics.median(100 * (a - b) for a, b in zip(inherit, scratch, strict=True)),
        "default_rank": 1 + sum(sign * m > sign * default_metric for m in inherit),
        "best_1p5x_faster": None if best_fast is None else {
            "arch": best_fast[1]["arch"], "metric": best_fast[0], "latency_ms": best_fast[1]["latency_ms"],
            "delta_points_vs_default": 100 * sign * (best_fast[0] - default_metric)},
        "rows": rows,
    }


def _higher_is_better(proxy: str) -> bool:
    return load_proxy(proxy).higher_is_better


def render(tasks: dict[str, dict]) -> str:
    """A markdown table of Kendall's tau per predictor, two columns (inherit, scratch) per task."""
    names = list(next(iter(tasks.values()))["kendall_inherit"])
    lines = ["| predictor | " + " | ".join(f"{t} (inherit) | {t} (scratch)" for t in tasks) + " |",
             "|---|" + "---|---|" * len(tasks)]
    for predictor in names:
        cells = [f"{tasks[t]['kendall_inherit'][predictor]:+.2f} | {tasks[t]['kendall_scratch'][predictor]:+.2f}" for t in tasks]
        lines.append(f"| {predictor} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def over_tasks(tasks: dict[str, dict]) -> dict:
    """The worst task's value of each finding the recipe's expectations check, so they hold for any set of tasks."""
    def finite(key: str) -> list[float]:
        return [tasks[t][key] for t in tasks if math.isfinite(tasks[t][key])]

    deltas = [tasks[t]["best_1p5x_faster"]["delta_points_vs_default"] for t in tasks if tasks[t]["best_1p5x_faster"]]
    return {"default_rank_max": max(tasks[t]["default_rank"] for t in tasks),
            "seed_std_points_median_max": max(finite("seed_std_points_median"), default=math.nan),
            "inherit_minus_scratch_points_median_min": min(finite("inherit_minus_scratch_points_median"), default=math.nan),
            "best_1p5x_faster_delta_points_max": max(deltas, default=math.nan)}


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """``tasks``: task name -> :func:`summarise`'s result (each also written to ``partial.json`` as it finishes);
    ``over_tasks``: :func:`over_tasks`."""
    tasks: dict[str, dict] = {}
    for name in cfg.tasks:
        tasks[name] = measure_task(name, [str(o) for o in cfg.task_overrides.get(name, [])], cfg, out_dir / name)
        atomic_write_text(out_dir / "partial.json", json.dumps(tasks, indent=2))
    print(render(tasks), flush=True)
    return {"tasks": tasks, "over_tasks": over_tasks(tasks)}
