"""copy_module behaves as copy.deepcopy: independent tensors, hooks and attributes; shared references stay shared."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from lnas.predictors.module_copy import copy_module
from lnas.spaces.nb201 import NB201Network, NB201Space


class Tied(nn.Module):
    """Tied weights, a plain tensor attribute, a mutable list attribute and a submodule used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 4)
        self.head = nn.Linear(4, 4)
        self.head.weight = self.embed.weight
        self.shared = nn.ReLU()
        self.blocks = nn.Sequential(self.shared, nn.BatchNorm1d(4), self.shared)
        self.scale = torch.tensor(2.0)
        self.history: list[int] = [1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(x))) * self.scale


def test_copy_has_equal_but_independent_parameters_buffers_and_outputs() -> None:
    torch.manual_seed(0)
    model = NB201Network(NB201Space().decode("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"))
    clone = copy_module(model)
    x = torch.randn(4, 3, 32, 32)
    model.eval(), clone.eval()
    torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)
    originals = dict(model.named_parameters()) | dict(model.named_buffers())
    for name, tensor in [*clone.named_parameters(), *clone.named_buffers()]:
        assert tensor.data_ptr() != originals[name].data_ptr(), name
        assert type(tensor) is type(originals[name]) and tensor.requires_grad == originals[name].requires_grad
    with torch.no_grad():
        clone.classifier.weight.add_(1.0)
    clone.train()(x)  # updates the copy's BatchNorm statistics only
    assert not torch.equal(clone.classifier.weight, model.classifier.weight)
    assert torch.equal(model.stem[1].running_mean, torch.zeros(16)) and not model.training


def test_copy_keeps_tied_weights_shared_modules_and_attributes_like_deepcopy() -> None:
    model = Tied()
    clone, reference = copy_module(model), copy.deepcopy(model)
    assert clone.head.weight is clone.embed.weight and clone.embed.weight is not model.embed.weight
    assert clone.blocks[0] is clone.shared is clone.blocks[2] and clone.shared is not model.shared
    assert len(list(clone.parameters())) == len(list(reference.parameters()))
    clone.history.append(2)
    assert model.history == [1] and clone.scale is not model.scale and torch.equal(clone.scale, model.scale)
    x = torch.randn(3, 4)
    torch.testing.assert_close(clone(x), reference(x), rtol=0, atol=0)


def test_hooks_registered_on_the_copy_do_not_reach_the_original() -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    seen: list[str] = []
    model[0].register_forward_hook(lambda *_: seen.append("original hook"))
    clone = copy_module(model)
    clone[0].register_forward_hook(lambda *_: seen.append("copy hook"))
    model(torch.ones(1, 2))
    assert seen == ["original hook"]
    seen.clear()
    clone(torch.ones(1, 2))
    assert seen == ["original hook", "copy hook"]  # deepcopy keeps existing hooks too


def test_torchscript_modules_fall_back_to_deepcopy() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, but users still hand in such models
        scripted = torch.jit.script(nn.Linear(2, 2))
    clone = copy_module(nn.Sequential(scripted))
    assert torch.equal(clone[0](torch.ones(1, 2)), scripted(torch.ones(1, 2))) and clone[0] is not scripted
