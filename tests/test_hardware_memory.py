from conftest import hardware_reasons
from torch import nn

from lnas.callbacks import HardwareLatency
from lnas.hardware import OrtLatencyEstimator, count_flops, count_params, peak_activation_bytes

FLOAT = 4


def _chain(inplace: bool) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(inplace=inplace), nn.Conv2d(8, 4, 1, bias=False))


def test_peak_activation_memory_of_a_chain_with_a_known_answer():
    pixels = 8 * 8
    given, hidden, out = 3 * pixels * FLOAT, 8 * pixels * FLOAT, 4 * pixels * FLOAT
    # in place: input + conv1 output + conv2 output are alive together during conv2
    assert peak_activation_bytes(_chain(inplace=True), (3, 8, 8)) == given + hidden + out
    # out of place: during ReLU the input, conv1's output and ReLU's output are alive together
    assert peak_activation_bytes(_chain(inplace=False), (3, 8, 8)) == given + 2 * hidden
    assert peak_activation_bytes(_chain(inplace=True), (3, 8, 8), batch_size=4) == 4 * (given + hidden + out)


def test_parameters_and_views_are_not_counted():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))  # flatten is a view; linear transposes its weight
    assert peak_activation_bytes(model, (3, 8, 8)) == (3 * 8 * 8 + 10) * FLOAT


def test_memory_params_and_flops_bounds_make_candidates_infeasible():
    quick = OrtLatencyEstimator(warmup=1, runs=3, repeats=2)
    model = _chain(inplace=True)
    costs = {"params": float(count_params(model)), "flops": float(count_flops(model, (3, 8, 8)))}
    tight = HardwareLatency({"cpu": {"estimator": quick}}, max_activation_mb=1e-4, max_params=10, max_mflops=1e-3)
    result = tight.evaluate("chain", model, (3, 8, 8))
    assert result.measures["latency_ms.cpu"] > 0 and result.measures["memory_mb"] > 1e-4
    reasons = " ".join(hardware_reasons(tight, result, **costs))
    assert "memory_mb" in reasons and "params" in reasons and "flops" in reasons
    loose = HardwareLatency({"cpu": {"estimator": quick}}, max_activation_mb=1.0, max_params=10**6, max_mflops=10.0)
    assert hardware_reasons(loose, loose.evaluate("chain", model, (3, 8, 8)), **costs) == []
