"""Latency measured in ONNX Runtime with a fixed protocol (DESIGN.md §6).

Fixed intra/inter-op threads, spinning off, sequential execution, ``warmup`` runs, then ``repeats`` blocks of
``runs`` timed runs: the latency is the median of the block medians, the spread their max - min.
Every result records provider, threads, batch, input shape, ORT version and a hardware fingerprint.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from torch import nn

from lnas.hardware.export import export_onnx


@cache
def hardware_fingerprint() -> str:
    """CPU model name and logical core count (e.g. ``"AMD EPYC 7B13 x2"``)."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} x{os.cpu_count()}"


@dataclass
class LatencyResult:
    """One latency measurement with everything needed to judge and reproduce it."""

    median_ms: float
    spread_ms: float
    block_medians_ms: list[float]
    provider: str
    intra_op_threads: int
    inter_op_threads: int
    batch_size: int
    input_shape: tuple[int, ...]
    ort_version: str
    fingerprint: str = field(default_factory=hardware_fingerprint)

    def as_dict(self) -> dict:
        return asdict(self)


class OrtLatencyEstimator:
    """Measure ONNX models (or PyTorch modules, exported first) in ONNX Runtime."""

    def __init__(self, provider: str = "CPUExecutionProvider", intra_op_threads: int = 1, inter_op_threads: int = 1,
                 warmup: int = 10, runs: int = 20, repeats: int = 3, batch_size: int = 1) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if provider not in available:
            raise ValueError(f"ONNX Runtime provider {provider!r} is not available here; available providers: {available}")
        if min(warmup + 1, runs, repeats, batch_size, intra_op_threads, inter_op_threads) < 1:
            raise ValueError("runs, repeats, batch_size and thread counts must be >= 1 and warmup >= 0")
        self.provider, self.intra_op_threads, self.inter_op_threads = provider, intra_op_threads, inter_op_threads
        self.warmup, self.runs, self.repeats, self.batch_size = warmup, runs, repeats, batch_size

    def _session(self, onnx_path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return ort.InferenceSession(str(onnx_path), options, providers=[self.provider])

    def measure_onnx(self, onnx_path: str | Path, input_shape: tuple[int, ...]) -> LatencyResult:
        """Latency of the ONNX model at ``onnx_path`` for inputs ``(batch_size, *input_shape)``."""
        import onnxruntime as ort

        session = self._session(Path(onnx_path))
        feed = {session.get_inputs()[0].name: np.random.default_rng(0).random((self.batch_size, *input_shape), dtype=np.float32)}
        for _ in range(self.warmup):
            session.run(None, feed)
        medians = []
        for _ in range(self.repeats):
            times = []
            for _ in range(self.runs):
                start = time.perf_counter()
                session.run(None, feed)
                times.append((time.perf_counter() - start) * 1e3)
            medians.append(statistics.median(times))
        return LatencyResult(
            median_ms=statistics.median(medians), spread_ms=max(medians) - min(medians), block_medians_ms=medians,
            provider=self.provider, intra_op_threads=self.intra_op_threads, inter_op_threads=self.inter_op_threads,
            batch_size=self.batch_size, input_shape=tuple(input_shape), ort_version=ort.__version__,
        )

    def measure(self, model: nn.Module, input_shape: tuple[int, ...]) -> LatencyResult:
        """Export ``model`` to a temporary ONNX file and measure it."""
        with tempfile.TemporaryDirectory(prefix="lnas-latency-") as tmp:
            path = export_onnx(model, input_shape, Path(tmp) / "model.onnx", self.batch_size)
            return self.measure_onnx(path, input_shape)
