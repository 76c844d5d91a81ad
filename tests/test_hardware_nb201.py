import math

import pytest
from torch import nn

from lnas.callbacks import HardwareLatency
from lnas.hardware import Nb201LatencyTable
from lnas.hardware.nb201 import DEVICES
from lnas.io import nb201_table, read_csv_rows


def _rows(name: str) -> dict[str, dict]:
    return {row["idx"]: row for row in read_csv_rows(nb201_table(name))}


def test_every_device_returns_the_published_latency_of_a_cell():
    archs, latencies = _rows("nb201_cifar10.csv"), _rows("nb201_latency.csv")
    for index in ("0", "7777", "15624"):
        arch = archs[index]["arch_str"]
        for device, (column, _) in DEVICES.items():
            expected = float(latencies[index][column])
            if expected >= 0:
                result = Nb201LatencyTable(device).estimate(arch)
                assert result.median_ms == expected and result.method == "table" and column in result.provider


def test_cells_without_a_value_and_unknown_strings_are_infeasible_with_the_reason():
    archs, latencies = _rows("nb201_cifar10.csv"), _rows("nb201_latency.csv")
    missing = next(archs[i]["arch_str"] for i, row in latencies.items() if float(row["edgetpu_ms"]) < 0)
    hardware = HardwareLatency(Nb201LatencyTable("edgetpu"), target_latency_ms=100.0)
    result = hardware.evaluate(missing, nn.Identity(), (3, 32, 32))
    assert not result.feasible and math.isnan(result.latency_ms) and "no valid edgetpu latency" in result.reason
    unknown = hardware.evaluate("k3e4-k5e6", nn.Identity(), (3, 32, 32))
    assert not unknown.feasible and "not a NAS-Bench-201 cell string" in unknown.reason


def test_latency_target_on_a_device_we_do_not_have():
    archs, latencies = _rows("nb201_cifar10.csv"), _rows("nb201_latency.csv")
    fast, slow = sorted(archs, key=lambda i: float(latencies[i]["raspi4_ms"]))[:: len(archs) - 1]
    budget = (float(latencies[fast]["raspi4_ms"]) + float(latencies[slow]["raspi4_ms"])) / 2
    hardware = HardwareLatency(Nb201LatencyTable("raspi4"), target_latency_ms=budget)
    assert hardware.evaluate(archs[fast]["arch_str"], nn.Identity(), (3, 32, 32)).feasible
    assert not hardware.evaluate(archs[slow]["arch_str"], nn.Identity(), (3, 32, 32)).feasible


def test_bad_arguments_name_the_allowed_ones():
    with pytest.raises(ValueError, match="raspi4"):
        Nb201LatencyTable("no_such_device")
    with pytest.raises(TypeError, match="warmup"):
        Nb201LatencyTable("raspi4", threads=2)
    assert Nb201LatencyTable("raspi4", warmup=2, runs=5, repeats=2).device == "raspi4"  # the debug overlay's keys
    with pytest.raises(FileNotFoundError, match="/nonexistent/nb201_cifar10.csv not found: the folder given must hold"):
        Nb201LatencyTable("raspi4", data_path="/nonexistent")
