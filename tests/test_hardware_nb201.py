import math

import pytest
from conftest import hardware_reasons
from torch import nn

from lnas.callbacks import HardwareLatency
from lnas.hardware import Nb201LatencyTable
from lnas.hardware.nb201 import DEVICES, table_devices
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
    hardware = HardwareLatency(table_devices(["edgetpu"], 100.0))
    result = hardware.evaluate(missing, nn.Identity(), (3, 32, 32))
    assert math.isnan(result.measures["latency_ms.edgetpu"]) and "no valid edgetpu latency" in hardware_reasons(hardware, result)[0]
    unknown = hardware.evaluate("k3e4-k5e6", nn.Identity(), (3, 32, 32))
    assert "not a NAS-Bench-201 cell string" in hardware_reasons(hardware, unknown)[0]


def test_latency_target_on_a_device_we_do_not_have():
    archs, latencies = _rows("nb201_cifar10.csv"), _rows("nb201_latency.csv")
    fast, slow = sorted(archs, key=lambda i: float(latencies[i]["raspi4_ms"]))[:: len(archs) - 1]
    budget = (float(latencies[fast]["raspi4_ms"]) + float(latencies[slow]["raspi4_ms"])) / 2
    hardware = HardwareLatency(table_devices(["raspi4"], budget))
    assert hardware_reasons(hardware, hardware.evaluate(archs[fast]["arch_str"], nn.Identity(), (3, 32, 32))) == []
    assert hardware_reasons(hardware, hardware.evaluate(archs[slow]["arch_str"], nn.Identity(), (3, 32, 32)))


def test_bad_arguments_name_the_allowed_ones():
    with pytest.raises(ValueError, match="raspi4"):
        Nb201LatencyTable("no_such_device")
    with pytest.raises(TypeError, match="threads"):
        Nb201LatencyTable("raspi4", threads=2)
    with pytest.raises(ValueError, match="3 budgets for 2 devices"):
        table_devices(["raspi4", "fpga"], [1.0, 2.0, 3.0])
    with pytest.raises(FileNotFoundError, match="/nonexistent/nb201_cifar10.csv not found: the folder given must hold"):
        Nb201LatencyTable("raspi4", data_path="/nonexistent")
