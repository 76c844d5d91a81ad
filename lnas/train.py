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
from lnas.hardware import check_onnx_matches, count_flops, count_params, export_onnx, hardware_fingerprint
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


def _costs(model: torch.nn.Module, input_shape: tuple[int, ...], hardware: HardwareLatency, onnx_path: Path | None = None) -> dict:
    result = (hardware.estimator.measure_onnx(onnx_path, input_shape) if onnx_path else hardware.estimator.measure(model, input_shape))
    return {"params": count_params(model), "flops": count_flops(model, input_shape),
            "latency_ms": result.median_ms, "latency_spread_ms": result.spread_ms}


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

    final = instantiate(cfg.task.final)(model=model)
    trainer = _trainer(cfg, out, "final", cfg.final_epochs, [])
    trainer.fit(final, datamodule=datamodule)
    test_metrics = {k: float(v) for k, v in trainer.test(final, datamodule=datamodule, verbose=False)[0].items()}

    onnx_path = export_onnx(final.model, input_shape, out / "model.onnx")
    images, _ = next(iter(datamodule.test_dataloader()))
    onnx_diff = check_onnx_matches(final.model, onnx_path, images[:2])
    chosen = {"arch": space.encode(arch), **_costs(final.model, input_shape, hardware, onnx_path),
              "test_map": test_metrics.get("test/map", math.nan), "test_map_50": test_metrics.get("test/map_50", math.nan)}
    baseline_arch = space.default()
    baseline = {"arch": space.encode(baseline_arch), **_costs(warmup.candidate(baseline_arch, inherit=False), input_shape, hardware)}
    estimator = hardware.estimator
    summary = {
        "experiment": cfg.experiment,
        "chosen": chosen,
        "baseline": baseline,
        "candidates_scored": len(search.leaderboard) if search else 0,
        "candidates_feasible": len(search.leaderboard.feasible()) if search else 0,
        "proxy": proxy.name,
        "target_latency_ms": hardware.target_latency_ms,
        "hardware": f"{hardware_fingerprint()}, {estimator.provider}, {estimator.intra_op_threads} thread(s), batch {estimator.batch_size}, "
                    f"input {list(input_shape)}",
        "latency_protocol": f"{estimator.warmup} warm-up runs, {estimator.repeats} blocks of {estimator.runs} runs",
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
