"""A calibrated look-up-table latency predictor (Once-for-All's latency table, Cai et al., ICLR 2020; nn-Meter,
Zhang et al., MobiSys 2021).

Each distinct block configuration (:mod:`lnas.hardware.blocks`) is exported and measured once at its input shape in
ONNX Runtime, with the same protocol as whole models (interleaved, see :class:`~lnas.hardware.ort.OrtLatencyEstimator`).
The table is cached on disk, one JSON file per hardware fingerprint and runtime settings, so later runs measure only
blocks they have not seen. A candidate's latency is predicted as the calibrated sum of its blocks
(:mod:`lnas.hardware.calibration`); the first ``calibration_size`` candidates and every candidate whose glue (the code
between blocks, :func:`~lnas.hardware.blocks.glue_key`) was never measured are measured end to end instead and refit
the calibration.

A candidate of a space that describes its networks as parts (:meth:`~lnas.spaces.base.SearchSpace.parts`) is estimated
from its arch alone (:meth:`LutLatencyPredictor.estimate_arch`): its parts are the table's entries, nothing is built or
exported once they are in the table. That estimate is calibrated by end-to-end measurements the search hands over
(:meth:`LutLatencyPredictor.add_arch_measurements`: a few candidates before the search, then the finalists it measures
side by side). It has a calibration of its own: its offset stands for what the parts leave out (the task's head), and
its scale differs from that of sums over a network's decomposition.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from torch import nn

from lnas.hardware.blocks import BlockCall, decompose, glue_key
from lnas.hardware.calibration import Calibration, CalibrationPoint, fit_calibration
from lnas.hardware.export import export_onnx
from lnas.hardware.ort import LatencyResult, OrtLatencyEstimator, hardware_fingerprint
from lnas.io import atomic_write_text, default_cache_dir
from lnas.spaces.parts import Part


def part_key(part: Part) -> str:
    """The table key of a part (its space's key for it: a block config at an input shape)."""
    return "part-" + hashlib.sha1(repr(part.key).encode()).hexdigest()[:20]


def _import_type(name: str) -> type:
    module, _, attr = name.rpartition(".")
    if not module:
        raise ValueError(f"block type {name!r} must be a qualified class name such as 'lnas.spaces.layers.MBConv'")
    import importlib

    value = getattr(importlib.import_module(module), attr, None)
    if not isinstance(value, type) or not issubclass(value, nn.Module):
        raise ValueError(f"block type {name!r} is not an nn.Module class")
    return value


class LutLatencyPredictor(OrtLatencyEstimator):
    """Predict latency as the calibrated sum of measured blocks; measures with the protocol of :class:`OrtLatencyEstimator`.

    Args (besides the measurement protocol of :class:`OrtLatencyEstimator`):
        cache_dir: where the table lives (default :func:`default_cache_dir`); None entries are measured on demand.
        max_block_height, block_types: how models are cut into blocks (:func:`lnas.hardware.blocks.decompose`);
            ``block_types`` as classes or qualified class names.
        calibration_size: candidates measured end to end before predictions start (later, a candidate whose glue
            was never measured is measured too); for estimates from the arch, how many candidates the search measures
            before it starts (:attr:`arch_calibration_wanted`; 0: the raw table sums are the estimates).
    """

    def __init__(self, provider: str = "CPUExecutionProvider", intra_op_threads: int = 1, inter_op_threads: int = 1, warmup: int = 10,
                 runs: int = 20, repeats: int = 3, batch_size: int = 1, statistic: str = "median", pin_cpu: int | None = None,
                 cache_dir: str | Path | None = None, max_block_height: int = 3, block_types: Sequence[type | str] = (),
                 calibration_size: int = 10) -> None:
        super().__init__(provider, intra_op_threads, inter_op_threads, warmup, runs, repeats, batch_size, statistic, pin_cpu)
        if max_block_height < 0 or calibration_size < 0:
            raise ValueError(f"max_block_height and calibration_size must be >= 0; got {max_block_height}, {calibration_size}")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.max_block_height = max_block_height
        self.block_types = tuple(_import_type(t) if isinstance(t, str) else t for t in block_types)
        self.calibration_size = calibration_size
        self.table: dict[str, dict] = self._load()
        self.output_shapes: dict = {}  # block key -> output shape, so known blocks are not run when decomposing
        self.points: list[CalibrationPoint] = []
        self.calibration = Calibration()
        self.arch_points: list[CalibrationPoint] = []  # estimates from the arch's parts have a calibration of their own
        self.arch_calibration = Calibration()
        self.candidates_seen = 0

    # -- the table on disk ---------------------------------------------------------------------------------
    def settings(self) -> dict:
        """What a table entry depends on besides the block: hardware, runtime settings and the exporting torch."""
        import onnxruntime as ort
        import torch

        return {"fingerprint": hardware_fingerprint(self.provider), "provider": self.provider, "intra_op_threads": self.intra_op_threads,
                "inter_op_threads": self.inter_op_threads, "batch_size": self.batch_size, "ort_version": ort.__version__,
                "torch_version": torch.__version__, "statistic": self.statistic}

    @property
    def table_path(self) -> Path:
        digest = hashlib.sha1(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_dir / "latency_lut" / f"{digest}.json"

    def _load(self) -> dict[str, dict]:
        path = self.table_path
        if not path.exists():
            return {}
        data = json.loads(path.read_text())
        return dict(data["entries"]) if data.get("settings") == self.settings() else {}

    def _save(self) -> None:
        entries = {**self._load(), **self.table}  # keep what other processes added meanwhile
        atomic_write_text(self.table_path, json.dumps({"settings": self.settings(), "entries": entries}, indent=1, sort_keys=True))

    # -- blocks ------------------------------------------------------------------------------------------------
    def blocks(self, model: nn.Module, input_shape: tuple[int, ...]) -> list[BlockCall]:
        """``model`` cut into block calls."""
        return decompose(model, input_shape, self.max_block_height, self.block_types, self.output_shapes)

    def decompose(self, model: nn.Module, input_shape: tuple[int, ...]) -> tuple[list[BlockCall], str]:
        """``model``'s block calls and glue key."""
        blocks = self.blocks(model, input_shape)
        return blocks, glue_key(model, blocks, input_shape)

    def fill(self, blocks: Sequence[BlockCall]) -> int:
        """Measure (interleaved) every block configuration not yet in the table and save the table; returns how many."""
        missing = list({b.key: b for b in blocks if b.key not in self.table}.values())
        if not missing:
            return 0
        with tempfile.TemporaryDirectory(prefix="lnas-lut-") as tmp:
            paths = [export_onnx(b.module, b.input_shape, Path(tmp) / f"{b.key}.onnx", self.batch_size) for b in missing]
            results = self.measure_onnx_many(paths, [b.input_shape for b in missing])
        for block, result in zip(missing, results, strict=True):
            self.table[block.key] = {"ms": result.median_ms, "spread_ms": result.spread_ms, "block": type(block.module).__qualname__,
                                     "input_shape": list(block.input_shape)}
        self._save()
        return len(missing)

    def fill_parts(self, parts: Sequence[Part]) -> list[str]:
        """The table keys of ``parts``, measuring (interleaved) those not in the table yet; each part built only then."""
        keys = [part_key(part) for part in parts]
        missing = {key: part for key, part in zip(keys, parts, strict=True) if key not in self.table}
        calls = []
        for key, part in missing.items():
            inputs = part.inputs()
            if len(inputs) != 1:
                raise ValueError(f"part {part.key!r} takes {len(inputs)} inputs; the look-up table measures parts of one tensor input")
            calls.append(BlockCall(key, part.build(), tuple(inputs[0].shape[1:]), key))
        self.fill(calls)
        return keys

    # -- prediction and calibration ------------------------------------------------------------------------------
    def table_sum(self, keys: Sequence[str]) -> tuple[float, float]:
        """Sum of the table latencies and of their spreads (ms) over the entries ``keys`` (all must be in the table)."""
        entries = [self.table[key] for key in keys]
        return sum(e["ms"] for e in entries), sum(e["spread_ms"] for e in entries)

    def predict_sum(self, keys: Sequence[str], input_shape: tuple[int, ...], glue: str = "", calibration: Calibration | None = None) -> LatencyResult:
        """The prediction for a candidate made of the table entries ``keys`` (a dictionary look-up each), by ``calibration``
        (default: that of decomposed networks)."""
        calibration = calibration or self.calibration
        total, spread = self.table_sum(keys)
        result = self._result([calibration(total, len(keys), glue)], input_shape)
        result.spread_ms, result.block_medians_ms, result.method = calibration.scale * spread, [], "lut"
        return result

    def predict(self, model: nn.Module, input_shape: tuple[int, ...]) -> LatencyResult:
        """Predicted latency of ``model``: decompose, measure unseen blocks, calibrated sum."""
        blocks, glue = self.decompose(model, input_shape)
        self.fill(blocks)
        return self.predict_sum([b.key for b in blocks], input_shape, glue)

    def estimate_arch(self, key: str, parts: Sequence[Part], input_shape: tuple[int, ...]) -> LatencyResult:
        """The calibrated prediction for a candidate given as its arch's parts: no network is built once they are in the table."""
        return self.predict_sum(self.fill_parts(parts), input_shape, calibration=self.arch_calibration)

    @property
    def arch_calibration_wanted(self) -> int:
        """How many end-to-end measurements estimates from the arch still want before a search relies on them."""
        return 0 if self.arch_points else self.calibration_size

    def add_arch_measurements(self, measured: Sequence[tuple[Sequence[Part], float]]) -> Calibration:
        """Record end-to-end measurements (ms) of candidates given as their parts and refit their calibration."""
        for parts, measured_ms in measured:
            keys = self.fill_parts(parts)
            self.arch_points.append(CalibrationPoint(self.table_sum(keys)[0], len(keys), measured_ms))
        self.arch_calibration = fit_calibration(self.arch_points)
        return self.arch_calibration

    def add_measurement(self, blocks: Sequence[BlockCall], measured_ms: float, glue: str = "") -> Calibration:
        """Record one end-to-end measurement of a decomposed candidate and refit the calibration."""
        self.points.append(CalibrationPoint(self.table_sum([b.key for b in blocks])[0], len(blocks), measured_ms, glue))
        self.calibration = fit_calibration(self.points)
        return self.calibration

    def calibrate(self, models: Sequence[nn.Module], input_shape: tuple[int, ...]) -> Calibration:
        """Measure ``models`` end to end (interleaved) and refit the calibration with them."""
        decomposed = [self.decompose(m, input_shape) for m in models]
        self.fill([b for blocks, _ in decomposed for b in blocks])
        for (blocks, glue), result in zip(decomposed, self.measure_many(models, [input_shape] * len(models)), strict=True):
            self.add_measurement(blocks, result.median_ms, glue)
        return self.calibration

    def estimate(self, key: str, model: nn.Module, input_shape: tuple[int, ...]) -> LatencyResult:
        """Measure while calibrating (see the module docstring), else predict."""
        blocks, glue = self.decompose(model, input_shape)
        self.fill(blocks)
        self.candidates_seen += 1
        new_glue = self.calibration_size > 0 and glue not in {p.glue for p in self.points}
        if self.candidates_seen <= self.calibration_size or new_glue:
            result = self.measure(model, input_shape)
            self.add_measurement(blocks, result.median_ms, glue)
            return result
        return self.predict_sum([b.key for b in blocks], input_shape, glue)

    def describe(self) -> str:
        c, a = self.calibration, self.arch_calibration
        arch = (f"; from the arch's parts: calibrated on {len(self.arch_points)} measured candidates (latency = {a.scale:.3f} x sum + "
                f"{a.per_block_ms:.4f} ms x parts + {a.offset_ms:.3f} ms)") if self.arch_points else ""
        return (f"look-up table of {len(self.table)} blocks ({self.table_path}), calibrated on {len(self.points)} measured candidates "
                f"(latency = {c.scale:.3f} x sum + {c.per_block_ms:.4f} ms x blocks + offset, {len(c.offsets_ms)} glue offset(s), "
                f"mean {c.offset_ms:.3f} ms){arch}; measured with: {super().describe()}")

    def state_dict(self) -> dict:
        return {"points": [asdict(p) for p in self.points], "arch_points": [asdict(p) for p in self.arch_points],
                "candidates_seen": self.candidates_seen}

    def load_state_dict(self, state: dict) -> None:
        self.points = [CalibrationPoint(**p) for p in state["points"]]
        self.arch_points = [CalibrationPoint(**p) for p in state.get("arch_points", [])]
        self.candidates_seen = int(state["candidates_seen"])
        self.calibration, self.arch_calibration = fit_calibration(self.points), fit_calibration(self.arch_points)
