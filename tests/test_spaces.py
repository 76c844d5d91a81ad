import itertools

import pytest
import torch

from lnas.spaces import InvalidArchError, MBConvSpace

STAGES = [{"channels": 16, "stride": 2, "depths": [1, 2]}, {"channels": 24, "stride": 2, "depths": [1, 2, 3]}]


@pytest.fixture
def space() -> MBConvSpace:
    return MBConvSpace(stages=STAGES, stem_channels=8, out_indices=[0, 1])


def test_size_counts_every_distinct_network(space):
    per_block = 9
    assert space.size() == (per_block + per_block**2) * (per_block + per_block**2 + per_block**3)
    tiny = MBConvSpace(stages=[{"channels": 8, "stride": 2, "depths": [1, 2]}], kernels=[3, 5], expands=[3], out_indices=[0])
    enumerated = {tiny.encode(tiny.decode(f"k{a}e3")) for a in (3, 5)} | {
        tiny.encode(tiny.decode(f"k{a}e3k{b}e3")) for a, b in itertools.product((3, 5), repeat=2)
    }
    assert tiny.size() == len(enumerated) == 6


def test_encode_decode_round_trip_on_1000_samples(space):
    generator = torch.Generator().manual_seed(0)
    for _ in range(1000):
        arch = space.sample(generator)
        assert space.decode(space.encode(arch)) == arch


def test_sampling_is_a_pure_function_of_the_generator(space):
    first = [space.sample(torch.Generator().manual_seed(7)) for _ in range(3)]
    assert all(a == first[0] for a in first)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    torch.manual_seed(123)  # the global RNG must not matter
    a = [space.sample(g1) for _ in range(5)]
    torch.manual_seed(456)
    assert a == [space.sample(g2) for _ in range(5)]


def test_mutate_changes_exactly_one_choice_and_stays_valid(space):
    generator = torch.Generator().manual_seed(3)
    for _ in range(200):
        arch = space.sample(generator)
        child = space.mutate(arch, generator)
        space.validate(child)
        assert child != arch
        changed_depth = [k for k in arch if k.endswith("depth") and arch[k] != child[k]]
        if not changed_depth:
            assert sum(arch[k] != child[k] for k in arch) == 1


def test_invalid_archs_name_the_label_and_allowed_values(space):
    arch = space.default()
    bad = dict(arch, **{"stage1.block0.kernel": 4})
    with pytest.raises(InvalidArchError, match=r"stage1\.block0\.kernel.*\[3, 5, 7\]"):
        space.validate(bad)
    missing = {k: v for k, v in arch.items() if k != "stage2.depth"}
    with pytest.raises(InvalidArchError, match=r"missing label 'stage2\.depth'"):
        space.validate(missing)
    with pytest.raises(InvalidArchError, match=r"unknown label 'stage9\.depth'"):
        space.validate(dict(arch, **{"stage9.depth": 1}))
    with pytest.raises(InvalidArchError, match="expected blocks like"):
        space.decode("k3e4x-k3e3")


@pytest.mark.parametrize("seed", range(4))
def test_extracted_subnet_matches_activated_supernet(space, seed):
    generator = torch.Generator().manual_seed(seed)
    supernet = space.supernet()
    supernet.train()
    for _ in range(3):  # give BatchNorm non-trivial running statistics
        supernet.activate(space.sample(generator))
        supernet(torch.randn(4, 3, 64, 64))
    arch = space.sample(generator)
    supernet.activate(arch)
    supernet.eval()
    subnet = supernet.extract(arch).eval()
    assert supernet.arch == arch  # extract leaves the active arch as it was
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(supernet(x), subnet(x), strict=True):
            assert a.shape == b.shape
            assert torch.allclose(a, b, atol=1e-5)


def test_extracted_subnet_is_independent_of_the_supernet(space):
    supernet = space.supernet()
    arch = space.default()
    subnet = supernet.extract(arch)
    before = [p.clone() for p in subnet.parameters()]
    with torch.no_grad():
        for p in supernet.parameters():
            p.add_(1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, subnet.parameters(), strict=True))


def test_feature_info_matches_the_outputs(space):
    arch = space.sample(torch.Generator().manual_seed(0))
    features = space.build(arch)(torch.randn(1, 3, 64, 64))
    for info, feature in zip(space.feature_info(arch), features, strict=True):
        assert feature.shape[1] == info.num_chs
        assert 64 // feature.shape[-1] == info.reduction
