"""Fidelity of the look-up-table latency predictor against ONNX Runtime measurement (recipe ``latency_fidelity``).

Protocol (nn-Meter, Zhang et al., MobiSys 2021, reports the share of predictions within ±10% of measurement):

1. ``n`` test and ``calibration_n`` calibration candidates: random archs of the default space (``conf/space/<space>.yaml``),
   each the detector that ``SupernetModule.candidate`` builds (backbone + FCOS head, fresh weights) at
   ``input_shape``.
2. Each is exported to ONNX with the legacy exporter (timed); ``dynamo_samples`` of them also with the dynamo exporter.
3. The table: every candidate is decomposed into blocks and each unseen block is measured once (interleaved).
4. All candidates are measured end to end, interleaved, in ``processes`` fresh processes that take turns block by
   block (:func:`~lnas.hardware.ort.measure_in_fresh_processes`).
5. The table is calibrated on the calibration candidates (their mean over the processes; one offset per glue key,
   see :mod:`lnas.hardware.calibration`) and predicts the test candidates (timed: decomposition, and the look-up alone).
6. Prediction errors are taken against each single measurement (pooled over the processes): ``within_10pct``,
   ``median_abs_pct_error``, ``spearman`` (mean over processes). The measurement's own repeatability compares the
   first two processes: ``repeatability_pct`` (median |A - B| / mean(A, B)), ``repeat_within_10pct``, ``repeat_spearman``.
   ``fidelity_ok`` is 1 when ≥90% of predictions are within ±10%, or, where the measurement itself does not repeat
   within ±10% for 90% of the models, when the median prediction error is no larger than ``repeatability_pct``.
"""

from __future__ import annotations

import statistics
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from scipy.stats import spearmanr

from lnas.hardware.export import export_onnx
from lnas.hardware.lut import LutLatencyPredictor
from lnas.hardware.ort import hardware_fingerprint, measure_in_fresh_processes
from lnas.tasks import DetectionTask, SupernetModule

TARGET_WITHIN, TOLERANCE = 0.9, 0.10


def load_space(space: str | DictConfig, image_size: int):
    """A search space from an option name of ``conf/space`` (the training config's options) or from a space config, for
    data of ``image_size`` (space configs may set their input resolutions relative to it)."""
    if isinstance(space, str):
        space = OmegaConf.load(files("lnas.conf").joinpath("space", f"{space}.yaml").open())
    return instantiate(OmegaConf.create({"data": {"image_size": image_size}, "space": space}).space)


def _pct(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) / b * 100


def fidelity_metrics(predicted: np.ndarray, measured: np.ndarray) -> dict:
    """Prediction vs each row of ``measured`` (processes x models), and the measurement's repeatability (rows 0 and 1)."""
    errors = np.concatenate([_pct(predicted, row) for row in measured])
    metrics = {
        "within_10pct": float(np.mean(errors <= TOLERANCE * 100)),
        "median_abs_pct_error": float(np.median(errors)),
        "spearman": float(np.mean([spearmanr(predicted, row).statistic for row in measured])),
    }
    if len(measured) >= 2:
        a, b = measured[0], measured[1]
        disagreement = np.abs(a - b) / ((a + b) / 2) * 100
        metrics.update(repeatability_pct=float(np.median(disagreement)), repeat_within_10pct=float(np.mean(disagreement <= TOLERANCE * 100)),
                       repeat_spearman=float(spearmanr(a, b).statistic))
        noisy = metrics["repeat_within_10pct"] < TARGET_WITHIN
        ok = metrics["within_10pct"] >= TARGET_WITHIN or (noisy and metrics["median_abs_pct_error"] <= metrics["repeatability_pct"])
    else:
        ok = metrics["within_10pct"] >= TARGET_WITHIN
    metrics["fidelity_ok"] = float(ok)
    return metrics


