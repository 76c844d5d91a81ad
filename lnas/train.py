"""The main job: search (Trainer #1) → train the pick and the baseline (Trainer #2, same recipe) → test → ONNX export
+ check → latency of both measured side by side → report.

``train(cfg) -> dict`` does the work and is what tests call; ``main`` is the Hydra wrapper behind
``python -m lnas.train +experiment=<task>``.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

from lnas.callbacks import HardwareLatency, ZeroShotSearch
from lnas.hardware.cost import count_flops, count_params
from lnas.hardware.export import check_onnx_matches, export_onnx
from lnas.io import atomic_write_text
from lnas.report import headline, read_arch_yaml, write_pareto_plot, write_report
from lnas.search.leaderboard import NoFeasibleCandidateError
from lnas.spaces.arch import Arch
from lnas.spaces.base import SearchSpace
from lnas.tasks import FinalModule, SupernetModule, Task, TaskModel
from lnas.tasks.baseline import timm_baseline

log = logging.getLogger("lnas.train")


@dataclass
class Contender:
    """A model the report compares: the pick or the baseline."""

    role: str
    name: str
    model: TaskModel
    arch: str = ""


def _trainer(cfg: DictConfig, out: Path, phase: str, epochs: int, callbacks: list[L.Callback]) -> L.Trainer:
    extra: list[L.Callback] = [RichProgressBar()] if cfg.trainer.get("enable_progress_bar", True) else []
    return instantiate(cfg.trainer, max_epochs=epochs, callbacks=callbacks + extra, default_root_dir=str(out / phase),
                       logger=CSVLogger(str(out), name=phase, version=""))


def _given_arch(cfg: DictConfig, space: SearchSpace) -> Arch:
    text = str(cfg.arch)
    if text.endswith((".yaml", ".yml")):
        text = read_arch_yaml(text)
    return space.decode(text)


def _train_and_test(cfg: DictConfig, out: Path, phase: str, model: TaskModel, task: Task, datamodule: L.LightningDataModule) -> dict:
    """Train ``model`` with the final recipe for ``final_epochs``; return its test metrics (keys without the ``test/`` prefix)."""
    module = FinalModule(model, task, instantiate(cfg.optimizer))
    trainer = _trainer(cfg, out, phase, cfg.final_epochs, [])
    trainer.fit(module, datamodule=datamodule)
    results = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    return {key.removeprefix("test/"): float(value) for key, value in results.items()}


def _latencies(hardware: HardwareLatency, contenders: list[Contender], onnx_paths: list[Path], input_shape: tuple[int, ...]) -> list[dict]:
    """Latency of every contender with the search's estimator: their exported files measured interleaved when the estimator
    measures ONNX files, else the estimator's value (a look-up table by arch key)."""
    estimator = hardware.estimator
    if hasattr(estimator, "measure_onnx_many"):
        results = estimator.measure_onnx_many(onnx_paths, [input_shape] * len(onnx_paths))
    else:
        results = [estimator.estimate(c.arch or c.name, c.model, input_shape) for c in contenders]
    return [{"latency_ms": r.median_ms, "latency_spread_ms": r.spread_ms, "latency_method": r.method} for r in results]


def _timm_baseline(cfg: DictConfig, space: SearchSpace, task: Task, input_shape: tuple[int, int, int]) -> Contender | None:
    """The user's timm model (``baseline=<name>``), built before any work so a bad name stops the run at once."""
    if not cfg.baseline:
        return None
    return Contender("baseline", str(cfg.baseline), timm_baseline(str(cfg.baseline), task, input_shape, num_levels=len(space.feature_info())))


