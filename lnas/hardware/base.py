"""The interface every latency estimator implements, so :class:`~lnas.callbacks.HardwareLatency` can use any of them."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import nn

from lnas.hardware.ort import LatencyResult


@runtime_checkable
class LatencyEstimator(Protocol):
    """Latency of a candidate: measured (ONNX Runtime), predicted (look-up table) or looked up (benchmark table).

    ``key`` identifies the candidate (its arch string): a benchmark table looks it up, the others may ignore it.
    """

    def estimate(self, key: str, model: nn.Module, input_shape: tuple[int, ...]) -> LatencyResult:
        """Latency of ``model`` (identified by ``key``) for inputs ``(batch, *input_shape)``."""

    def describe(self) -> str:
        """Hardware, runtime settings and protocol in words, for reports."""
