"""``HardwareLatency``: a Lightning callback that estimates each candidate's latency on one or more devices.

Every device has a name, a :class:`~lnas.hardware.base.LatencyEstimator` (an ONNX Runtime measurement, a calibrated
look-up table, or a published benchmark table looked up by the candidate's key) and an optional budget. Its latency is
the measure ``latency_ms.<device>`` (an objective of the search) and its budget a constraint on it. A budget is either
absolute (``target_latency_ms``) or relative to the baseline (``target_speedup``: the baseline's latency on that device,
measured in the same run with the same protocol, divided by the speed-up). Parameters, FLOPs and peak activation memory
can be bounded too. Results are cached by key and kept in the callback's ``state_dict`` (with each estimator's own
state, if it has one), so a resumed run does not measure twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import lightning as L
from torch import nn

from lnas.hardware.base import LatencyEstimator, LatencyResult
from lnas.hardware.memory import peak_activation_bytes
from lnas.search.objectives import FLOPS, MEMORY, PARAMS, Constraint, latency_measure


@dataclass
class LatencyTarget:
    """One device: its name, its latency estimator and its budget in ms (None: no budget)."""

    name: str
    estimator: LatencyEstimator
    target_latency_ms: float | None = None

    @property
    def measure(self) -> str:
        return latency_measure(self.name)


@dataclass
class HardwareResult:
    """What the hardware gives one candidate: measures (NaN when not taken), their spreads, and why any failed."""

    measures: dict[str, float]
    spreads: dict[str, float]
    errors: list[str]


def _target(name: str, spec: LatencyTarget | Mapping) -> LatencyTarget:
    if isinstance(spec, LatencyTarget):
        return spec
    unknown = set(spec) - {"name", "estimator", "target_latency_ms"}
    if unknown:
        raise ValueError(f"hardware device {name!r}: unknown keys {sorted(unknown)}; allowed: estimator, target_latency_ms")
    estimator, budget = spec.get("estimator"), spec.get("target_latency_ms")
    if estimator is None:
        raise ValueError(f"hardware device {name!r} has {'a budget' if budget is not None else 'no estimator'} but no latency estimator: "
                         "give it an estimator (e.g. lnas.hardware.OrtLatencyEstimator or lnas.hardware.Nb201LatencyTable)")
    return LatencyTarget(name, estimator, budget)


def latency_targets(devices: Mapping[str, LatencyTarget | Mapping] | Sequence[LatencyTarget | Mapping]) -> list[LatencyTarget]:
    """Devices given as a mapping name → spec, or as a list of specs with a ``name`` each; names must be distinct."""
    if isinstance(devices, Mapping):
        targets = [_target(str(name), spec) for name, spec in devices.items()]
    else:
        targets = [spec if isinstance(spec, LatencyTarget) else _target(str(spec.get("name", "")), spec) for spec in devices]
    names = [t.name for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"hardware devices must be listed once each; listed more than once: {duplicates}")
    if any(not n for n in names):
        raise ValueError("every hardware device needs a name")
    for target in targets:
        if not isinstance(target.estimator, LatencyEstimator):
            raise TypeError(f"hardware device {target.name!r}: the estimator must have estimate(key, model, input_shape) and describe(); "
                            f"got {type(target.estimator).__name__}")
        if target.target_latency_ms is not None and not target.target_latency_ms > 0:
            raise ValueError(f"hardware device {target.name!r}: target_latency_ms must be a positive number or null, got {target.target_latency_ms}")
    return targets


class HardwareLatency(L.Callback):
    """Latency of each candidate on every device, and the constraints they and the cost bounds set.

    A candidate whose export or measurement fails on a device has NaN latency there and is infeasible with the error as
    reason; it never aborts a search.

    Args:
        devices: name → ``{estimator, target_latency_ms}`` (or a list of such with a ``name``, or :class:`LatencyTarget`).
        target_speedup: every device's budget is the baseline's latency there divided by this (> 1); set with
            :meth:`set_budgets_from_baseline` before the search. Exclusive with ``target_latency_ms`` on a device.
        max_params, max_mflops, max_activation_mb: optional bounds on parameters, MFLOPs and peak activation memory
            (MB at batch 1, :func:`~lnas.hardware.memory.peak_activation_bytes`).
    """

    def __init__(self, devices: Mapping | Sequence, target_speedup: float | None = None, max_params: int | None = None,
                 max_mflops: float | None = None, max_activation_mb: float | None = None) -> None:
        self.targets = latency_targets(devices)
        for name, value in {"max_params": max_params, "max_mflops": max_mflops, "max_activation_mb": max_activation_mb}.items():
            if value is not None and not value > 0:
                raise ValueError(f"hardware.{name} must be a positive number or null, got {value}")
        if target_speedup is not None:
            if not target_speedup > 1:
                raise ValueError(f"hardware.target_speedup must be > 1 (the pick that many times faster than the baseline), got {target_speedup}")
            both = [t.name for t in self.targets if t.target_latency_ms is not None]
            if both:
                raise ValueError(f"hardware.target_speedup sets every device's budget; devices {both} also set target_latency_ms: "
                                 "set one or the other")
            if not self.targets:
                raise ValueError("hardware.target_speedup needs at least one device with a latency estimator")
        self.target_speedup = target_speedup
        self.max_params, self.max_mflops, self.max_activation_mb = max_params, max_mflops, max_activation_mb
        self.baseline_latency_ms: dict[str, float] = {}
        self.cache: dict[str, dict] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(devices=tuple(t.name for t in self.targets))

    @property
    def devices(self) -> list[str]:
        return [t.name for t in self.targets]

    def measures(self) -> list[str]:
        """The measures this callback provides: every device's latency, and peak memory when it is bounded."""
        return [t.measure for t in self.targets] + ([MEMORY] if self.max_activation_mb is not None else [])

    def constraints(self) -> list[Constraint]:
        """Every device's latency budget, then the bounds on params, FLOPs and memory."""
        constraints = [Constraint(t.measure, t.target_latency_ms) for t in self.targets if t.target_latency_ms is not None]
        if self.max_params is not None:
            constraints.append(Constraint(PARAMS, float(self.max_params)))
        if self.max_mflops is not None:
            constraints.append(Constraint(FLOPS, self.max_mflops * 1e6))
        if self.max_activation_mb is not None:
            constraints.append(Constraint(MEMORY, float(self.max_activation_mb)))
        return constraints

    def device_constraints(self, device: str) -> list[Constraint]:
        """The constraints that apply to a pick for ``device``: its own budget and the device-independent bounds."""
        others = {t.measure for t in self.targets if t.name != device}
        return [c for c in self.constraints() if c.measure not in others]

    def check_space(self, space) -> None:
        """Refuse a space an estimator cannot serve (e.g. a NAS-Bench-201 latency table with a space of other networks)."""
        for target in self.targets:
            check = getattr(target.estimator, "check_space", None)
            if check is not None:
                check(space)

    def set_budgets_from_baseline(self, baseline_latency_ms: Mapping[str, float], devices: Sequence[str] | None = None) -> None:
        """With ``target_speedup``: every device's budget (or only those of ``devices``) = the baseline's latency there
        / the speed-up."""
        if self.target_speedup is None:
            return
        for target in self.targets:
            if devices is not None and target.name not in devices:
                continue
            latency = baseline_latency_ms.get(target.name, math.nan)
            if not math.isfinite(latency) or latency <= 0:
                raise ValueError(f"hardware.target_speedup needs the baseline's latency on {target.name!r}, which could not be measured ({latency})")
            self.baseline_latency_ms[target.name] = latency
            target.target_latency_ms = latency / self.target_speedup

    def needs_network(self, key: str, parts: Sequence | None) -> bool:
        """Whether :meth:`evaluate` of ``key`` needs its network: it is not cached, and a device measures the network
        rather than estimating from the ``parts`` (or peak memory is bounded)."""
        return key not in self.cache and (parts is None or self.max_activation_mb is not None
                                           or any(not hasattr(t.estimator, "estimate_arch") for t in self.targets))

    def evaluate(self, key: str, model: nn.Module | None, input_shape: tuple[int, ...], parts: Sequence | None = None) -> HardwareResult:
        """Latency on every device (and peak memory when bounded) of ``model``, identified by ``key``, for inputs ``(C, H, W)``.
        Given the arch's ``parts``, a device that estimates latency from them (:meth:`estimate_arch`) does so; ``model``
        may then be None unless :meth:`needs_network`."""
        if key not in self.cache:
            if model is None and self.needs_network(key, parts):
                raise ValueError(f"hardware.evaluate({key!r}) needs the network: a device measures it or peak memory is bounded")

            def latency(estimator: LatencyEstimator) -> LatencyResult:
                if parts is not None and hasattr(estimator, "estimate_arch"):
                    return estimator.estimate_arch(key, parts, input_shape)
                return estimator.estimate(key, model, input_shape)

            result = self._each_device(self.targets, latency, "not measured")
            if self.max_activation_mb is not None:
                result.measures[MEMORY] = peak_activation_bytes(model, input_shape) / 1e6
            self.cache[key] = {"measures": result.measures, "spreads": result.spreads, "errors": result.errors}
        entry = self.cache[key]
        return HardwareResult(dict(entry["measures"]), dict(entry["spreads"]), list(entry["errors"]))

    @staticmethod
    def _each_device(targets: Sequence[LatencyTarget], latency: Callable[[LatencyEstimator], LatencyResult],
                     failed: str) -> HardwareResult:
        """``latency(estimator)`` of each target; a device whose latency fails gets NaN and the reason (the candidate is
        then infeasible there)."""
        measures, spreads, errors = {}, {}, []
        for target in targets:
            try:
                result = latency(target.estimator)
                measures[target.measure], spreads[target.measure] = result.median_ms, result.spread_ms
            except Exception as error:  # noqa: BLE001 - any exporter/runtime/lookup failure marks the candidate infeasible
                measures[target.measure] = spreads[target.measure] = math.nan
                errors.append(f"{target.measure} {failed}: {type(error).__name__}: {error}"[:300])
        return HardwareResult(measures, spreads, errors)

    def arch_measures(self) -> list[str]:
        """The latency measures the devices can estimate from the arch alone (the screen stage of the cascade)."""
        return [t.measure for t in self.targets if hasattr(t.estimator, "estimate_arch")]

    def estimate_arch(self, key: str, parts: Sequence, input_shape: tuple[int, ...]) -> HardwareResult:
        """Latency on every device that can estimate it from the arch's parts alone (no network built, nothing exported)."""
        return self._each_device([t for t in self.targets if hasattr(t.estimator, "estimate_arch")],
                                 lambda estimator: estimator.estimate_arch(key, parts, input_shape), "not estimated")

    def arch_calibration_wanted(self) -> int:
        """How many candidates the search should measure end to end (:meth:`recalibrate`) before it relies on estimates
        from the arch (the most any device wants; 0: none)."""
        return max((getattr(t.estimator, "arch_calibration_wanted", 0) for t in self.targets), default=0)

    def recalibrate(self, parts: Mapping[str, Sequence], results: Mapping[str, HardwareResult],
                    input_shape: tuple[int, ...]) -> dict[str, HardwareResult]:
        """Refit every device's estimate from the arch with end-to-end measurements (``results`` of
        :meth:`measure_side_by_side`; key → the arch's ``parts``), then estimate the other keys of ``parts`` again
        (cached too); returns those new estimates."""
        for target in self.targets:
            if not hasattr(target.estimator, "add_arch_measurements"):
                continue
            pairs = [(parts[key], result.measures[target.measure]) for key, result in results.items()
                     if key in parts and math.isfinite(result.measures.get(target.measure, math.nan))]
            if pairs:
                target.estimator.add_arch_measurements(pairs)
        estimates = {key: self.estimate_arch(key, parts[key], input_shape) for key in parts if key not in results}
        for key, estimate in estimates.items():
            entry = self.cache.setdefault(key, {"measures": {}, "spreads": {}, "errors": []})
            entry["measures"].update(estimate.measures)
            entry["spreads"].update(estimate.spreads)
        return estimates

    def measure_side_by_side(self, models: Mapping[str, nn.Module], input_shape: tuple[int, ...]) -> dict[str, HardwareResult]:
        """Every model (key → network) measured on every device that measures (interleaved, one session); key → result.
        The cached values of these keys are replaced. Devices that look latencies up (tables) keep their values."""
        results = {key: HardwareResult({}, {}, []) for key in models}
        for target in self.targets:
            if not hasattr(target.estimator, "measure_many"):
                continue
            measured = target.estimator.measure_many(list(models.values()), [input_shape] * len(models))
            for key, result in zip(models, measured, strict=True):
                results[key].measures[target.measure], results[key].spreads[target.measure] = result.median_ms, result.spread_ms
                entry = self.cache.setdefault(key, {"measures": {}, "spreads": {}, "errors": []})
                entry["measures"][target.measure], entry["spreads"][target.measure] = result.median_ms, result.spread_ms
        return results

    def describe(self) -> str:
        """Every device: its estimator in words and its budget."""
        parts = []
        for t in self.targets:
            budget = f"budget {t.target_latency_ms:.4g} ms" if t.target_latency_ms is not None else "no budget"
            if t.name in self.baseline_latency_ms:
                budget += f" (the baseline's {self.baseline_latency_ms[t.name]:.4g} ms / {self.target_speedup:g})"
            parts.append(f"{t.name}: {t.estimator.describe()}; {budget}")
        return " | ".join(parts)

    def state_dict(self) -> dict:
        state = {"cache": dict(self.cache), "budgets": {t.name: t.target_latency_ms for t in self.targets},
                 "baseline_latency_ms": dict(self.baseline_latency_ms)}
        state["estimators"] = {t.name: t.estimator.state_dict() for t in self.targets if hasattr(t.estimator, "state_dict")}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self.cache = dict(state_dict["cache"])
        self.baseline_latency_ms = dict(state_dict.get("baseline_latency_ms", {}))
        for target in self.targets:
            target.target_latency_ms = state_dict.get("budgets", {}).get(target.name, target.target_latency_ms)
            if target.name in state_dict.get("estimators", {}) and hasattr(target.estimator, "load_state_dict"):
                target.estimator.load_state_dict(state_dict["estimators"][target.name])
