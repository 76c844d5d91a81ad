"""Staged elastic spaces (conf/space/mbconv.yaml): labels, sizes, string form, supernet extraction, BN recalibration, detection head."""

import copy
import math

import pytest
import torch
from hydra.utils import instantiate

from lnas.hardware import check_onnx_matches, export_onnx
from lnas.spaces import InvalidArchError, MBConvSpace, recalibrate_batchnorm
from lnas.spaces.nb201 import NB201Space
from lnas.spaces.staged import SCALED_DIMENSIONS
from lnas.tasks import DetectionTask, SupernetModule
from lnas.tasks.detection.task import points_of

STAGES = [{"channels": 16, "stride": 2, "depths": [1, 2]}, {"channels": 24, "stride": 2, "depths": [1, 2, 3]}]


@pytest.fixture
def space() -> MBConvSpace:
    return MBConvSpace(stages=STAGES, stem_channels=8, out_indices=[0, 1], widths=[0.5, 1.0], se=[False, True],
                       block_types=["mbconv", "repvgg"], resolutions=[32, 48])


@pytest.fixture(scope="module")
def mbconv_space(tmp_path_factory) -> MBConvSpace:
    """The detection default, composed from the real configs."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("lnas.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["+experiment=detection", f"output_dir={tmp_path_factory.mktemp('cfg')}"])
    return instantiate(cfg.space)


@pytest.fixture(scope="module")
def mbconv_supernet(mbconv_space):
    """The detection default's supernet with non-trivial BatchNorm statistics, in eval mode."""
    return _trained_supernet(mbconv_space, torch.Generator().manual_seed(100)).eval()


def _trained_supernet(space, generator: torch.Generator, steps: int = 3, size: int = 64):
    """A supernet whose BatchNorm statistics are non-trivial (a few train-mode steps on random archs)."""
    supernet = space.supernet().train()
    with torch.no_grad():
        for _ in range(steps):
            supernet.activate(space.sample(generator))
            supernet(torch.randn(4, 3, size, size))
    return supernet


def test_detection_default_space_has_at_least_a_billion_candidates(mbconv_space):
    assert math.log10(mbconv_space.size()) >= 9
    labels = mbconv_space.sample(torch.Generator().manual_seed(0))
    assert {"resolution", "stage1.depth", "stage1.width", "stage1.block0.type"} <= set(labels)
    assert set(mbconv_space.allowed(labels)["stage2.block0.type"]) == {"mbconv", "repvgg"}


def test_size_counts_every_distinct_network(space):
    per_block = 3 * 3 * 2 + 1  # mbconv: 3 kernels x 3 expansions x SE on/off; repvgg: one
    assert space.size() == 2 * (2 * (per_block + per_block**2)) * (2 * (per_block + per_block**2 + per_block**3))
    tiny = MBConvSpace(stages=[{"channels": 8, "stride": 2, "depths": [1, 2]}], kernels=[3, 5], expands=[3], widths=[0.5, 1.0],
                       se=[False, True], block_types=["mbconv", "repvgg"], out_indices=[0])
    generator = torch.Generator().manual_seed(0)
    seen = {tiny.encode(tiny.sample(generator)) for _ in range(4000)}
    assert tiny.size() == len(seen) == 2 * (5 + 5**2)


def test_encode_decode_round_trip_on_1000_samples(space, mbconv_space):
    for candidate_space in (space, mbconv_space):
        generator = torch.Generator().manual_seed(0)
        for _ in range(1000):
            arch = candidate_space.sample(generator)
            text = candidate_space.encode(arch)
            assert candidate_space.decode(text) == arch
            assert candidate_space.encode(candidate_space.decode(text)) == text


def test_string_form_is_documented_and_readable(space):
    arch = space.decode("r48-w0.5k3e4k5e6s-w1rep")
    assert arch["resolution"] == 48 and arch["stage1.width"] == 0.5 and arch["stage1.depth"] == 2
    assert arch["stage1.block1.kernel"] == 5 and arch["stage1.block1.se"] is True and arch["stage1.block0.se"] is False
    assert arch["stage2.block0.type"] == "repvgg" and "stage2.block0.kernel" not in arch


def test_sampling_is_a_pure_function_of_the_generator(space):
    first = [space.sample(torch.Generator().manual_seed(7)) for _ in range(3)]
    assert all(a == first[0] for a in first)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    torch.manual_seed(123)  # the global RNG must not matter
    a = [space.sample(g1) for _ in range(5)]
    torch.manual_seed(456)
    assert a == [space.sample(g2) for _ in range(5)]
    assert len({space.encode(x) for x in a}) > 1


