"""The main job: search (Trainer #1) → train the chosen arch (Trainer #2) → test → ONNX export + check → report.

``train(cfg) -> dict`` does the work and is what tests call; ``main`` is the Hydra wrapper behind
``python -m lnas.train +experiment=detection``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

from lnas.callbacks import HardwareLatency, ZeroShotSearch
from lnas.hardware.cost import count_flops, count_params
from lnas.hardware.export import check_onnx_matches, export_onnx
from lnas.io import atomic_write_text
from lnas.report import read_arch_yaml, write_report
from lnas.search.leaderboard import NoFeasibleCandidateError
from lnas.spaces.arch import Arch, InvalidArchError

log = logging.getLogger("lnas.train")


def _trainer(cfg: DictConfig, out: Path, phase: str, epochs: int, callbacks: list[L.Callback]) -> L.Trainer:
    extra: list[L.Callback] = [RichProgressBar()] if cfg.trainer.get("enable_progress_bar", True) else []
    return instantiate(cfg.trainer, max_epochs=epochs, callbacks=callbacks + extra, default_root_dir=str(out / phase),
                       logger=CSVLogger(str(out), name=phase, version=""))


def _given_arch(cfg: DictConfig, space) -> Arch:
    text = str(cfg.arch)
    if text.endswith((".yaml", ".yml")):
        text = read_arch_yaml(text)
    return space.decode(text)


def _latency(hardware: HardwareLatency, key: str, model: torch.nn.Module, input_shape: tuple[int, ...], onnx_path: Path | None) -> dict:
    """Latency of a model: its exported file measured again when the estimator runs ONNX files, else the estimator's value."""
    estimator = hardware.estimator
    if onnx_path is not None and hasattr(estimator, "measure_onnx"):
        result = estimator.measure_onnx(onnx_path, input_shape)
    else:
        result = estimator.estimate(key, model, input_shape)
    return {"latency_ms": result.median_ms, "latency_spread_ms": result.spread_ms}


def _train_and_test(cfg: DictConfig, out: Path, phase: str, model: torch.nn.Module, datamodule: L.LightningDataModule) -> tuple:
    """Train ``model`` with the task's final module for ``final_epochs``; return the module and its test metrics."""
    module = instantiate(cfg.task.final)(model=model)
    trainer = _trainer(cfg, out, phase, cfg.final_epochs, [])
    trainer.fit(module, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.test(module, datamodule=datamodule, verbose=False)[0].items()}
    return module, metrics


def _entry(arch: str, model: torch.nn.Module, input_shape: tuple[int, ...], latency: dict, metrics: dict | None) -> dict:
    metrics = metrics or {}
    return {"arch": arch, "params": count_params(model), "flops": count_flops(model, input_shape), **latency,
            "test_map": metrics.get("test/map", math.nan), "test_map_50": metrics.get("test/map_50", math.nan)}


def train(cfg: DictConfig) -> dict:
    """Run the whole pipeline for ``cfg``; return the summary (also written to ``summary.json``)."""
    out = Path(cfg.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    space = instantiate(cfg.space)
    proxy = instantiate(cfg.predictor)
    hardware: HardwareLatency = instantiate(cfg.hardware)
    input_shape = tuple(datamodule.input_shape)
    warmup = instantiate(cfg.task.warmup)(space=space, num_classes=datamodule.num_classes)

    if cfg.arch:
        arch = _given_arch(cfg, space)
        model = warmup.candidate(arch, inherit=False, seed=cfg.seed)
        search = None
        log.info("training the given arch %s from scratch (search skipped)", space.encode(arch))
    else:
        search: ZeroShotSearch = instantiate(cfg.search, proxy=proxy, output_dir=str(out))
        _trainer(cfg, out, "warmup", cfg.warmup_epochs, [search, hardware]).fit(warmup, datamodule=datamodule)
        arch = search.chosen
        model = warmup.candidate(arch, inherit=True)

    final, test_metrics = _train_and_test(cfg, out, "final", model, datamodule)
    onnx_path = export_onnx(final.model, input_shape, out / "model.onnx")
    images, _ = next(iter(datamodule.test_dataloader()))
    onnx_diff = check_onnx_matches(final.model, onnx_path, images[:2])
    key = space.encode(arch)
    chosen = _entry(key, final.model, input_shape, _latency(hardware, key, final.model, input_shape, onnx_path), test_metrics)
    chosen["search_latency_ms"] = search.leaderboard.best().latency_ms if search else math.nan

    baseline_key = space.encode(space.default())
    baseline_model = warmup.candidate(space.default(), inherit=not cfg.arch)
    baseline_metrics = None
    if cfg.baseline.train:
        baseline_module, baseline_metrics = _train_and_test(cfg, out, "baseline", baseline_model, datamodule)
        baseline_model = baseline_module.model
    baseline = _entry(baseline_key, baseline_model, input_shape, _latency(hardware, baseline_key, baseline_model, input_shape, None),
                      baseline_metrics)
    summary = {
        "experiment": cfg.experiment,
        "chosen": chosen,
        "baseline": baseline,
        "candidates_scored": len(search.leaderboard) if search else 0,
        "candidates_feasible": len(search.leaderboard.feasible()) if search else 0,
        "proxy": proxy.name + (f" ({', '.join(proxy.used)})" if hasattr(proxy, "used") else ""),
        "target_latency_ms": hardware.target_latency_ms,
        "hardware": f"{hardware.estimator.describe()}; input {list(input_shape)}",
        "onnx_max_abs_diff": onnx_diff,
        "test_metrics": test_metrics,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    write_report(out / "report.md", summary)
    log.info("run folder: %s", out)
    return summary


USER_ERRORS = (NoFeasibleCandidateError, InvalidArchError, InstantiationException, ValueError, FileNotFoundError)


@hydra.main(config_path="pkg://lnas.conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point; user errors end the run with their message and exit status 1."""
    log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    try:
        summary = train(cfg)
    except USER_ERRORS as error:
        log.error("%s: %s", type(error).__name__, error)
        sys.exit(1)
    chosen = summary["chosen"]
    print(f"chosen {chosen['arch']}: latency {chosen['latency_ms']:.3f} ms, test mAP {chosen['test_map']:.3f}; "
          f"report: {Path(cfg.output_dir) / 'report.md'}")


if __name__ == "__main__":
    main()
