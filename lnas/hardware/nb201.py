"""Published per-device latencies of the 15,625 NAS-Bench-201 cells, as a latency estimator.

Searches over NAS-Bench-201 can thus be benchmarked for devices we do not have: the candidate's key (its cell string,
``|nor_conv_3x3~0|+|...|``) is looked up in ``nb201_latency.csv``, joined by row index with ``nb201_cifar10.csv``: the
tables shipped with lnas, or those :func:`lnas.io.nb201_table` finds instead. Sources: HW-NAS-Bench (Li et al., ICLR 2021)
and HELP (Lee et al., NeurIPS 2021); see ``lnas/tables/nb201/README.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from lnas.hardware.ort import LatencyResult
from lnas.io import nb201_table, read_csv_rows
from lnas.spaces.base import SearchSpace
from lnas.spaces.nb201 import NB201Space

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

# option name -> (column, device) ; CIFAR-10 input, batch 1
DEVICES: dict[str, tuple[str, str]] = {
    "edgegpu": ("edgegpu_ms", "NVIDIA Jetson TX2 edge GPU (HW-NAS-Bench)"),
    "raspi4": ("raspi4_ms", "Raspberry Pi 4 (HW-NAS-Bench)"),
    "edgetpu": ("edgetpu_ms", "Google Edge TPU (HW-NAS-Bench)"),
    "pixel3": ("pixel3_ms", "Google Pixel 3 (HW-NAS-Bench)"),
    "eyeriss": ("eyeriss_ms", "Eyeriss ASIC (HW-NAS-Bench)"),
    "fpga": ("fpga_ms", "FPGA (HW-NAS-Bench)"),
    "gold_6226": ("gold_6226_ms", "Intel Xeon Gold 6226 CPU (HELP)"),
    "titan_rtx": ("titan_rtx_1_ms", "NVIDIA Titan RTX, batch 1 (HELP)"),
    "pixel2": ("pixel2_ms", "Google Pixel 2 (HELP)"),
}


def load_nb201_latencies(directory: str | Path | None = None) -> dict[str, dict[str, float]]:
    """``{cell string: {column: ms}}`` from the two NAS-Bench-201 tables (:func:`lnas.io.nb201_table`; ``directory``, when
    given, is the folder holding both)."""
    return _join(nb201_table("nb201_cifar10.csv", directory), nb201_table("nb201_latency.csv", directory))


@cache
def _join(cells: Path | Traversable, latencies: Path | Traversable) -> dict[str, dict[str, float]]:
    arch_of = {row["idx"]: row["arch_str"].strip() for row in read_csv_rows(cells)}
    return {arch_of[row["idx"]]: {k: float(v) for k, v in row.items() if k != "idx"} for row in read_csv_rows(latencies)}


class Nb201LatencyTable:
    """Latency of a NAS-Bench-201 cell on ``device`` (one of :data:`DEVICES`), looked up by its cell string."""

    def __init__(self, device: str, data_path: str | Path | None = None) -> None:
        if device not in DEVICES:
            raise ValueError(f"unknown NAS-Bench-201 device {device!r}; allowed: {sorted(DEVICES)}")
        self.device = device
        self.column, self.description = DEVICES[device]
        self.table = load_nb201_latencies(data_path or None)

    def latency_ms(self, arch: str) -> float:
        """Published latency (ms) of the cell ``arch``; raises for a string that is not a cell or a cell without a value."""
        row = self.table.get(arch.strip())
        if row is None:
            raise KeyError(f"{arch!r} is not a NAS-Bench-201 cell string (format: |nor_conv_3x3~0|+|op~0|op~1|+|op~0|op~1|op~2|)")
        value = row[self.column]
        if not value >= 0 or math.isnan(value):
            raise ValueError(f"the NAS-Bench-201 table has no valid {self.device} latency for {arch!r} (value {value})")
        return value

    def estimate(self, key: str, model: nn.Module | None = None, input_shape: tuple[int, ...] = (3, 32, 32)) -> LatencyResult:
        """Look ``key`` up; ``model`` and ``input_shape`` are not needed (the table was measured on CIFAR-10, batch 1)."""
        return LatencyResult(median_ms=self.latency_ms(key), spread_ms=0.0, block_medians_ms=[], provider=f"NAS-Bench-201 table ({self.column})",
                             intra_op_threads=0, inter_op_threads=0, batch_size=1, input_shape=(3, 32, 32), ort_version="",
                             fingerprint=self.description, method="table")

    def estimate_arch(self, key: str, parts=None, input_shape: tuple[int, ...] = (3, 32, 32)) -> LatencyResult:
        """The same look-up: a table needs only the cell's string (the screen stage of the cascade uses it)."""
        return self.estimate(key)

    def describe(self) -> str:
        return f"{self.description}: published latency, NAS-Bench-201 cell on CIFAR-10 (32x32), batch 1 (nb201_latency.csv, {self.column})"

    def check_space(self, space: SearchSpace) -> None:
        """Refuse a space whose candidates are not NAS-Bench-201 cells: the table has no latency for them."""
        if not isinstance(space, NB201Space):
            raise ValueError(f"hardware device {self.device!r} looks latencies up in the NAS-Bench-201 table, which only has "
                             f"NAS-Bench-201 cells; use space=nb201 with it, or a measuring estimator (hardware=ort_cpu|lut_cpu|ort_cuda) "
                             f"with space={type(space).__name__}")


def table_devices(names: Sequence[str], target_latency_ms: float | Sequence[float | None] | None = None,
                  data_path: str | Path | None = None) -> dict[str, dict]:
    """NAS-Bench-201 devices for :class:`~lnas.callbacks.HardwareLatency`: name → ``{estimator, target_latency_ms}``.

    ``target_latency_ms``: one budget for all, one per device (in the order of ``names``), or None.
    """
    names = [str(n) for n in names]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"hardware.devices.names lists {duplicates} more than once; list each device once (allowed: {sorted(DEVICES)})")
    budgets = list(target_latency_ms) if isinstance(target_latency_ms, Sequence) else [target_latency_ms] * len(names)
    if len(budgets) != len(names):
        raise ValueError(f"hardware.devices.target_latency_ms has {len(budgets)} budgets for {len(names)} devices {names}: give one per device")
    return {name: {"estimator": Nb201LatencyTable(name, data_path), "target_latency_ms": budget} for name, budget in zip(names, budgets, strict=True)}