def _time_exports(models: list, shape: tuple[int, ...], folder: Path, exporter: str) -> tuple[list[Path], list[float]]:
    paths, seconds = [], []
    for index, model in enumerate(models):
        start = time.perf_counter()
        paths.append(export_onnx(model, shape, folder / f"{exporter}_{index:03d}.onnx", exporter=exporter))
        seconds.append(time.perf_counter() - start)
    return paths, seconds


def _dynamo_seconds(models: list, shape: tuple[int, ...], folder: Path) -> dict:
    if not models:
        return {}
    try:
        return {"dynamo_export_seconds_per_candidate": statistics.median(_time_exports(models, shape, folder, "dynamo")[1])}
    except Exception as error:  # noqa: BLE001 - reported, e.g. onnxscript not installed
        return {"dynamo_export_error": f"{type(error).__name__}: {error}"[:300]}


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Measure and predict the candidates of ``cfg`` (see the module docstring); returns the results."""
    shape = tuple(int(s) for s in cfg.input_shape)
    space = load_space(cfg.space, shape[-1])
    generator = torch.Generator().manual_seed(int(cfg.seed))
    torch.manual_seed(int(cfg.seed))
    archs = []
    while len(archs) < cfg.n + cfg.calibration_n:  # distinct candidates
        arch = space.encode(space.sample(generator))
        if arch not in archs:
            archs.append(arch)
    supernet = SupernetModule(space, DetectionTask(int(cfg.num_classes)))
    models = [supernet.candidate(space.decode(a), inherit=False, seed=i).eval() for i, a in enumerate(archs)]

    onnx_dir = Path(out_dir) / "onnx"
    paths, export_seconds = _time_exports(models, shape, onnx_dir, "legacy")
    dynamo = _dynamo_seconds(models[: int(cfg.dynamo_samples)], shape, onnx_dir)

    settings = OmegaConf.to_container(cfg.estimator, resolve=True)
    lut = LutLatencyPredictor(**settings, cache_dir=cfg.cache_dir or Path(out_dir) / "lut", max_block_height=int(cfg.max_block_height))
    start = time.perf_counter()
    decomposed = [lut.decompose(m, shape) for m in models]
    blocks_measured = lut.fill([b for blocks, _ in decomposed for b in blocks])
    table_seconds = time.perf_counter() - start

    measured = np.array(measure_in_fresh_processes(settings, paths, shape, int(cfg.processes)))
    test, calib = slice(0, cfg.n), slice(cfg.n, None)
    for (blocks, glue), ms in zip(decomposed[calib], measured[:, calib].mean(axis=0), strict=True):
        lut.add_measurement(blocks, float(ms), glue)

    decompose_seconds, lookup_seconds, predicted = [], [], []
    for model in models[test]:
        start = time.perf_counter()
        blocks, glue = lut.decompose(model, shape)
        middle = time.perf_counter()
        predicted.append(lut.predict_sum([b.key for b in blocks], shape, glue).median_ms)
        decompose_seconds.append(middle - start)
        lookup_seconds.append(time.perf_counter() - middle)
    predicted = np.array(predicted)

    c = lut.calibration
    return {
        **fidelity_metrics(predicted, measured[:, test]),
        "n": int(cfg.n), "calibration_n": int(cfg.calibration_n), "processes": int(cfg.processes),
        "export_seconds_per_candidate": statistics.median(export_seconds), **dynamo,
        "predict_seconds_per_candidate": statistics.median(np.add(decompose_seconds, lookup_seconds).tolist()),
        "lookup_seconds_per_candidate": statistics.median(lookup_seconds),
        "table_blocks": len(lut.table), "table_blocks_measured": blocks_measured, "table_seconds": table_seconds,
        "calibration": {"scale": c.scale, "per_block_ms": c.per_block_ms, "offsets_ms": list(c.offsets_ms.values())},
        "measured_median_ms": float(np.median(measured[:, test])),
        "protocol": lut.describe(), "fingerprint": hardware_fingerprint(),
        "candidates": [{"arch": a, "predicted_ms": float(p), "measured_ms": measured[:, i].tolist()}
                       for i, (a, p) in enumerate(zip(archs[test], predicted, strict=True))],
    }
