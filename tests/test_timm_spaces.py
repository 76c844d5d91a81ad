"""Spaces centred on a timm baseline: default() is the baseline (same layers and function), supernets extract exactly."""

import math

import pytest
import timm
import torch
from hydra.utils import instantiate

from lnas.hardware import check_onnx_matches, count_params, export_onnx
from lnas.spaces import InvalidArchError, timm_space

BASELINES = ["mobilenetv3_large_100", "efficientnet_b0", "resnet18", "resnet50"]


@pytest.fixture(scope="module")
def spaces() -> dict:
    return {name: timm_space(name) for name in ("mobilenetv3_large_100", "efficientnet_b0", "resnet18")}


@pytest.mark.parametrize("name", BASELINES)
def test_default_is_the_baseline_within_one_percent_of_its_parameters(name, spaces):
    space = spaces.get(name) or timm_space(name)
    baseline = timm.create_model(name, pretrained=False, features_only=True)
    assert count_params(space.build(space.default())) == pytest.approx(count_params(baseline), rel=0.01)
    assert [info.num_chs for info in space.feature_info(space.default())] == baseline.feature_info.channels()[-3:]
    assert [info.reduction for info in space.feature_info(space.default())] == [8, 16, 32]


@pytest.mark.parametrize("name", ["mobilenetv3_large_100", "efficientnet_b0", "resnet18"])
def test_default_computes_what_the_timm_baseline_computes(name, spaces):
    """timm's weights copied in order into the built default network give the same features (same layers, same function)."""
    space = spaces[name]
    baseline = timm.create_model(name, pretrained=False, features_only=True, out_indices=(2, 3, 4)).eval()
    ours = space.build(space.default()).eval()
    theirs, mine = list(baseline.state_dict().values()), list(ours.state_dict().values())
    assert [t.shape for t in theirs] == [t.shape for t in mine]
    ours.load_state_dict(dict(zip(ours.state_dict(), theirs, strict=True)))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        for a, b in zip(baseline(x), ours(x), strict=True):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))


def test_choices_surround_the_baseline(spaces):
    space = spaces["mobilenetv3_large_100"]
    allowed = space.allowed(space.default())
    assert allowed["stage4.depth"] == (3, 4, 5) and allowed["stage4.width"] == (0.75, 1.0, 1.25)
    assert {2.3, 2.5, 3, 4, 6} <= set(allowed["stage4.block2.expand"]) and allowed["stage3.block0.kernel"] == (3, 5, 7)
    assert allowed["stage7.block0.type"] == ("conv",) and allowed["stage7.depth"] == (1,)
    narrow = dict(space.default(), **{f"stage{i}.width": 0.75 for i in range(1, 8)})
    wide = dict(space.default(), **{f"stage{i}.width": 1.25 for i in range(1, 8)})
    default_params = count_params(space.build(space.default()))
    assert count_params(space.build(narrow)) < default_params < count_params(space.build(wide))
    resnet = spaces["resnet18"]
    assert resnet.allowed(resnet.default())["stage1.block0.expand"] == (0.75, 1.0, 1.25)
    for name, candidate_space in spaces.items():
        assert math.log10(candidate_space.size()) > 6, name


@pytest.mark.parametrize("name", ["mobilenetv3_large_100", "resnet18"])
def test_extracted_subnets_match_the_supernet_and_export(name, spaces, tmp_path):
    space = spaces[name]
    generator = torch.Generator().manual_seed(0)
    supernet = space.supernet().train()
    with torch.no_grad():
        for _ in range(2):
            supernet.activate(space.sample(generator))
            supernet(torch.randn(2, 3, 64, 64))
    supernet.eval()
    for arch in (space.sample(generator), space.default()):
        supernet.activate(arch)
        subnet = supernet.extract(arch).eval()
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            for a, b in zip(supernet(x), subnet(x), strict=True):
                assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    path = export_onnx(subnet, (3, 64, 64), tmp_path / "subnet.onnx")
    assert check_onnx_matches(subnet, path, torch.randn(1, 3, 64, 64)) < 1e-3


def test_round_trip_and_mutation(spaces):
    space = spaces["efficientnet_b0"]
    generator = torch.Generator().manual_seed(0)
    for _ in range(1000):
        arch = space.sample(generator)
        assert space.decode(space.encode(arch)) == arch
    child = space.mutate(space.default(), generator)
    space.validate(child)
    assert child != space.default()
    with pytest.raises(InvalidArchError, match=r"stage2\.block0\.kernel.*\[3, 5, 7\]"):
        space.validate(dict(space.default(), **{"stage2.block0.kernel": 9}))


def test_configs_build_the_baseline_spaces(compose_cfg, tmp_path):
    for config, name in (("timm_mobilenetv3", "mobilenetv3_large_100"), ("timm_efficientnet", "efficientnet_b0"), ("timm_resnet", "resnet18")):
        cfg = compose_cfg("+experiment=detection", f"space={config}", f"output_dir={tmp_path}")
        space = instantiate(cfg.space)
        assert cfg.space.model_name == name
        assert space.encode(space.default()) == timm_space(name).encode(timm_space(name).default())


def test_unsupported_baselines_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="supported families: MobileNetV3, EfficientNet"):
        timm_space("convnext_atto")
    with pytest.raises(ValueError, match="'same' padding"):
        timm_space("tf_efficientnet_b0")
    with pytest.raises(ValueError, match="deep stems"):
        timm_space("resnet18d")
