"""Latency measured in ONNX Runtime with a fixed protocol (DESIGN.md §6).

Fixed intra/inter-op threads, spinning off, sequential execution, ``warmup`` runs, then ``repeats`` blocks of
``runs`` timed runs: the latency is the median (or, with ``statistic="min"``, the minimum) of the block medians, the
spread their max - min. Several models measured together are interleaved block by block (model A, B, C, A, B, C, …),
so a burst of load from other processes hits all of them alike instead of one. ``pin_cpu`` pins the measuring thread
to one core (``os.sched_setaffinity``) while it measures. Every result records provider, threads, batch, input
shape, ORT version and a hardware fingerprint.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from torch import nn

from lnas.hardware.export import export_onnx

STATISTICS = ("median", "min")


@cache
def hardware_fingerprint(provider: str = "CPUExecutionProvider") -> str:
    """CPU model name and logical core count (e.g. ``"AMD EPYC 7B13 x2"``); GPU name appended for GPU providers."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    text = f"{name} x{os.cpu_count()}"
    if provider != "CPUExecutionProvider":
        import torch

        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name(0)}"
    return text


@dataclass
class LatencyResult:
    """One latency (measured, predicted or looked up) with everything needed to judge and reproduce it.

    ``method`` says where the number comes from: ``"measured"`` (ONNX Runtime), ``"lut"`` (look-up-table prediction)
    or ``"table"`` (a published benchmark table).
    """

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
    method: str = "measured"

    def as_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def pinned_to(cpu: int | None) -> Iterator[None]:
    """Pin the calling thread to core ``cpu`` for the duration (no-op for None or where affinity is unsupported)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    allowed = os.sched_getaffinity(0)
    if cpu not in allowed:
        raise ValueError(f"pin_cpu={cpu} is not a core this process may use; allowed cores: {sorted(allowed)}")
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


class OrtLatencyEstimator:
    """Measure ONNX models (or PyTorch modules, exported first) in ONNX Runtime.

    Args:
        provider: ONNX Runtime execution provider (``CPUExecutionProvider``; ``CUDAExecutionProvider`` and
            ``TensorrtExecutionProvider`` where installed). An unavailable one raises, listing the available ones.
        intra_op_threads, inter_op_threads: fixed thread counts (spinning is always off).
        warmup: untimed runs per model before timing.
        runs, repeats: ``repeats`` blocks of ``runs`` timed runs.
        batch_size: batch of the timed input.
        statistic: ``"median"`` of the block medians (DESIGN.md §6) or their ``"min"`` (load only ever adds time).
        pin_cpu: core to pin the measuring thread to, or None.
    """

    def __init__(self, provider: str = "CPUExecutionProvider", intra_op_threads: int = 1, inter_op_threads: int = 1,
                 warmup: int = 10, runs: int = 20, repeats: int = 3, batch_size: int = 1, statistic: str = "median",
                 pin_cpu: int | None = None) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if provider not in available:
            raise ValueError(f"ONNX Runtime provider {provider!r} is not available here; available providers: {available}")
        if min(warmup + 1, runs, repeats, batch_size, intra_op_threads, inter_op_threads) < 1:
            raise ValueError("runs, repeats, batch_size and thread counts must be >= 1 and warmup >= 0")
        if statistic not in STATISTICS:
            raise ValueError(f"unknown latency statistic {statistic!r}; allowed: {list(STATISTICS)}")
        self.provider, self.intra_op_threads, self.inter_op_threads = provider, intra_op_threads, inter_op_threads
        self.warmup, self.runs, self.repeats, self.batch_size = warmup, runs, repeats, batch_size
        self.statistic, self.pin_cpu = statistic, pin_cpu

    def describe(self) -> str:
        """The runtime settings and protocol in words, for reports."""
        import onnxruntime as ort

        return (f"{hardware_fingerprint(self.provider)}, ONNX Runtime {ort.__version__} {self.provider}, {self.intra_op_threads} intra-op / "
                f"{self.inter_op_threads} inter-op thread(s), spinning off, batch {self.batch_size}; {self.warmup} warm-up runs, "
                f"{self.statistic} of {self.repeats} block medians of {self.runs} runs")

    def _session(self, onnx_path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        providers = [self.provider] if self.provider == "CPUExecutionProvider" else [self.provider, "CPUExecutionProvider"]
        return ort.InferenceSession(str(onnx_path), options, providers=providers)

    def _result(self, medians: list[float], input_shape: tuple[int, ...]) -> LatencyResult:
        import onnxruntime as ort

        value = statistics.median(medians) if self.statistic == "median" else min(medians)
        return LatencyResult(
            median_ms=value, spread_ms=max(medians) - min(medians), block_medians_ms=medians, provider=self.provider,
            intra_op_threads=self.intra_op_threads, inter_op_threads=self.inter_op_threads, batch_size=self.batch_size,
            input_shape=tuple(input_shape), ort_version=ort.__version__, fingerprint=hardware_fingerprint(self.provider),
        )

    def open_sessions(self, onnx_paths: Sequence[str | Path], input_shapes: Sequence[tuple[int, ...]]) -> list[tuple]:
        """``(session, feed)`` per ONNX model (inputs ``(batch_size, *shape)``), each warmed up with ``warmup`` runs."""
        if len(onnx_paths) != len(input_shapes):
            raise ValueError(f"got {len(onnx_paths)} ONNX paths but {len(input_shapes)} input shapes")
        rng = np.random.default_rng(0)
        opened = []
        with pinned_to(self.pin_cpu):
            for path, shape in zip(onnx_paths, input_shapes, strict=True):
                session = self._session(Path(path))
                feed = {session.get_inputs()[0].name: rng.random((self.batch_size, *shape), dtype=np.float32)}
                for _ in range(self.warmup):
                    session.run(None, feed)
                opened.append((session, feed))
        return opened

    def time_round(self, opened: Sequence[tuple], round_index: int = 0) -> list[float]:
        """One block of ``runs`` timed runs per model, model after model (the order rotates with ``round_index``): their medians (ms)."""
        medians = [0.0] * len(opened)
        with pinned_to(self.pin_cpu):
            for offset in range(len(opened)):  # rotate the order so no model always follows the same one
                index = (offset + round_index) % len(opened)
                session, feed = opened[index]
                times = []
                for _ in range(self.runs):
                    start = time.perf_counter()
                    session.run(None, feed)
                    times.append((time.perf_counter() - start) * 1e3)
                medians[index] = statistics.median(times)
        return medians

    def measure_onnx_many(self, onnx_paths: Sequence[str | Path], input_shapes: Sequence[tuple[int, ...]]) -> list[LatencyResult]:
        """Latencies of several ONNX models (inputs ``(batch_size, *shape)``), measured interleaved block by block."""
        opened = self.open_sessions(onnx_paths, input_shapes)
        rounds = [self.time_round(opened, r) for r in range(self.repeats)]
        return [self._result([r[i] for r in rounds], shape) for i, shape in enumerate(input_shapes)]

    def measure_onnx(self, onnx_path: str | Path, input_shape: tuple[int, ...]) -> LatencyResult:
        """Latency of the ONNX model at ``onnx_path`` for inputs ``(batch_size, *input_shape)``."""
        return self.measure_onnx_many([onnx_path], [input_shape])[0]

    def measure_many(self, models: Sequence[nn.Module], input_shapes: Sequence[tuple[int, ...]]) -> list[LatencyResult]:
        """Export each model to a temporary ONNX file and measure them interleaved."""
        with tempfile.TemporaryDirectory(prefix="lnas-latency-") as tmp:
            paths = [export_onnx(model, shape, Path(tmp) / f"model{i}.onnx", self.batch_size)
                     for i, (model, shape) in enumerate(zip(models, input_shapes, strict=True))]
            return self.measure_onnx_many(paths, input_shapes)

    def measure(self, model: nn.Module, input_shape: tuple[int, ...]) -> LatencyResult:
        """Export ``model`` to a temporary ONNX file and measure it."""
        return self.measure_many([model], [input_shape])[0]

    def estimate(self, key: str, model: nn.Module, input_shape: tuple[int, ...]) -> LatencyResult:
        """The :class:`~lnas.hardware.base.LatencyEstimator` protocol: measure ``model`` (``key`` is not needed)."""
        return self.measure(model, input_shape)


_WORKER: dict = {}  # in a measuring process: its estimator and open sessions


def _worker_open(settings: dict, paths: list[str], input_shape: tuple[int, ...]) -> None:
    estimator = OrtLatencyEstimator(**settings)
    _WORKER.update(estimator=estimator, opened=estimator.open_sessions(paths, [input_shape] * len(paths)))


def _worker_round(round_index: int) -> list[float]:
    return _WORKER["estimator"].time_round(_WORKER["opened"], round_index)


def measure_in_fresh_processes(settings: dict, onnx_paths: Sequence[str | Path], input_shape: tuple[int, ...],
                               processes: int = 2) -> list[list[float]]:
    """Latencies (ms) of the ONNX models measured by ``OrtLatencyEstimator(**settings)`` in each of ``processes``
    freshly spawned processes: one row per process, to judge the measurement's repeatability across processes.

    The processes take turns block by block (process 1 times one block of every model, then process 2, …), so a
    change in the machine's load between minutes hits every process alike instead of biasing one.
    """
    estimator = OrtLatencyEstimator(**settings)
    paths, shape = [str(p) for p in onnx_paths], tuple(input_shape)
    context = multiprocessing.get_context("spawn")
    pools = [ProcessPoolExecutor(max_workers=1, mp_context=context) for _ in range(processes)]
    try:
        for pool in pools:
            pool.submit(_worker_open, settings, paths, shape).result()
        rounds = [[pool.submit(_worker_round, r).result() for pool in pools] for r in range(estimator.repeats)]
    finally:
        for pool in pools:
            pool.shutdown()
    return [[estimator._result([rnd[p][i] for rnd in rounds], shape).median_ms for i in range(len(paths))] for p in range(processes)]
