"""Scale-invariant layers (their output only feeds a batch-statistics BatchNorm) and GraSP computed through them."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lnas.predictors import Grasp
from lnas.predictors.base import scoring_copy, weight_layers
from lnas.predictors.scale_invariance import ScaleInvariantLayers
from lnas.spaces.nb201 import NB201Space


class MixedNet(nn.Module):
    """Layers with every kind of use: into BatchNorm only, into a residual sum, shared by two BatchNorms, both."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.stem_bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)          # only into BN (with a bias)
        self.branch, self.branch_bn = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.shortcut = nn.Conv2d(4, 4, 1, bias=False)                                      # into a residual sum
        self.shared, self.bn_a, self.bn_b = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.BatchNorm2d(4)  # twice, into BNs
        self.leaky, self.leaky_bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)                  # into a BN and a sum
        self.head = nn.Linear(4, 10)                                                        # into the loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        y = self.branch_bn(self.branch(x)) + self.shortcut(x)
        y = self.bn_a(self.shared(y)) + self.bn_b(self.shared(F.relu(y)))
        leaky = self.leaky(y)
        y = F.relu(self.leaky_bn(leaky) + leaky)
        return self.head(y.mean(dim=(2, 3)))


def scale_invariant_names(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> set[str]:
    layers = weight_layers(net)
    finder = ScaleInvariantLayers(net, layers)
    loss = F.cross_entropy(net(x), y)
    finder.close()
    names = {id(module): name for name, module in net.named_modules()}
    return {names[id(layers[index])] for index in finder.find(loss)}


def batch(size: int = 6, side: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return torch.randn(size, 3, side, side, generator=generator), torch.randint(0, 10, (size,), generator=generator)


def test_only_layers_whose_outputs_feed_nothing_but_a_batch_statistics_batchnorm_are_scale_invariant():
    torch.manual_seed(0)
    x, y = batch()
    assert scale_invariant_names(scoring_copy(MixedNet()), x, y) == {"stem", "branch", "shared"}
    assert scale_invariant_names(MixedNet().eval(), x, y) == set()  # running statistics: the scale is not removed


def test_nb201_layers_are_scale_invariant_except_the_shortcut_convs_and_the_classifier():
    space = NB201Space(channels=4, cells_per_stage=1, cell_conv_bias=True)
    torch.manual_seed(0)
    cell = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
    net = scoring_copy(space.benchmark_network(space.decode(cell)))
    x, y = batch()
    every = {name for name, module in net.named_modules() if isinstance(module, nn.Conv2d | nn.Linear)}
    assert every - scale_invariant_names(net, x, y) == {"cells.1.downsample.1", "cells.3.downsample.1", "classifier"}


def grasp_by_double_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """``sum -W ⊙ (H g)`` with the full Hessian-gradient product, as the reference computes it."""
    net = scoring_copy(model)
    weights = [layer.weight for layer in weight_layers(net)]
    grads = torch.autograd.grad(F.cross_entropy(net(x), y), weights, create_graph=True)
    hessian_grad = torch.autograd.grad(sum((g.detach() * g).sum() for g in grads), weights)
    return float(sum(-(w.detach() * hg).sum() for w, hg in zip(weights, hessian_grad, strict=True)))


@pytest.mark.parametrize("make", [MixedNet, lambda: NB201Space(channels=4, cells_per_stage=1).benchmark_network(NB201Space().default())],
                         ids=["mixed", "nb201"])
def test_grasp_through_scale_invariance_equals_the_full_double_backward(make):
    torch.manual_seed(0)
    model = make().double()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 1e-12  # the identity is exact as eps -> 0; float64 leaves only rounding
    x, y = batch()
    x = x.double()
    expected = grasp_by_double_backward(model, x, y)
    assert Grasp(len(x)).score(model, x, y) == pytest.approx(expected, rel=1e-7)


def test_grasp_with_the_default_eps_stays_within_float32_rounding_of_the_full_double_backward():
    space = NB201Space(channels=8, cells_per_stage=2, cell_conv_bias=True)
    torch.manual_seed(1)
    model = space.benchmark_network(space.decode("|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"))
    x, y = batch(16, 16)
    expected = grasp_by_double_backward(model.double(), x.double(), y)
    assert Grasp(len(x)).score(model.float(), x, y) == pytest.approx(expected, rel=1e-3)
