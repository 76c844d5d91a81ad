import copy

import pytest
import torch
from torch import nn

from lnas.predictors import Params, SynFlow
from lnas.predictors.synflow import synflow_score


def test_synflow_of_a_linear_layer_is_the_sum_of_absolute_weights():
    # f(x) = Wx with |W| and x = 1: R = sum |W_ij|, dR/dW_ij = 1, so the score is sum |W_ij|.
    layer = nn.Linear(4, 3, bias=False)
    assert synflow_score(layer, (4,)) == pytest.approx(float(layer.weight.detach().double().abs().sum()), rel=1e-12)


def test_synflow_of_two_layers_follows_the_path_products():
    # R = 1ᵀ|W2||W1|1; for W1 the saliency is |W1_jk| * sum_i |W2_ij|.
    net = nn.Sequential(nn.Linear(3, 5, bias=False), nn.ReLU(), nn.Linear(5, 2, bias=False))
    w1, w2 = net[0].weight.detach().abs().double(), net[2].weight.detach().abs().double()
    expected = (w1 * w2.sum(0)[:, None]).sum() + (w2 * (w1 @ torch.ones(3, dtype=torch.float64))[None]).sum()
    assert synflow_score(net, (3,)) == pytest.approx(float(expected), rel=1e-10)


def _small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.LazyLinear(2))


def test_synflow_is_deterministic_and_leaves_the_model_unchanged():
    torch.manual_seed(0)
    model = _small_cnn()
    inputs = torch.randn(4, 3, 16, 16)
    model(inputs)
    model.train()
    before = copy.deepcopy(model.state_dict())
    scores = [SynFlow().score(model, inputs) for _ in range(2)]
    assert scores[0] == scores[1] > 0
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_synflow_ignores_batchnorm_as_the_reference_does():
    torch.manual_seed(0)
    with_bn = _small_cnn()
    with_bn(torch.zeros(1, 3, 16, 16))
    without_bn = copy.deepcopy(with_bn)
    without_bn[1] = nn.Identity()
    with torch.no_grad():
        with_bn[1].running_var.fill_(9.0)  # would change the output if BatchNorm were applied
    assert SynFlow().score(with_bn, torch.zeros(2, 3, 16, 16)) == SynFlow().score(without_bn, torch.zeros(2, 3, 16, 16))


def test_proxy_class_attributes():
    assert SynFlow.higher_is_better and not SynFlow.needs_data and not SynFlow.needs_labels
    assert Params().score(nn.Linear(3, 2), torch.zeros(1, 3)) == 8