def train(cfg: DictConfig) -> dict:
    """Run the whole pipeline for ``cfg``; return the summary (also written to ``summary.json``)."""
    out = Path(cfg.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    task: Task = instantiate(cfg.task)(num_classes=datamodule.num_classes)
    space: SearchSpace = instantiate(cfg.space)
    proxy = instantiate(cfg.predictor)
    hardware: HardwareLatency = instantiate(cfg.hardware)
    input_shape = tuple(datamodule.input_shape)
    supernet = SupernetModule(space, task, instantiate(cfg.optimizer), seed=cfg.seed)
    searched = not cfg.arch
    inherit = bool(cfg.inherit) and searched
    baseline = _timm_baseline(cfg, space, task, input_shape)

    search: ZeroShotSearch | None = None
    if searched:
        search = instantiate(cfg.search, proxy=proxy, output_dir=str(out))
        _trainer(cfg, out, "warmup", cfg.warmup_epochs, [search, hardware]).fit(supernet, datamodule=datamodule)
        arch = search.chosen
    else:
        arch = _given_arch(cfg, space)
        log.info("training the given arch %s from scratch (search skipped)", space.encode(arch))
    if baseline is None:  # the space's default arch, from the supernet's weights when the pick inherits them
        default_key = space.encode(space.default())
        baseline = Contender("baseline", f"space default {default_key}", supernet.candidate(space.default(), inherit, cfg.seed), default_key)
    key = space.encode(arch)
    pick = Contender("pick", key, supernet.candidate(arch, inherit=inherit, seed=cfg.seed), key)

    metrics = {"pick": _train_and_test(cfg, out, "final", pick.model, task, datamodule)}
    if cfg.train_baseline:
        metrics["baseline"] = _train_and_test(cfg, out, "baseline", baseline.model, task, datamodule)
    images, _ = next(iter(datamodule.test_dataloader()))
    paths = [export_onnx(pick.model, input_shape, out / "model.onnx"), export_onnx(baseline.model, input_shape, out / "baseline.onnx")]
    onnx_diff = check_onnx_matches(pick.model, paths[0], images[:2])
    latencies = _latencies(hardware, [pick, baseline], paths, input_shape)
    entries = {}
    for contender, latency in zip((pick, baseline), latencies, strict=True):
        entries[contender.role] = {"name": contender.name, "arch": contender.arch, "params": count_params(contender.model),
                                   "flops": count_flops(contender.model, input_shape), **latency,
                                   "metrics": metrics.get(contender.role, {}), "trained": contender.role in metrics}
    summary = {
        "experiment": cfg.experiment,
        "task": task.name,
        "metric": task.primary_metric,
        "metric_label": task.describe_metric(),
        "higher_is_better": task.higher_is_better,
        **entries,
        "search_latency_ms": search.leaderboard.best().latency_ms if search else None,
        "candidates_scored": len(search.leaderboard) if search else 0,
        "candidates_feasible": len(search.leaderboard.feasible()) if search else 0,
        "proxy": proxy.name + (f" ({', '.join(proxy.used)})" if hasattr(proxy, "used") else ""),
        "target_latency_ms": hardware.target_latency_ms,
        "hardware": f"{hardware.estimator.describe()}; input {list(input_shape)}",
        "inherit": inherit,
        "onnx_max_abs_diff": onnx_diff,
    }
    if search is not None:
        write_pareto_plot(search.leaderboard, out / "pareto.png", proxy.name, hardware.target_latency_ms,
                          baseline=(baseline.name, entries["baseline"]["latency_ms"]))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    write_report(out / "report.md", summary)
    log.info("run folder: %s", out)
    return summary


USER_ERRORS = (NoFeasibleCandidateError, InstantiationException, ValueError, FileNotFoundError)  # ValueError: bad arch, data, baseline


@hydra.main(config_path="pkg://lnas.conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point; user errors end the run with their message and exit status 1."""
    log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    try:
        summary = train(cfg)
    except USER_ERRORS as error:
        log.error("%s: %s", type(error).__name__, error)
        sys.exit(1)
    print(f"{headline(summary)}; report: {Path(cfg.output_dir) / 'report.md'}")


if __name__ == "__main__":
    main()
