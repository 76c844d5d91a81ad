import importlib.util
import math
import os

import pytest
import torch
from conftest import hardware_reasons
from torch import nn

from lnas.callbacks import HardwareLatency
from lnas.hardware import OrtLatencyEstimator, check_onnx_matches, count_flops, export_onnx
from lnas.spaces import MBConvSpace

STAGES = [{"channels": 16, "stride": 2, "depths": [1, 2]}, {"channels": 24, "stride": 2, "depths": [1, 2]}]
QUICK = {"warmup": 1, "runs": 3, "repeats": 2}


@pytest.mark.parametrize("seed", range(3))
def test_random_extracted_subnets_export_and_match_in_onnx_runtime(tmp_path, seed):
    space = MBConvSpace(stages=STAGES, stem_channels=8, out_indices=[0, 1])
    arch = space.sample(torch.Generator().manual_seed(seed))
    subnet = space.supernet().extract(arch).eval()
    path = export_onnx(subnet, (3, 32, 32), tmp_path / "subnet.onnx")
    assert check_onnx_matches(subnet, path, torch.randn(3, 3, 32, 32)) < 1e-4


def test_check_onnx_matches_detects_a_different_model(tmp_path):
    model = nn.Conv2d(3, 4, 3)
    path = export_onnx(model, (3, 8, 8), tmp_path / "m.onnx")
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(AssertionError, match="differs"):
        check_onnx_matches(model, path, torch.randn(1, 3, 8, 8))


def test_latency_orders_a_small_and_a_much_larger_model():
    estimator = OrtLatencyEstimator(**QUICK)
    small = nn.Conv2d(3, 4, 1)
    large = nn.Sequential(*(nn.Conv2d(64 if i else 3, 64, 3, padding=1) for i in range(6)))
    result_small, result_large = estimator.measure(small, (3, 64, 64)), estimator.measure(large, (3, 64, 64))
    assert result_large.median_ms > 5 * result_small.median_ms
    assert result_small.provider == "CPUExecutionProvider" and result_small.intra_op_threads == 1
    assert result_small.input_shape == (3, 64, 64) and result_small.ort_version and result_small.fingerprint
    assert len(result_small.block_medians_ms) == 2 and result_small.spread_ms >= 0


def test_unavailable_provider_lists_the_available_ones():
    with pytest.raises(ValueError, match="CPUExecutionProvider"):
        OrtLatencyEstimator(provider="NoSuchExecutionProvider")


class _NotExportable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > -1e30:  # data-dependent Python control flow plus an op without an ONNX symbolic
            return torch.linalg.svd(x.flatten(1)).S
        return x


def test_export_failure_marks_the_candidate_infeasible_with_the_reason():
    hardware = HardwareLatency({"cpu": {"estimator": OrtLatencyEstimator(**QUICK), "target_latency_ms": 10.0}})
    result = hardware.evaluate("broken", _NotExportable(), (3, 8, 8))
    reasons = hardware_reasons(hardware, result)
    assert math.isnan(result.measures["latency_ms.cpu"]) and reasons
    assert "latency_ms.cpu not measured" in reasons[0] and len(reasons[0]) > 35


def test_target_latency_rejects_slow_candidates_and_validates_input():
    hardware = HardwareLatency({"cpu": {"estimator": OrtLatencyEstimator(**QUICK), "target_latency_ms": 1e-6}})
    result = hardware.evaluate("conv", nn.Conv2d(3, 4, 3), (3, 32, 32))
    assert result.measures["latency_ms.cpu"] > 0 and hardware_reasons(hardware, result)[0].endswith("> 1e-06")
    with pytest.raises(ValueError, match="target_latency_ms"):
        HardwareLatency({"cpu": {"estimator": OrtLatencyEstimator(**QUICK), "target_latency_ms": -1}})


def test_flops_of_a_convolution():
    # 2 FLOPs per MAC: out 4x6x6 positions, each 3*3*3 MACs
    assert count_flops(nn.Conv2d(3, 4, 3, bias=False), (3, 8, 8)) == 2 * 4 * 6 * 6 * 27


def test_exporters_legacy_by_default_dynamo_on_request(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    legacy = export_onnx(model, (3, 16, 16), tmp_path / "legacy.onnx")
    assert check_onnx_matches(model, legacy, torch.randn(3, 3, 16, 16)) < 1e-4
    with pytest.raises(ValueError, match="legacy"):
        export_onnx(model, (3, 16, 16), tmp_path / "x.onnx", exporter="torchscript")
    if importlib.util.find_spec("onnxscript") is None:  # the dynamo exporter needs onnxscript, not a dependency of lnas
        with pytest.raises(ImportError, match="onnxscript"):
            export_onnx(model, (3, 16, 16), tmp_path / "dynamo.onnx", exporter="dynamo")
    else:
        dynamo = export_onnx(model, (3, 16, 16), tmp_path / "dynamo.onnx", exporter="dynamo")
        assert check_onnx_matches(model, dynamo, torch.randn(3, 3, 16, 16)) < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) in (["legacy.onnx"], ["dynamo.onnx", "legacy.onnx"])  # single files


def test_interleaved_measurement_of_several_models_keeps_their_order(tmp_path):
    small = export_onnx(nn.Conv2d(3, 4, 1), (3, 64, 64), tmp_path / "small.onnx")
    large = export_onnx(nn.Sequential(*(nn.Conv2d(64 if i else 3, 64, 3, padding=1) for i in range(6))), (3, 64, 64), tmp_path / "large.onnx")
    estimator = OrtLatencyEstimator(**QUICK, statistic="min", pin_cpu=sorted(os.sched_getaffinity(0))[-1])
    affinity = os.sched_getaffinity(0)
    result_small, result_large, again_small = estimator.measure_onnx_many([small, large, small], [(3, 64, 64)] * 3)
    assert os.sched_getaffinity(0) == affinity  # pinning is undone
    assert result_large.median_ms > 5 * max(result_small.median_ms, again_small.median_ms)
    assert result_large.median_ms == min(result_large.block_medians_ms) and len(result_large.block_medians_ms) == QUICK["repeats"]
    with pytest.raises(ValueError, match="allowed cores"):
        OrtLatencyEstimator(**QUICK, pin_cpu=10**6).measure_onnx(small, (3, 64, 64))
    with pytest.raises(ValueError, match="median"):
        OrtLatencyEstimator(statistic="mean")
