"""RepVGG blocks: fused == unfused, the exported graph is the fused one, the elastic twin extracts exactly, fused is cheaper."""

import copy

import onnx
import pytest
import torch
from torch import nn

from lnas.hardware import check_onnx_matches, count_flops, export_onnx
from lnas.spaces import MBConvSpace, RepVGGBlock, reparameterize
from lnas.spaces.blocks import BlockConfig
from lnas.spaces.repvgg import ElasticRepVGG, multi_branch

SHAPES = [(16, 16, 1), (16, 24, 1), (16, 24, 2)]  # identity branch; no identity (widths differ); stride 2


def _with_statistics(module: nn.Module, channels: int, steps: int = 3) -> nn.Module:
    """Train-mode passes so every BatchNorm has non-trivial running statistics and affine parameters."""
    module.train()
    with torch.no_grad():
        for bn in (m for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
        for _ in range(steps):
            module(torch.randn(8, channels, 12, 12) * 2 + 0.5)
    return module.eval()


@pytest.mark.parametrize(("in_chs", "out_chs", "stride"), SHAPES)
def test_fused_equals_unfused_in_eval_mode(in_chs, out_chs, stride):
    block = _with_statistics(RepVGGBlock(BlockConfig("repvgg", in_chs, out_chs, stride, 3, out_chs, "relu")), in_chs)
    assert (block.identity is not None) == (in_chs == out_chs and stride == 1)
    x = torch.randn(2, in_chs, 12, 12)
    with torch.no_grad():
        branches, fused_on_the_fly = block.forward_branches(x), block(x)
        deployed = reparameterize(copy.deepcopy(block))
        permanent = deployed(x)
    assert torch.allclose(branches, fused_on_the_fly, atol=1e-5) and torch.allclose(branches, permanent, atol=1e-5)
    assert deployed.dense is None and deployed.identity is None and isinstance(deployed.fused, nn.Conv2d)
    assert sum(p.numel() for p in deployed.parameters()) == out_chs * in_chs * 9 + out_chs


def test_training_mode_runs_the_branches():
    block = RepVGGBlock(BlockConfig("repvgg", 8, 8, 1, 3, 8, "relu")).train()
    block(torch.randn(2, 8, 8, 8)).sum().backward()
    assert all(p.grad is not None for p in block.parameters())
    assert int(block.identity.num_batches_tracked) == 1


def test_export_holds_one_fused_conv_per_block(tmp_path):
    space = MBConvSpace(stages=[{"channels": 16, "stride": 2, "depths": [3]}, {"channels": 24, "stride": 2, "depths": [2]}],
                        stem_channels=16, out_indices=[1], block_types=["repvgg"])
    net = _with_statistics(space.build(space.decode("w1repreprep-w1reprep")), 3)
    path = export_onnx(net, (3, 32, 32), tmp_path / "fused.onnx")
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("Conv") == 1 + 5  # stem + one per RepVGG block
    assert "BatchNormalization" not in ops and "Add" not in ops
    x = torch.randn(2, 3, 32, 32)
    assert check_onnx_matches(net, path, x) < 1e-4
    assert check_onnx_matches(multi_branch(net), path, x) < 1e-4  # the fused graph computes the multi-branch network
    unfused_ops = [n.op_type for n in onnx.load(str(export_onnx(multi_branch(net), (3, 32, 32), tmp_path / "u.onnx"))).graph.node]
    assert unfused_ops.count("Conv") == 1 + 2 * 5


@pytest.mark.parametrize(("in_chs", "out_chs", "stride"), SHAPES)
def test_elastic_twin_extracts_exactly(in_chs, out_chs, stride):
    largest = BlockConfig("repvgg", 24, 32, stride, 3, 32, "hard_swish")
    elastic = _with_statistics(_Elastic(ElasticRepVGG(largest), BlockConfig("repvgg", in_chs, out_chs, stride, 3, out_chs, "hard_swish")), in_chs)
    block = elastic.elastic.extract(elastic.cfg).eval()
    x = torch.randn(2, in_chs, 12, 12)
    with torch.no_grad():
        assert torch.allclose(elastic(x), block(x), atol=1e-5)


class _Elastic(nn.Module):
    """An elastic block bound to one config (so it can be called like a static one)."""

    def __init__(self, elastic: ElasticRepVGG, cfg: BlockConfig) -> None:
        super().__init__()
        self.elastic, self.cfg = elastic, cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.elastic(x, self.cfg)


def test_fused_form_costs_fewer_flops():
    space = MBConvSpace(stages=[{"channels": 32, "stride": 2, "depths": [3]}], stem_channels=32, out_indices=[0], block_types=["repvgg"])
    net = _with_statistics(space.build(space.decode("w1" + "rep" * 3)), 3)
    fused, unfused = count_flops(net, (3, 64, 64)), count_flops(multi_branch(net), (3, 64, 64))
    assert unfused - fused == 3 * 2 * 32 * 32 * 16 * 16  # exactly the three 1x1 branches (32 -> 32 channels on 16x16 maps)
