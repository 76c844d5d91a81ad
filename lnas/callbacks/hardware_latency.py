"""``HardwareLatency``: a Lightning callback that estimates each candidate's hardware cost and rejects those over budget.

The search callback asks it for each candidate (:meth:`evaluate`). The latency comes from any
:class:`~lnas.hardware.base.LatencyEstimator`: an ONNX Runtime measurement, a calibrated look-up table, or a published
benchmark table looked up by the candidate's key. Parameters, FLOPs and peak activation memory can be bounded too.
Results are cached by key and kept in the callback's ``state_dict`` (with the estimator's own state, if it has one),
so a resumed run does not measure twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L
from torch import nn

from lnas.hardware.base import LatencyEstimator
from lnas.hardware.cost import count_flops, count_params
from lnas.hardware.memory import peak_activation_bytes


@dataclass
class ConstraintResult:
    """Latency of a candidate (NaN when it could not be measured) and whether it meets every bound."""

    latency_ms: float
    spread_ms: float
    feasible: bool
    reason: str = ""


class HardwareLatency(L.Callback):
    """Estimate each candidate's latency with ``estimator``; a candidate over any bound is infeasible.

    A candidate whose export or measurement fails is infeasible with the error as reason; it never aborts a search.

    Args:
        estimator: any :class:`~lnas.hardware.base.LatencyEstimator`.
        target_latency_ms: latency budget (None: no bound).
        max_params, max_mflops, max_activation_mb: optional bounds on parameters, MFLOPs (torch's FlopCounterMode)
            and peak activation memory (MB, :func:`~lnas.hardware.memory.peak_activation_bytes`) at batch 1.
    """

    def __init__(self, estimator: LatencyEstimator, target_latency_ms: float | None = None, max_params: int | None = None,
                 max_mflops: float | None = None, max_activation_mb: float | None = None) -> None:
        bounds = {"target_latency_ms": target_latency_ms, "max_params": max_params, "max_mflops": max_mflops, "max_activation_mb": max_activation_mb}
        for name, value in bounds.items():
            if value is not None and not value > 0:
                raise ValueError(f"hardware.{name} must be a positive number or null, got {value}")
        if not isinstance(estimator, LatencyEstimator):
            raise TypeError(f"hardware.estimator must have estimate(key, model, input_shape) and describe(); got {type(estimator).__name__}")
        self.estimator, self.target_latency_ms = estimator, target_latency_ms
        self.max_params, self.max_mflops, self.max_activation_mb = max_params, max_mflops, max_activation_mb
        self.cache: dict[str, dict] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(target_latency_ms=self.target_latency_ms)

    def _costs(self, model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
        """Reasons why ``model`` exceeds the params / FLOPs / memory bounds (empty when it does not)."""
        reasons = []
        if self.max_params is not None and (params := count_params(model)) > self.max_params:
            reasons.append(f"params {params} > max_params {self.max_params}")
        if self.max_mflops is not None and (mflops := count_flops(model, input_shape) / 1e6) > self.max_mflops:
            reasons.append(f"MFLOPs {mflops:.1f} > max_mflops {self.max_mflops}")
        if self.max_activation_mb is not None and (mb := peak_activation_bytes(model, input_shape) / 1e6) > self.max_activation_mb:
            reasons.append(f"peak activation memory {mb:.2f} MB > max_activation_mb {self.max_activation_mb}")
        return reasons

    def evaluate(self, key: str, model: nn.Module, input_shape: tuple[int, ...]) -> ConstraintResult:
        """Latency and feasibility of ``model`` (identified by ``key``) for inputs of shape ``(C, H, W)``."""
        if key not in self.cache:
            entry = {"latency_ms": math.nan, "spread_ms": math.nan, "error": "", "over": []}
            try:
                entry["over"] = self._costs(model, input_shape)
                result = self.estimator.estimate(key, model, input_shape)
                entry.update(latency_ms=result.median_ms, spread_ms=result.spread_ms, method=result.method)
            except Exception as error:  # noqa: BLE001 - any exporter/runtime/lookup failure marks the candidate infeasible
                entry["error"] = f"{type(error).__name__}: {error}"[:300]
            self.cache[key] = entry
        entry = self.cache[key]
        latency, spread = entry["latency_ms"], entry["spread_ms"]
        reasons = list(entry.get("over", []))
        if entry["error"]:
            reasons.append(f"latency not measured: {entry['error']}")
        elif self.target_latency_ms is not None and latency > self.target_latency_ms:
            reasons.append(f"latency {latency:.3f} ms > target {self.target_latency_ms} ms")
        return ConstraintResult(latency, spread, not reasons, "; ".join(reasons))

    def state_dict(self) -> dict:
        state = {"cache": dict(self.cache)}
        if hasattr(self.estimator, "state_dict"):
            state["estimator"] = self.estimator.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self.cache = dict(state_dict["cache"])
        if "estimator" in state_dict and hasattr(self.estimator, "load_state_dict"):
            self.estimator.load_state_dict(state_dict["estimator"])
