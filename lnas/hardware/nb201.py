"""Published per-device latencies of the 15,625 NAS-Bench-201 cells, as a latency estimator.

Searches over NAS-Bench-201 can thus be benchmarked for devices we do not have: the candidate's key (its cell string,
``|nor_conv_3x3~0|+|...|``) is looked up in ``nb201/nb201_latency.csv`` of the shared data (:func:`lnas.io.data_dir`),
joined by row index with ``nb201/nb201_cifar10.csv``. Sources: HW-NAS-Bench (Li et al., ICLR 2021) and HELP
(Lee et al., NeurIPS 2021); see the data README.
"""

from __future__ import annotations

import csv
import math
from functools import cache
from pathlib import Path

from torch import nn

from lnas.hardware.ort import LatencyResult
from lnas.io import data_dir

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
MEASUREMENT_KEYS = frozenset({"warmup", "runs", "repeats"})


@cache
def load_nb201_latencies(directory: Path) -> dict[str, dict[str, float]]:
    """``{cell string: {column: ms}}`` from the two NAS-Bench-201 files under ``directory`` (``…/nb201``)."""
    for name in ("nb201_cifar10.csv", "nb201_latency.csv"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"NAS-Bench-201 data file {directory / name} not found; set $LNAS_DATA_DIR to the shared data folder")
    with open(directory / "nb201_cifar10.csv", newline="") as f:
        arch_of = {row["idx"]: row["arch_str"].strip() for row in csv.DictReader(f)}
    with open(directory / "nb201_latency.csv", newline="") as f:
        return {arch_of[row["idx"]]: {k: float(v) for k, v in row.items() if k != "idx"} for row in csv.DictReader(f)}


class Nb201LatencyTable:
    """Latency of a NAS-Bench-201 cell on ``device`` (one of :data:`DEVICES`), looked up by its cell string.

    ``warmup``/``runs``/``repeats`` (the measurement settings of the other hardware options, set e.g. by the debug
    overlay) are accepted and ignored: a table is not measured.
    """

    def __init__(self, device: str, data_path: str | Path | None = None, **measurement: int) -> None:
        if device not in DEVICES:
            raise ValueError(f"unknown NAS-Bench-201 device {device!r}; allowed: {sorted(DEVICES)}")
        unknown = set(measurement) - MEASUREMENT_KEYS
        if unknown:
            raise TypeError(f"Nb201LatencyTable got unexpected arguments {sorted(unknown)}; "
                            f"it takes device, data_path and {sorted(MEASUREMENT_KEYS)}")
        self.device = device
        self.column, self.description = DEVICES[device]
        self.table = load_nb201_latencies(Path(data_path) if data_path else data_dir() / "nb201")

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

    def describe(self) -> str:
        return f"{self.description}: published latency, NAS-Bench-201 cell on CIFAR-10 (32x32), batch 1 (nb201_latency.csv, {self.column})"
