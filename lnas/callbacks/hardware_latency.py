"""``HardwareLatency``: a Lightning callback that measures candidates in ONNX Runtime and rejects slow ones.

The search callback asks it for each candidate (:meth:`evaluate`); results are cached by arch string and kept in
the callback's ``state_dict`` so a resumed run does not measure twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L
from torch import nn

from lnas.hardware.ort import OrtLatencyEstimator


@dataclass
class ConstraintResult:
    """Latency of a candidate (NaN when it could not be measured) and whether it meets the target."""

    latency_ms: float
    spread_ms: float
    feasible: bool
    reason: str = ""


class HardwareLatency(L.Callback):
    """Measure each candidate's latency with ``estimator``; a candidate over ``target_latency_ms`` is infeasible.

    A candidate whose export or measurement fails is infeasible with the error as reason; it never aborts a search.
    """

    def __init__(self, estimator: OrtLatencyEstimator, target_latency_ms: float | None = None) -> None:
        if target_latency_ms is not None and not target_latency_ms > 0:
            raise ValueError(f"hardware.target_latency_ms must be a positive number of milliseconds or null, got {target_latency_ms}")
        self.estimator, self.target_latency_ms = estimator, target_latency_ms
        self.cache: dict[str, dict] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(target_latency_ms=self.target_latency_ms)

    def evaluate(self, key: str, model: nn.Module, input_shape: tuple[int, ...]) -> ConstraintResult:
        """Latency and feasibility of ``model`` (identified by ``key``) for inputs of shape ``(C, H, W)``."""
        if key not in self.cache:
            try:
                result = self.estimator.measure(model, input_shape)
                self.cache[key] = {"latency_ms": result.median_ms, "spread_ms": result.spread_ms, "error": ""}
            except Exception as error:  # noqa: BLE001 - any exporter/runtime failure marks the candidate infeasible
                self.cache[key] = {"latency_ms": math.nan, "spread_ms": math.nan, "error": f"{type(error).__name__}: {error}"[:300]}
        entry = self.cache[key]
        if entry["error"]:
            return ConstraintResult(math.nan, math.nan, False, f"latency not measured: {entry['error']}")
        latency = entry["latency_ms"]
        if self.target_latency_ms is not None and latency > self.target_latency_ms:
            return ConstraintResult(latency, entry["spread_ms"], False, f"latency {latency:.3f} ms > target {self.target_latency_ms} ms")
        return ConstraintResult(latency, entry["spread_ms"], True)

    def state_dict(self) -> dict:
        return {"cache": dict(self.cache)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.cache = dict(state_dict["cache"])
