import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lnas.callbacks import HardwareLatency
from lnas.hardware import LutLatencyPredictor, decompose, fit_calibration
from lnas.hardware.blocks import block_key, glue_key
from lnas.hardware.calibration import Calibration, CalibrationPoint
from lnas.hardware.lut import part_key

QUICK = {"warmup": 1, "runs": 3, "repeats": 2}


class Residual(nn.Module):
    """A custom block (height 2): conv-bn-relu chain plus a residual add in its own forward."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
        self._calls = 0  # private: not part of the configuration

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._calls += 1
        return x + self.body(x)


class Merge(nn.Module):
    """Called with two tensors: cannot be measured alone, so its children are measured instead."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + y


class Net(nn.Module):
    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
        self.blocks = nn.ModuleList([Residual(channels), Residual(channels)])
        self.merge = Merge(channels)
        self.shared = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        a = self.blocks[1](self.blocks[0](x))
        y = self.shared(self.merge(a, x))
        return y, self.shared(F.avg_pool2d(y, 2))


class Resized(nn.Module):
    """Code outside any block (an input resize) whose cost depends on a plain attribute."""

    def __init__(self, size: int, channels: int = 8) -> None:
        super().__init__()
        self.size, self.net = size, Net(channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(F.interpolate(x, size=self.size))


def test_decompose_cuts_a_custom_model_into_its_blocks_and_calls():
    calls = decompose(Net(), (3, 16, 16))
    assert [c.name for c in calls] == ["stem", "blocks.0", "blocks.1", "merge.conv", "shared", "shared"]
    assert [c.input_shape for c in calls] == [(3, 16, 16)] + [(8, 16, 16)] * 4 + [(8, 8, 8)]
    by_name = {c.name: c for c in calls}
    assert by_name["blocks.0"].key == by_name["blocks.1"].key  # same configuration, same input shape
    assert calls[4].key != calls[5].key  # same module, another input shape
    assert by_name["stem"].key != by_name["blocks.0"].key


def test_block_keys_follow_configuration_not_weights():
    a, b, wider = Residual(8), Residual(8), Residual(16)
    with torch.no_grad():
        b.body[0].weight.add_(1.0)
    assert block_key(a, (8, 4, 4)) == block_key(b, (8, 4, 4))
    assert block_key(a, (8, 4, 4)) != block_key(wider, (16, 4, 4)) != block_key(wider, (16, 8, 8))


def test_block_granularity_is_configurable():
    leaves = decompose(Net(), (3, 16, 16), max_height=0)
    assert all(next(c.module.children(), None) is None for c in leaves) and len(leaves) > 6
    coarse = decompose(Net(), (3, 16, 16), max_height=0, block_types=(Residual,))
    assert [c.name for c in coarse if isinstance(c.module, Residual)] == ["blocks.0", "blocks.1"]


def test_known_blocks_are_not_run_again_when_decomposing():
    model, shapes = Net(), {}
    first = decompose(model, (3, 16, 16), output_shapes=shapes)
    runs = model.blocks[0]._calls
    again = decompose(model, (3, 16, 16), output_shapes=shapes)
    assert model.blocks[0]._calls == runs and [(c.name, c.key) for c in again] == [(c.name, c.key) for c in first]


def test_glue_key_names_what_the_code_between_blocks_depends_on():
    def key(model: nn.Module) -> str:
        return glue_key(model, decompose(model, (3, 16, 16)), (3, 16, 16))

    assert key(Resized(8)) == key(Resized(8)) != key(Resized(12))
    assert key(Resized(8, channels=4)) == key(Resized(8, channels=16))  # other blocks, same glue
    assert key(Net()) != key(Resized(8))


def test_calibration_fits_an_offset_per_glue():
    offsets = {"small": 0.2, "large": 0.5}
    points = [CalibrationPoint(s, 4, 1.1 * s + offset, glue) for glue, offset in offsets.items() for s in (1.0, 2.0, 3.0)]
    fitted = fit_calibration(points)
    assert fitted(2.0, 4, "small") == pytest.approx(2.4, abs=1e-3) and fitted(2.0, 4, "large") == pytest.approx(2.7, abs=1e-3)
    assert fitted(2.0, 4, "never measured") == pytest.approx(2.2 + 0.35, abs=1e-3)


def test_calibration_recovers_a_linear_overhead():
    truth = (0.8, 0.05, 0.3)
    sizes = [(1, 3), (2, 5), (4, 4), (3, 9), (6, 7), (5, 2), (8, 11), (7, 1), (2, 12), (9, 6), (3, 3), (4, 10), (6, 2), (1, 8), (5, 5), (8, 4)]
    points = [CalibrationPoint(s, n, truth[0] * s + truth[1] * n + truth[2]) for s, n in sizes]
    fitted = fit_calibration(points)
    assert (fitted.scale, fitted.per_block_ms, fitted.offset_ms) == pytest.approx(truth, abs=1e-3)
    single = fit_calibration(points[:1])
    assert single.per_block_ms == single.offset_ms == 0 and single(1, 3) == pytest.approx(points[0].measured_ms)
    assert fit_calibration([])(2.5, 4) == 2.5


def test_table_is_cached_on_disk_per_hardware_and_runtime_settings(tmp_path):
    lut = LutLatencyPredictor(**QUICK, cache_dir=tmp_path)
    blocks = lut.blocks(Net(), (3, 16, 16))
    assert lut.fill(blocks) == len({b.key for b in blocks}) and lut.fill(blocks) == 0
    reloaded = LutLatencyPredictor(**QUICK, cache_dir=tmp_path)
    assert reloaded.table == lut.table and reloaded.fill(blocks) == 0
    assert all(entry["ms"] > 0 for entry in lut.table.values())
    other_settings = LutLatencyPredictor(**QUICK, cache_dir=tmp_path, statistic="min")
    assert other_settings.table_path != lut.table_path and other_settings.table == {}


def test_predictions_order_models_and_calibration_candidates_are_measured(tmp_path):
    lut = LutLatencyPredictor(**QUICK, cache_dir=tmp_path, calibration_size=2)
    small, large = Net(4), Net(64)
    first, second = lut.estimate("a", small, (3, 32, 32)), lut.estimate("b", large, (3, 32, 32))
    assert first.method == second.method == "measured" and len(lut.points) == 2
    predicted_small, predicted_large = lut.estimate("a", small, (3, 32, 32)), lut.estimate("b", large, (3, 32, 32))
    assert predicted_small.method == "lut" and predicted_large.median_ms > 3 * predicted_small.median_ms
    assert predicted_small.provider == "CPUExecutionProvider" and predicted_small.fingerprint
    assert lut.estimate("c", Resized(24), (3, 32, 32)).method == "measured"  # its glue was never measured
    restored = LutLatencyPredictor(**QUICK, cache_dir=tmp_path)
    restored.load_state_dict(lut.state_dict())
    assert restored.calibration == lut.calibration and restored.candidates_seen == 5


def test_hardware_latency_uses_the_table_and_caches_by_key(tmp_path):
    lut = LutLatencyPredictor(**QUICK, cache_dir=tmp_path, calibration_size=0)
    hardware = HardwareLatency({"cpu": {"estimator": lut, "target_latency_ms": 1e6}})
    result = hardware.evaluate("net", Net(), (3, 16, 16))
    assert result.measures["latency_ms.cpu"] > 0 and not result.errors and lut.candidates_seen == 1
    assert hardware.evaluate("net", nn.Identity(), (3, 16, 16)) == result and lut.candidates_seen == 1  # cached by key
    assert "cpu" in hardware.state_dict()["estimators"]


def _staged_parts(width: float, shape=(3, 32, 32)):
    from lnas.spaces import MBConvSpace

    space = MBConvSpace(stages=[{"channels": c, "stride": 2, "depths": [1, 2]} for c in (8, 16, 24, 32)], stem_channels=8, widths=[0.5, 1.0],
                        kernels=[3], expands=[3])
    arch = space.decode(space.encode(space.default() | {f"stage{i}.width": width for i in range(1, 5)}))
    return space, arch, space.parts(arch, shape)


def test_estimates_from_the_arch_look_parts_up_and_have_a_calibration_of_their_own(tmp_path):
    lut = LutLatencyPredictor(**QUICK, cache_dir=tmp_path, calibration_size=3)
    space, narrow, narrow_parts = _staged_parts(0.5)
    _, wide, wide_parts = _staged_parts(1.0)
    assert lut.arch_calibration_wanted == 3
    raw = lut.estimate_arch("narrow", narrow_parts, (3, 32, 32))
    assert raw.method == "lut" and len(lut.table) == len({repr(p.key) for p in narrow_parts})  # each part measured once
    assert raw.median_ms == pytest.approx(lut.table_sum([part_key(p) for p in narrow_parts])[0])  # uncalibrated: the raw sum
    lut.estimate_arch("wide", wide_parts, (3, 32, 32))
    size = len(lut.table)
    models = [space.build(narrow), space.build(wide)]
    measured = [r.median_ms for r in lut.measure_many(models, [(3, 32, 32)] * 2)]
    lut.add_arch_measurements([(narrow_parts, measured[0]), (wide_parts, measured[1])])
    assert lut.arch_calibration_wanted == 0 and lut.points == [] and len(lut.table) == size  # nothing measured twice
    sums = [lut.table_sum([part_key(p) for p in parts])[0] for parts in (narrow_parts, wide_parts)]
    assert lut.arch_calibration.scale == pytest.approx(statistics.median(m / s for m, s in zip(measured, sums, strict=True)))
    calibrated = [lut.estimate_arch(k, parts, (3, 32, 32)).median_ms for k, parts in (("n", narrow_parts), ("w", wide_parts))]
    assert calibrated == pytest.approx([lut.arch_calibration.scale * s for s in sums])  # two points fit the scale alone
    assert lut.calibration == Calibration()  # that of decomposed networks is untouched
    restored = LutLatencyPredictor(**QUICK, cache_dir=tmp_path)
    restored.load_state_dict(lut.state_dict())
    assert restored.arch_calibration == lut.arch_calibration and restored.arch_calibration_wanted == 0
    assert "from the arch's parts: calibrated on 2 measured candidates" in lut.describe()


def test_hardware_recalibrates_from_measurements_and_estimates_the_others_again(tmp_path):
    lut = LutLatencyPredictor(**QUICK, cache_dir=tmp_path, calibration_size=1)
    hardware = HardwareLatency({"cpu": {"estimator": lut, "target_latency_ms": 1e6}})
    space, narrow, narrow_parts = _staged_parts(0.5)
    _, wide, wide_parts = _staged_parts(1.0)
    before = hardware.evaluate("wide", space.build(wide), (3, 32, 32), wide_parts).measures["latency_ms.cpu"]
    assert hardware.arch_calibration_wanted() == 1 and before == pytest.approx(lut.table_sum([part_key(p) for p in wide_parts])[0])
    results = hardware.measure_side_by_side({"narrow": space.build(narrow)}, (3, 32, 32))
    estimates = hardware.recalibrate({"narrow": narrow_parts, "wide": wide_parts}, results, (3, 32, 32))
    assert set(estimates) == {"wide"} and hardware.arch_calibration_wanted() == 0
    after = estimates["wide"].measures["latency_ms.cpu"]
    assert after == pytest.approx(lut.arch_calibration.scale * before) and after != before
    assert hardware.evaluate("wide", nn.Identity(), (3, 32, 32)).measures["latency_ms.cpu"] == after  # the cache holds the new estimate
    broken = hardware.evaluate("broken", nn.Identity(), (3, 32, 32), [narrow_parts[0].__class__("bad", nn.Identity, lambda: (1, 2))])
    assert "not measured" in broken.errors[0] and broken.measures["latency_ms.cpu"] != broken.measures["latency_ms.cpu"]  # NaN


def test_hardware_needs_the_network_only_when_a_device_measures_it(tmp_path):
    lut = LutLatencyPredictor(**QUICK, cache_dir=tmp_path)
    space, narrow, narrow_parts = _staged_parts(0.5)
    from_parts = HardwareLatency({"cpu": {"estimator": lut}})
    assert not from_parts.needs_network("narrow", narrow_parts) and from_parts.needs_network("narrow", None)
    estimate = from_parts.evaluate("narrow", None, (3, 32, 32), narrow_parts).measures["latency_ms.cpu"]
    assert estimate == pytest.approx(lut.estimate_arch("narrow", narrow_parts, (3, 32, 32)).median_ms)
    assert not from_parts.needs_network("narrow", None)  # cached by key
    with pytest.raises(ValueError, match="needs the network"):
        from_parts.evaluate("other", None, (3, 32, 32))
    bounded = HardwareLatency({"cpu": {"estimator": lut}}, max_activation_mb=10.0)
    assert bounded.needs_network("narrow", narrow_parts)  # peak memory is taken from the network
