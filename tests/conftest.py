"""Shared fixtures: the real Hydra configs composed as in ``python -m lnas.train``, and the shared data lnas does not ship."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from torch import nn

from lnas.hardware.cost import count_flops
from lnas.hardware.ort import LatencyResult
from lnas.io import data_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REQUIRE_SHARED_DATA_ENV = "LNAS_REQUIRE_SHARED_DATA"
QUICK_LATENCY = [f"hardware.devices.cpu.estimator.{name}={value}"
                 for name, value in (("warmup", 1), ("runs", 2), ("repeats", 1), ("calibration_size", 2))]
"""Overrides for runs on the default ``hardware=lut_cpu`` whose latency values do not matter (a few runs instead of the
protocol, two candidates measured to calibrate the table)."""


@pytest.fixture
def shared_data_file() -> Callable[[str], Path]:
    """``shared_data_file("cifar10/cifar10_train_1000.npz")``: that file of the shared benchmark data (:func:`lnas.io.data_dir`).

    When it is missing the test is skipped, with a reason that names the file and the setting that provides it; with
    ``LNAS_REQUIRE_SHARED_DATA=1`` (set by ``.ci/run``, where the data is always there) the test fails instead.
    """

    def _find(relative_path: str) -> Path:
        path = data_dir() / relative_path
        if path.is_file():
            return path
        message = f"needs {path}: set LNAS_DATA_DIR to the folder holding {relative_path} (default ../shared/data beside the checkout)"
        if os.environ.get(REQUIRE_SHARED_DATA_ENV) == "1":
            pytest.fail(f"{message}; {REQUIRE_SHARED_DATA_ENV}=1 makes a missing shared data file a failure")
        pytest.skip(message)

    return _find


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    """Compose ``train.yaml`` with overrides (``output_dir`` must be given: no Hydra run dir in tests)."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_module("lnas.conf", version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides))

    return _compose


@pytest.fixture
def fast_detection(compose_cfg, tmp_path: Path) -> Callable[..., DictConfig]:
    """The detection experiment shrunk by ``+debug=fast``, writing into ``tmp_path``."""
    return lambda *extra: compose_cfg("+experiment=detection", "+debug=fast", f"output_dir={tmp_path}", *extra)


def hardware_reasons(hardware, result, **measures) -> list[str]:
    """Why a candidate with ``hardware``'s ``result`` (and further ``measures``, e.g. params) breaks ``hardware``'s constraints."""
    from lnas.search import Candidate, Leaderboard, Objective

    board = Leaderboard([Objective("score", "maximize")], hardware.constraints())
    return board.reasons(Candidate("candidate", {**result.measures, **measures}, errors=result.errors))


class FlopsLatency:
    """A test device whose latency is ``ms_per_mflop`` x MFLOPs + ``offset_ms``: deterministic, so budgets act exactly."""

    def __init__(self, ms_per_mflop: float, offset_ms: float = 0.0) -> None:
        self.ms_per_mflop, self.offset_ms = ms_per_mflop, offset_ms

    def _result(self, ms: float, input_shape) -> LatencyResult:
        return LatencyResult(ms, 0.0, [ms], "test", 1, 1, 1, tuple(input_shape), "", "test device", "table")

    def estimate(self, key: str, model: nn.Module, input_shape: tuple[int, ...]) -> LatencyResult:
        return self._result(self.ms_per_mflop * count_flops(model, input_shape) / 1e6 + self.offset_ms, input_shape)

    def describe(self) -> str:
        return f"{self.ms_per_mflop} ms per MFLOP"


class MeasuringFlopsLatency(FlopsLatency):
    """:class:`FlopsLatency` that also measures side by side (the finalists' stage): ``measured_factor`` times its estimate."""

    def __init__(self, ms_per_mflop: float, offset_ms: float = 0.0, measured_factor: float = 1.0) -> None:
        super().__init__(ms_per_mflop, offset_ms)
        self.measured_factor, self.measured = measured_factor, 0

    def measure_many(self, models, input_shapes) -> list[LatencyResult]:
        self.measured += len(models)
        return [self._result(self.measured_factor * self.estimate("", m, s).median_ms, s) for m, s in zip(models, input_shapes, strict=True)]


@pytest.fixture(scope="session")
def generated_data_dir(tmp_path_factory) -> Path:
    """A data folder whose ``cifar10/cifar10_train_1000.npz`` holds random images in the shared file's layout (100 per class)."""
    root = tmp_path_factory.mktemp("data")
    (root / "cifar10").mkdir()
    generator = np.random.default_rng(0)
    np.savez(root / "cifar10" / "cifar10_train_1000.npz", x=generator.integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8),
             y=np.repeat(np.arange(10, dtype=np.int64), 100))
    return root
