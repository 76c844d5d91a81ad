"""Several devices in one search, budgets relative to the baseline, and combinations refused before any work."""

import math

import lightning as L
import pytest
import torch
import yaml
from conftest import FlopsLatency
from hydra.errors import InstantiationException
from torch import nn

from lnas.callbacks import HardwareLatency, ZeroShotSearch
from lnas.data import SyntheticClassificationDataModule
from lnas.predictors import Params
from lnas.spaces import MBConvSpace
from lnas.tasks import ClassificationTask, SupernetModule
from lnas.train import train


def _search(tmp_path, devices: dict, **hardware) -> tuple[ZeroShotSearch, HardwareLatency, SupernetModule]:
    space = MBConvSpace(stages=[{"channels": c, "stride": 2, "depths": [1, 2]} for c in (8, 16, 24, 32)], stem_channels=8, widths=[0.5, 1.0],
                        resolutions=[32, 64])
    module = SupernetModule(space, ClassificationTask(3, head_width=16))
    search = ZeroShotSearch(Params(), num_candidates=12, output_dir=str(tmp_path))
    latency = HardwareLatency(devices, **hardware)
    data = SyntheticClassificationDataModule(image_size=64, num_train=16, num_val=4, num_test=4, batch_size=8)
    L.Trainer(max_epochs=1, callbacks=[search, latency], logger=False, enable_progress_bar=False, enable_model_summary=False,
              default_root_dir=str(tmp_path), num_sanity_val_steps=0, limit_val_batches=0).fit(module, datamodule=data)
    return search, latency, module


def test_every_device_is_an_objective_with_its_own_budget_and_pick(tmp_path):
    devices = {"phone": {"estimator": FlopsLatency(1.0), "target_latency_ms": 6.0},
               "server": {"estimator": FlopsLatency(0.1, offset_ms=0.5), "target_latency_ms": 100.0}}
    search, latency, module = _search(tmp_path, devices)
    board = search.leaderboard
    assert [o.name for o in board.objectives] == ["score", "latency_ms.phone", "latency_ms.server"]
    header = (tmp_path / "leaderboard.csv").read_text().splitlines()[0].split(",")
    assert {"latency_ms.phone", "latency_ms.server"} <= set(header)
    phone, server = search.picks["phone"], search.picks["server"]
    assert phone.measures["latency_ms.phone"] <= 6.0 and server.arch == max(board.candidates(), key=board.objective).arch
    assert phone.score <= server.score and module.space.encode(search.chosen) == phone.arch  # the first device's pick is trained
    picks = yaml.safe_load((tmp_path / "picks.yaml").read_text())
    assert picks["trained"] == "phone" and picks["devices"]["server"]["arch"] == server.arch and picks["devices"]["phone"]["budget_ms"] == 6.0
    for row in board.candidates():  # each latency is the device's own
        flops = row.measures["flops"] / 1e6
        assert row.measures["latency_ms.phone"] == pytest.approx(flops) and row.measures["latency_ms.server"] == pytest.approx(0.1 * flops + 0.5)


def test_a_budget_relative_to_the_baseline_is_its_latency_over_the_speedup(tmp_path):
    hardware = HardwareLatency({"a": {"estimator": FlopsLatency(1.0)}, "b": {"estimator": FlopsLatency(2.0)}}, target_speedup=3.0)
    hardware.set_budgets_from_baseline({"a": 9.0, "b": 30.0})
    assert [c.limit for c in hardware.constraints()] == [3.0, 10.0]
    assert "the baseline's 9 ms / 3" in hardware.describe()
    with pytest.raises(ValueError, match="could not be measured"):
        hardware.set_budgets_from_baseline({"a": math.nan, "b": 1.0})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"devices": {"cpu": {"target_latency_ms": 1.0}}}, "has a budget but no latency estimator"),
    ({"devices": [{"name": "x", "estimator": FlopsLatency(1.0)}, {"name": "x", "estimator": FlopsLatency(2.0)}]}, r"listed more than once: \['x'\]"),
    ({"devices": {"cpu": {"estimator": FlopsLatency(1.0)}}, "target_speedup": 1.0}, "target_speedup must be > 1"),
    ({"devices": {"cpu": {"estimator": FlopsLatency(1.0), "target_latency_ms": 2.0}}, "target_speedup": 2.0}, "set one or the other"),
    ({"devices": {}, "target_speedup": 2.0}, "needs at least one device"),
])
def test_invalid_hardware_is_refused_with_the_allowed_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HardwareLatency(**kwargs)


@pytest.mark.parametrize(("overrides", "message"), [
    (["hardware=nb201"], "only has NAS-Bench-201 cells; use space=nb201"),
    (["search.objectives=[score,memory_mb]"], r"'memory_mb' is provided by nothing.*available: \['score', 'latency'"),
    (["search.objectives=[latency,score]"], "must start with 'score'"),
    (["space=nb201", "hardware=nb201", "hardware.devices.names=[edgegpu,edgegpu]"], r"lists \['edgegpu'\] more than once"),
    (["hardware.target_speedup=1.0"], "target_speedup must be > 1"),
    (["baseline=resnet18", "space=nb201", "hardware=nb201"], "cannot be looked up in the latency tables"),
])
def test_invalid_combinations_are_refused_before_any_work(compose_cfg, tmp_path, overrides, message):
    cfg = compose_cfg("+experiment=classification", "+debug=fast", f"output_dir={tmp_path}", *overrides)
    with pytest.raises((ValueError, InstantiationException), match=message):
        train(cfg)
    assert not any(tmp_path.iterdir()), "nothing is written before the run is refused"


def test_the_nb201_device_table_is_one_config_with_the_device_as_a_value(compose_cfg, tmp_path):
    from hydra.utils import instantiate

    cfg = compose_cfg("space=nb201", "hardware=nb201", "hardware.devices.names=[pixel3,fpga]", "hardware.target_speedup=null",
                      "hardware.devices.target_latency_ms=[20.0,3.0]", f"output_dir={tmp_path}")
    hardware = instantiate(cfg.hardware)
    assert hardware.devices == ["pixel3", "fpga"] and [c.limit for c in hardware.constraints()] == [20.0, 3.0]
    cell = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    result = hardware.evaluate(cell, nn.Identity(), (3, 32, 32))
    assert result.measures["latency_ms.pixel3"] > 0 and result.measures["latency_ms.fpga"] > 0 and not result.errors
    assert torch.isfinite(torch.tensor(list(result.measures.values()))).all()
