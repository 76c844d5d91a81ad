"""BatchNorm with a closed-form double backward: the same values, gradients and second derivatives as PyTorch's."""

import copy

import pytest
import torch
from torch import nn

from lnas.predictors.batchnorm_hessian import with_closed_form_batch_norm_hessian

CASES = {
    "1d-features": (nn.BatchNorm1d, (7, 3)),
    "1d-sequence": (nn.BatchNorm1d, (5, 3, 4)),
    "2d": (nn.BatchNorm2d, (4, 3, 3, 5)),
    "3d": (nn.BatchNorm3d, (3, 2, 2, 3, 4)),
}


def derivatives(norm: nn.Module, x: torch.Tensor, weights: torch.Tensor, direction: torch.Tensor) -> list[torch.Tensor]:
    """Output, first derivatives (input and affine parameters) of a smooth loss, and their derivatives along
    ``direction`` (a Hessian-vector product through the BatchNorm's backward)."""
    x = x.clone().requires_grad_(True)
    inputs = [x, *norm.parameters()]
    output = norm(x)
    first = torch.autograd.grad((weights * torch.tanh(output)).sum(), inputs, create_graph=True)
    second = torch.autograd.grad((direction * first[0]).sum() + sum(g.sum() for g in first[1:]), inputs)
    return [output.detach(), *(g.detach() for g in first), *second]


@pytest.mark.parametrize("affine", [False, True], ids=["plain", "affine"])
@pytest.mark.parametrize("case", list(CASES))
def test_closed_form_double_backward_equals_pytorchs(case, affine):
    kind, shape = CASES[case]
    generator = torch.Generator().manual_seed(len(shape) + affine)
    native = kind(shape[1], affine=affine).double()
    if affine:
        with torch.no_grad():
            native.weight.uniform_(0.5, 2.0, generator=generator)
            native.bias.normal_(generator=generator)
    closed_form = with_closed_form_batch_norm_hessian(copy.deepcopy(native))
    x, weights, direction = (torch.randn(shape, generator=generator, dtype=torch.float64) * 3 + 1 for _ in range(3))
    expected = derivatives(native, x, weights, direction)
    measured = derivatives(closed_form, x, weights, direction)
    assert len(measured) == len(expected) == 1 + 2 * (3 if affine else 1)  # output, then (input, weight, bias) twice
    for got, want in zip(measured, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(closed_form.running_mean, native.running_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(closed_form.running_var, native.running_var, rtol=1e-12, atol=1e-12)


def test_gradgradcheck_passes_through_the_closed_form():
    norm = with_closed_form_batch_norm_hessian(nn.BatchNorm2d(2, affine=False).double())
    x = torch.randn(3, 2, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: torch.sin(norm(t)), (x,))


@pytest.mark.parametrize("momentum", [0.3, None], ids=["momentum", "cumulative"])
def test_running_statistics_follow_batchnorm(momentum):
    native = nn.BatchNorm2d(3, momentum=momentum)
    closed_form = with_closed_form_batch_norm_hessian(copy.deepcopy(native))
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(4, 3, 5, 5, generator=generator) * 2 + 3
        torch.testing.assert_close(closed_form(x), native(x))
    assert int(closed_form.num_batches_tracked) == int(native.num_batches_tracked) == 3
    torch.testing.assert_close(closed_form.running_mean, native.running_mean)
    torch.testing.assert_close(closed_form.running_var, native.running_var)


def test_running_statistics_mode_and_subclasses_keep_their_own_forward():
    class NormThenDouble(nn.BatchNorm2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    net = with_closed_form_batch_norm_hessian(nn.Sequential(nn.BatchNorm2d(3), NormThenDouble(3)))
    assert "forward" in vars(net[0]) and "forward" not in vars(net[1])
    x = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(2))
    def normalise(t: torch.Tensor) -> torch.Tensor:
        return nn.functional.batch_norm(t, None, None, training=True)

    torch.testing.assert_close(net(x), 2 * normalise(normalise(x)))
    before = net[0].running_mean.clone()
    net.eval()
    expected = 2 * (x - before.view(1, -1, 1, 1)) / torch.sqrt(net[0].running_var.view(1, -1, 1, 1) + net[0].eps)
    torch.testing.assert_close(net[0](x), expected / 2)
    torch.testing.assert_close(net[0].running_mean, before)  # eval: running statistics used, not updated


def test_one_value_per_channel_is_refused_as_batchnorm_refuses_it():
    norm = with_closed_form_batch_norm_hessian(nn.BatchNorm1d(3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(torch.ones(1, 3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        norm(torch.ones(1, 3))
    assert int(norm.num_batches_tracked) == 0