def test_mutate_changes_exactly_one_choice_and_stays_valid(space):
    generator = torch.Generator().manual_seed(3)
    for _ in range(300):
        arch = space.sample(generator)
        child = space.mutate(arch, generator)
        space.validate(child)
        assert child != arch
        structural = [k for k in arch if k.endswith((".depth", ".type")) and arch[k] != child.get(k)]
        if not structural:
            assert arch.keys() == child.keys() and sum(arch[k] != child[k] for k in arch) == 1


def test_invalid_archs_name_the_label_and_allowed_values(space):
    arch = space.default()
    with pytest.raises(InvalidArchError, match=r"stage1\.block0\.kernel.*\[3, 5, 7\]"):
        space.validate(dict(arch, **{"stage1.block0.kernel": 4}))
    with pytest.raises(InvalidArchError, match=r"stage2\.width.*\[0\.5, 1\.0\]"):
        space.validate(dict(arch, **{"stage2.width": 0.75}))
    with pytest.raises(InvalidArchError, match=r"stage1\.depth.*\[1, 2\]"):
        space.validate(dict(arch, **{"stage1.depth": 5}))
    missing = {k: v for k, v in arch.items() if k != "stage2.depth"}
    with pytest.raises(InvalidArchError, match=r"missing label 'stage2\.depth'"):
        space.validate(missing)
    with pytest.raises(InvalidArchError, match=r"unknown label 'stage9\.depth'"):
        space.validate(dict(arch, **{"stage9.depth": 1}))
    with pytest.raises(InvalidArchError, match=r"resolution.*\[32, 48\]"):
        space.decode("r40-w1k3e4-w1k3e4")
    with pytest.raises(InvalidArchError, match=r"cannot read a block at 'x'.*k\{kernel\}e\{expand\}\{se\}"):
        space.decode("r32-w1k3e4x-w1k3e3")
    with pytest.raises(InvalidArchError, match=r"stage1\.block0\.expand.*\[3, 4, 6\]"):
        space.decode("r32-w1k3e5-w1k3e3")


def test_default_is_the_middle_of_the_space(space):
    arch = space.default()
    assert arch["resolution"] == 48 and arch["stage1.width"] == 1.0 and arch["stage2.depth"] == 2
    assert arch["stage2.block1.type"] == "mbconv" and arch["stage2.block1.kernel"] == 5 and arch["stage2.block1.expand"] == 4


def test_scalings_shrink_every_stage_and_block_alike_and_never_grow(space):
    base = space.default()  # r48, depth 2, width 1, k5, e4 everywhere: each of the five dimensions can go one step down
    scaled = space.scalings(base)
    assert len({space.encode(arch) for arch in scaled}) == len(scaled) == 2**5 - 1 and base not in scaled
    for arch in scaled:
        space.validate(arch)
        for dimension in SCALED_DIMENSIONS:
            values = {value for label, value in arch.items() if label.rsplit(".", 1)[-1] == dimension}
            base_values = {value for label, value in base.items() if label.rsplit(".", 1)[-1] == dimension}
            assert len(values) == 1 and max(values) <= max(base_values)  # a uniform arch stays uniform, and only shrinks
    uneven = space.decode("r48-w1k7e6k3e3-w0.5k5e3k5e6rep")
    smallest = space.scalings(uneven)[-1]  # every dimension as far down as it goes: each label at its smallest choice
    assert space.encode(smallest) == "r32-w0.5k3e3-w0.5k3e3"
    assert NB201Space().scalings(NB201Space().default()) == []  # a cell of operations has no ordered dimensions


@pytest.mark.parametrize("seed", range(4))
def test_extracted_subnet_matches_activated_supernet(mbconv_space, mbconv_supernet, seed):
    arch = mbconv_space.sample(torch.Generator().manual_seed(seed))
    mbconv_supernet.activate(arch)
    subnet = mbconv_supernet.extract(arch)
    assert mbconv_supernet.arch == arch and not subnet.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(mbconv_supernet(x), subnet(x), strict=True):
            assert a.shape == b.shape
            assert torch.allclose(a, b, atol=1e-5)


def test_extraction_leaves_the_supernet_and_its_active_arch_alone(space):
    supernet = space.supernet()
    active, other = space.default(), space.sample(torch.Generator().manual_seed(1))
    supernet.activate(active)
    subnet = supernet.extract(other)
    assert supernet.arch == active
    before = [p.clone() for p in subnet.parameters()]
    with torch.no_grad():
        for p in supernet.parameters():
            p.add_(1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, subnet.parameters(), strict=True))


def test_feature_info_matches_the_outputs(space):
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        arch = space.sample(generator)
        features = space.build(arch)(torch.randn(1, 3, 64, 64))
        for info, feature in zip(space.feature_info(arch), features, strict=True):
            assert feature.shape[1] == info.num_chs
            assert 64 // feature.shape[-1] == info.reduction
    assert [info.num_chs for info in space.feature_info()] == [16, 24]  # the supernet's: the widest


