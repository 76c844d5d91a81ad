import math

import pytest
import torch
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
    hardware = HardwareLatency(OrtLatencyEstimator(**QUICK), target_latency_ms=10.0)
    result = hardware.evaluate("broken", _NotExportable(), (3, 8, 8))
    assert not result.feasible and math.isnan(result.latency_ms)
    assert "latency not measured" in result.reason and len(result.reason) > 25


def test_target_latency_rejects_slow_candidates_and_validates_input():
    hardware = HardwareLatency(OrtLatencyEstimator(**QUICK), target_latency_ms=1e-6)
    result = hardware.evaluate("conv", nn.Conv2d(3, 4, 3), (3, 32, 32))
    assert not result.feasible and "> target" in result.reason and result.latency_ms > 0
    with pytest.raises(ValueError, match="target_latency_ms"):
        HardwareLatency(OrtLatencyEstimator(**QUICK), target_latency_ms=-1)


def test_flops_of_a_convolution():
    # 2 FLOPs per MAC: out 4x6x6 positions, each 3*3*3 MACs
    assert count_flops(nn.Conv2d(3, 4, 3, bias=False), (3, 8, 8)) == 2 * 4 * 6 * 6 * 27