@pytest.mark.parametrize("arch_seed", [0, 1])
def test_cifar_layout_keeps_32x32_inputs_at_32_16_8_4_pixels(arch_seed, tmp_path):
    """space=mbconv_cifar (stride-1 stem and first stage): the stage outputs of a 32x32 image, their reductions, and the
    supernet's extracted subnet equal to the activated supernet."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("lnas.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["+experiment=classification", "space=mbconv_cifar", "space.resolutions=null",
                                                      "space.out_indices=[0,1,2,3]", f"output_dir={tmp_path}"])
    cifar = instantiate(cfg.space)
    arch = cifar.sample(torch.Generator().manual_seed(arch_seed))
    supernet = _trained_supernet(cifar, torch.Generator().manual_seed(arch_seed), size=32).eval()
    supernet.activate(arch)
    image = torch.randn(2, 3, 32, 32)
    features = supernet(image)
    assert [f.shape[-1] for f in features] == [32, 16, 8, 4]
    assert [info.reduction for info in cifar.feature_info(arch)] == [1, 2, 4, 8]
    for expected, extracted in zip(features, supernet.extract(arch).eval()(image), strict=True):
        torch.testing.assert_close(extracted, expected, rtol=1e-4, atol=1e-5)


def test_stem_stride_other_than_1_or_2_is_refused():
    with pytest.raises(ValueError, match="stem_stride must be 1 or 2"):
        MBConvSpace(stages=STAGES, stem_stride=4)


def test_batchnorm_recalibration_restores_the_subnets_statistics(space):
    generator = torch.Generator().manual_seed(0)
    supernet = _trained_supernet(space, generator, steps=6).eval()
    arch = space.sample(generator)
    batches = [torch.randn(8, 3, 32, 32) * 2 + 1 for _ in range(3)]
    inherited = supernet.extract(arch).eval()
    calibrated = supernet.extract(arch, calibration_batches=batches)
    assert not calibrated.training
    assert all(torch.equal(a, b) for a, b in zip(inherited.parameters(), calibrated.parameters(), strict=True))

    def error(net) -> float:  # eval-mode output vs train-mode (batch-statistics) output on the calibration data
        data = torch.cat(batches)
        with torch.no_grad():
            eval_out = net.eval()(data)
            train_out = copy.deepcopy(net).train()(data)
        return max(float((a - b).abs().mean()) for a, b in zip(eval_out, train_out, strict=True))

    assert error(calibrated) < 0.2 * error(inherited)
    assert recalibrate_batchnorm(inherited, batches) is inherited and error(inherited) == pytest.approx(error(calibrated), rel=1e-4)


@pytest.mark.parametrize("seed", range(2))
def test_random_extracted_subnets_export_to_onnx_and_run_in_onnx_runtime(mbconv_space, mbconv_supernet, tmp_path, seed):
    subnet = mbconv_supernet.extract(mbconv_space.sample(torch.Generator().manual_seed(seed)))
    path = export_onnx(subnet, (3, 64, 64), tmp_path / "subnet.onnx")
    assert check_onnx_matches(subnet, path, torch.randn(2, 3, 64, 64)) < 1e-3


def test_detection_candidate_matches_the_supernet_for_narrow_widths_and_resolutions(mbconv_space, tmp_path):
    module = SupernetModule(mbconv_space, DetectionTask(3, head_width=16, tower_depth=1))
    generator = torch.Generator().manual_seed(0)
    module.train()
    with torch.no_grad():
        module.activate(mbconv_space.sample(generator))
        module(torch.rand(2, 3, 128, 128))
    module.eval()
    archs = [mbconv_space.decode("r96-w0.5k3e4-w0.75rep-w0.5k5e6s-w0.5k7e3"), mbconv_space.sample(generator)]
    for arch in archs:
        module.activate(arch)
        candidate = module.candidate(arch, inherit=True).eval()
        images = torch.rand(2, 3, 128, 128)
        with torch.no_grad():
            expected, got = module(images), candidate(images)
        for a, b in zip(expected, got, strict=True):
            assert torch.allclose(a, b, atol=1e-4)
        points, _ = points_of(candidate, images)
        assert points.shape[0] == got[0].shape[1] and float(points.max()) <= 128
        fresh = module.candidate(arch, inherit=False)
        assert [unit[0].in_channels for unit in fresh.head.laterals.units] == [info.num_chs for info in mbconv_space.feature_info(arch)]
    path = export_onnx(candidate, (3, 128, 128), tmp_path / "candidate.onnx")
    assert check_onnx_matches(candidate, path, torch.rand(1, 3, 128, 128)) < 1e-3
