"""Zero-cost proxies: known answers on tiny models, determinism, no side effects, sharing, NaN handling, memory."""

import copy
import gc
import math
import warnings
from importlib.resources import files

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from lnas.predictors import (
    NASWOT,
    Expressivity,
    Fisher,
    Flops,
    GradNorm,
    Grasp,
    JacobCov,
    Params,
    Progressivity,
    Snip,
    SynFlow,
    Trainability,
    ZenScore,
    ZeroShotEnsemble,
    ZiCo,
    score_proxies,
    warn_non_finite,
)
from lnas.predictors.base import Supervision, scoring_copy
from lnas.predictors.ensemble import population_ranks
from lnas.predictors.gradients import TwiceDifferentiableHardsigmoid, TwiceDifferentiableHardswish
from lnas.predictors.registry import available, load_proxy
from lnas.spaces.nb201 import NB201Space

BATCH = 8


def all_proxies() -> list:
    half = BATCH // 2
    return [Params(), Flops(), GradNorm(half), Snip(half), Grasp(half), Fisher(half), JacobCov(half), SynFlow(), NASWOT(BATCH),
            ZenScore(half), ZiCo(half), Expressivity(half), Progressivity(half), Trainability(half)]


@pytest.fixture
def tiny_nb201() -> nn.Module:
    space = NB201Space(channels=4, cells_per_stage=1)
    torch.manual_seed(0)
    return space.benchmark_network(space.decode("|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"))


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 3, 8, 8, generator=generator), torch.randint(0, 10, (BATCH,), generator=generator)


@pytest.mark.parametrize("proxy", all_proxies(), ids=lambda p: p.name)
def test_proxy_is_deterministic_finite_and_leaves_the_model_unchanged(proxy, tiny_nb201, batch):
    tiny_nb201.eval()
    before = copy.deepcopy(tiny_nb201.state_dict())
    scores = [proxy.score(tiny_nb201, *batch) for _ in range(2)]
    assert scores[0] == scores[1] and math.isfinite(scores[0])
    assert not tiny_nb201.training
    assert all(torch.equal(before[k], v) for k, v in tiny_nb201.state_dict().items())
    assert all(p.grad is None for p in tiny_nb201.parameters())


def test_shared_passes_give_the_same_scores_as_each_proxy_alone(tiny_nb201, batch):
    proxies = all_proxies()
    together = score_proxies(proxies, tiny_nb201, *batch)
    alone = {p.name: p.score(tiny_nb201, *batch) for p in proxies}
    assert list(together) == [p.name for p in proxies]
    assert together == pytest.approx(alone, rel=1e-5)


def test_every_predictor_config_instantiates_with_the_documented_attributes():
    published = {"params", "flops", "grad_norm", "snip", "grasp", "fisher", "jacob_cov", "synflow", "naswot", "zen", "zico"}
    assert published | {"ensemble", "ensemble_rank"} <= set(available())
    for name in available():
        proxy = load_proxy(name)
        assert proxy.name == name and isinstance(proxy.higher_is_better, bool)
        assert isinstance(proxy.needs_data, bool) and isinstance(proxy.needs_labels, bool)
        assert proxy.__doc__ and (not proxy.needs_labels or proxy.needs_data)
    with pytest.raises(ValueError, match="unknown predictor 'nope'; available: .*synflow"):
        load_proxy("nope")


@pytest.mark.parametrize(("proxy_class", "minimum"), [(GradNorm, 1), (ZiCo, 1), (ZenScore, 1), (Trainability, 1), (NASWOT, 2)],
                         ids=lambda value: getattr(value, "name", str(value)))
def test_a_batch_size_below_the_minimum_is_refused_naming_the_setting(proxy_class, minimum):
    with pytest.raises(ValueError, match=rf"^{proxy_class.name}\.batch_size must be >= {minimum}, got {minimum - 1}$"):
        proxy_class(batch_size=minimum - 1)
    assert proxy_class(batch_size=minimum).batch_size == minimum


def test_data_free_proxies_need_only_the_input_shape(tiny_nb201):
    for proxy in all_proxies():
        if proxy.needs_data:
            with pytest.raises(TypeError, match=f"proxy '{proxy.name}' needs a batch of real inputs"):
                proxy.score(tiny_nb201, (BATCH, 3, 8, 8))
        else:
            assert math.isfinite(proxy.score(tiny_nb201, (BATCH, 3, 8, 8)))


class TwoLevelBackbone(nn.Module):
    """A detection-style backbone: stem and blocks, returning a tuple of feature maps."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.blocks = nn.Sequential(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
                                    nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU()))

    def forward(self, x):
        first = self.blocks[0](self.stem(x))
        return first, self.blocks[1](first)


def test_multi_output_models_work_with_label_free_proxies_and_label_proxies_say_why_not(batch):
    torch.manual_seed(0)
    model = TwoLevelBackbone()
    inputs, targets = batch
    for proxy in all_proxies():
        if proxy.needs_labels:
            with pytest.raises(TypeError, match=f"proxy '{proxy.name}' needs a classification model returning logits"):
                proxy.score(model, inputs, targets)
        else:
            assert math.isfinite(proxy.score(model, inputs)), proxy.name


def test_label_proxies_reject_missing_or_wrong_targets(tiny_nb201, batch):
    with pytest.raises(TypeError, match=r"needs class-index targets \(an int64 tensor of shape \(8,\)\) or a Supervision .*; got NoneType"):
        GradNorm(4).score(tiny_nb201, batch[0])
    with pytest.raises(TypeError, match=r"got a torch.float32 tensor of shape \(8,\)"):
        GradNorm(4).score(tiny_nb201, batch[0], batch[1].float())
    with pytest.raises(ValueError, match="'zico' needs two batches: at least 2 samples, got 1"):
        ZiCo(4).score(tiny_nb201, batch[0][:1], batch[1][:1])


def test_zico_of_a_small_batch_takes_its_two_halves(tiny_nb201, batch):
    x, y = batch
    assert ZiCo(2).score(tiny_nb201, x[:4], y[:4]) == ZiCo(4).score(tiny_nb201, x[:4], y[:4])
    assert ZiCo(4).score(tiny_nb201, x[:4], y[:4]) != ZiCo(4).score(tiny_nb201, x[:8], y[:8])


def linear_case() -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Linear(5, 3), torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])


def test_grad_norm_snip_fisher_and_grasp_of_a_linear_classifier_match_their_definitions():
    layer, x, y = linear_case()
    w = layer.weight.detach()
    logits = x @ w.t() + layer.bias.detach()
    dlogits = (F.softmax(logits, 1) - F.one_hot(y, 3).float()) / len(x)  # d(mean cross-entropy)/d logits
    grad = dlogits.t() @ x
    scores = score_proxies([GradNorm(6), Snip(6), Fisher(6), Grasp(6)], layer, x, y)
    assert scores["grad_norm"] == pytest.approx(float(grad.norm()), rel=1e-5)
    assert scores["snip"] == pytest.approx(float((grad * w).abs().sum()), rel=1e-5)
    # fisher: per output unit 0.5 * mean_n (a * dL/da)^2, broadcast over the 5 weights of the unit
    assert scores["fisher"] == pytest.approx(float((0.5 * (logits * dlogits).pow(2).mean(0)).sum() * 5), rel=1e-5)

    def loss_of(weight):
        return F.cross_entropy(x @ weight.t() + layer.bias.detach(), y)

    hessian = torch.autograd.functional.hessian(loss_of, w).reshape(15, 15)
    assert scores["grasp"] == pytest.approx(float(-(w.reshape(-1) * (hessian @ grad.reshape(-1))).sum()), rel=1e-4)


def test_jacob_cov_of_a_linear_model_has_the_closed_form_of_identical_jacobian_rows():
    # Every sample has the same Jacobian row (sum of W's rows), so corrcoef is all ones: eigenvalues n, 0, ..., 0.
    layer, x, _ = linear_case()
    n, k = len(x), 1e-5
    expected = -((math.log(n + k) + 1 / (n + k)) + (n - 1) * (math.log(k) + 1 / k))
    assert JacobCov(n).score(layer, x) == pytest.approx(expected, rel=1e-6)


def test_naswot_counts_agreeing_relu_codes():
    # codes [1, 0] and [1, 1]: K = [[2, 1], [1, 2]], log det = log 3
    assert NASWOT(2).score(nn.ReLU(), torch.tensor([[1.0, -1.0], [1.0, 1.0]])) == pytest.approx(math.log(3.0))


def test_zico_is_the_log_of_summed_mean_over_std_of_two_batch_gradients():
    layer, x, y = linear_case()
    grads = []
    for part in (slice(0, 3), slice(3, 6)):
        (g,) = torch.autograd.grad(F.cross_entropy(layer(x[part]), y[part]), [layer.weight])
        grads.append(g)
    stacked = torch.stack(grads)
    ratio = stacked.abs().mean(0) / stacked.std(0, unbiased=False)
    assert ZiCo(3).score(layer, x, y) == pytest.approx(float(torch.log(ratio.sum())), rel=1e-5)


def test_seeded_data_free_proxies_depend_on_their_seed_only(tiny_nb201):
    shape = (BATCH, 3, 8, 8)
    for proxy_type in (ZenScore, Expressivity):
        same = [proxy_type(4, seed=3).score(tiny_nb201, shape) for _ in range(2)]
        assert same[0] == same[1] != proxy_type(4, seed=4).score(tiny_nb201, shape)


def test_population_ranks_put_non_finite_scores_last_and_respect_direction():
    assert population_ranks([3.0, math.nan, 1.0, math.inf, 2.0]).tolist() == [5.0, 1.5, 3.0, 1.5, 4.0]
    assert population_ranks([3.0, 1.0, 2.0], higher_is_better=False).tolist() == [1.0, 3.0, 2.0]


def test_ensemble_log_rank_aggregation_has_the_known_answer():
    ensemble = ZeroShotEnsemble([Params(), SynFlow()])
    rows = [{"params": 1.0, "synflow": 30.0}, {"params": 2.0, "synflow": 10.0}, {"params": 3.0, "synflow": math.nan}]
    # ranks: params 1, 2, 3; synflow 3, 2, 1 (NaN last): log(r1/3) + log(r2/3)
    expected = [math.log(1 / 3) + math.log(3 / 3), math.log(2 / 3) * 2, math.log(3 / 3) + math.log(1 / 3)]
    assert ensemble.aggregate(rows) == pytest.approx(expected)
    assert ZeroShotEnsemble([Params(), SynFlow()], aggregation="rank").aggregate(rows) == pytest.approx([4 / 3, 4 / 3, 4 / 3])
    assert ensemble.used == ["params", "synflow"]


def test_ensemble_reads_its_config_and_reports_its_members(tiny_nb201, batch):
    config = OmegaConf.create((files("lnas.conf") / "predictor" / "ensemble.yaml").read_text())
    ensemble = instantiate(config)
    assert ensemble.used == list(config.proxies) and not ensemble.needs_labels
    assert ensemble.needs_data == any(member.needs_data for member in ensemble.proxies)
    components = ensemble.components(tiny_nb201, batch[0])
    assert list(components) == ensemble.used and all(math.isfinite(v) for v in components.values())
    assert ensemble.score(tiny_nb201, batch[0]) == 0.0  # a population of one: every rank is 1/1
    with pytest.raises(ValueError, match="unknown aggregation 'mean'; allowed values: \\['log_rank', 'rank'\\]"):
        ZeroShotEnsemble(["params"], aggregation="mean")


def test_a_non_finite_score_warns_once_naming_the_arch_and_ranks_last():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert warn_non_finite("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", {"synflow": math.inf, "naswot": math.nan, "params": 1.0})
        assert not warn_non_finite("ok", {"params": 1.0})
    assert len(caught) == 1 and "|none~0|+|none~0|" in str(caught[0].message) and "synflow=inf" in str(caught[0].message)
    assert ZeroShotEnsemble([SynFlow()]).aggregate([{"synflow": math.inf}, {"synflow": 1.0}]) == pytest.approx([math.log(0.5), 0.0])


def test_scoring_many_candidates_keeps_memory_flat(tiny_nb201, batch):
    ensemble = ZeroShotEnsemble(all_proxies())

    def live_tensors() -> int:
        gc.collect()
        return sum(1 for obj in gc.get_objects() if torch.is_tensor(obj))

    ensemble.components(tiny_nb201, *batch)
    before = live_tensors()
    for _ in range(5):
        ensemble.components(tiny_nb201, *batch)
    assert live_tensors() <= before + 5


def test_scoring_copies_map_a_constant_channel_to_exact_zero_and_leave_the_function_unchanged():
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 1), nn.BatchNorm2d(4, affine=False))
    copy_ = scoring_copy(net)
    constant = torch.randn(3, generator=torch.Generator().manual_seed(2)).view(1, 3, 1, 1).expand(64, 3, 8, 8)
    assert torch.equal(copy_[1](constant.repeat(1, 2, 1, 1)), torch.zeros(64, 6, 8, 8))  # exact, not ~1e-5 noise
    mixed = torch.cat([constant, torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(4))], dim=1)
    mixed[1, 3] = mixed[0, 3]  # channel 3 agrees over the first two samples only: not constant, left as it is
    normalised = copy_[1](mixed)
    assert torch.equal(normalised[:, :3], torch.zeros(64, 3, 8, 8)) and normalised[:, 3].abs().min() > 0
    torch.testing.assert_close(normalised, copy.deepcopy(net[1])(mixed))

    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    plain, exact = copy.deepcopy(net).double(), scoring_copy(net.double())
    torch.testing.assert_close(exact.eval()(x), plain.eval()(x), rtol=1e-12, atol=1e-12)  # running statistics: no shift
    plain.train(), exact.train()
    torch.testing.assert_close(exact(x), plain(x), rtol=1e-12, atol=1e-12)

    def hessian_vector(model):  # BatchNorm is shift invariant: first and second derivatives agree as well
        weights = [model[0].weight, model[3].weight]
        grads = torch.autograd.grad(model(x).square().sum(), weights, create_graph=True)
        return torch.autograd.grad(sum(g.sum() for g in grads), weights)

    for got, want in zip(hessian_vector(exact), hessian_vector(plain), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_fisher_rates_a_cell_that_never_sees_its_input_as_the_worst_not_the_best():
    # node 1 is the zero op, so the convolutions after it see zeros and output only their bias (a constant channel)
    space, generator = NB201Space(channels=4, cells_per_stage=2, cell_conv_bias=True), torch.Generator().manual_seed(4)
    x, y = torch.randn(16, 3, 16, 16, generator=generator), torch.randint(0, 10, (16,), generator=generator)
    dead = "|none~0|+|none~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_1x1~2|"
    alive = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
    torch.manual_seed(0)
    scores = {arch: score_proxies([Fisher(), GradNorm()], space.benchmark_network(space.decode(arch)), x, y) for arch in (dead, alive)}
    assert scores[dead]["grad_norm"] == 0.0
    assert scores[dead]["fisher"] < 1e-2 * scores[alive]["fisher"]  # about 1e9 when rounding noise passed the ReLUs


def test_label_proxies_differentiate_the_loss_a_supervision_gives(tiny_nb201, batch):
    x, y = batch
    proxies = [GradNorm(4), Snip(4)]
    plain = score_proxies(proxies, tiny_nb201, x, y)
    assert score_proxies(proxies, tiny_nb201, x, Supervision(y, lambda out, t: F.cross_entropy(out, t))) == pytest.approx(plain, rel=1e-6)
    doubled = score_proxies(proxies, tiny_nb201, x, Supervision(y, lambda out, t: 2 * F.cross_entropy(out, t)))
    assert doubled == pytest.approx({name: 2 * value for name, value in plain.items()}, rel=1e-5)


def test_grasp_takes_the_hessian_through_hard_activations():
    x = torch.linspace(-5, 5, 201)
    assert torch.allclose(TwiceDifferentiableHardswish()(x), nn.Hardswish()(x))
    assert torch.allclose(TwiceDifferentiableHardsigmoid()(x), nn.Hardsigmoid()(x))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Hardswish(), nn.Conv2d(8, 8, 1), nn.Hardsigmoid(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 3))
    score = Grasp(8).score(model, torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,)))
    assert math.isfinite(score) and score != 0.0
    assert isinstance(model[1], nn.Hardswish)  # the model itself is untouched


class _StridedBlocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.blocks = nn.Sequential(nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))


def test_trainability_reads_a_block_whose_stride_rounded_its_grid_up():
    out = _StridedBlocks()(torch.randn(2, 3, 7, 7))
    assert out.shape[-1] == 4  # 7 -> 4 at stride 2: not an integer ratio
    assert math.isfinite(Trainability(batch_size=8).score(_StridedBlocks(), (8, 3, 7, 7)))


class _Failing(Params):
    name = "failing"

    def score(self, model, inputs, targets=None) -> float:
        raise RuntimeError("cannot read this model")


def test_an_ensemble_member_that_fails_scores_nan_and_the_others_still_count(tiny_nb201, batch):
    ensemble = ZeroShotEnsemble([Params(), _Failing(), SynFlow()])
    with pytest.warns(UserWarning, match=r"\['failing'\] failed on NB201Network \(RuntimeError: cannot read this model\)"):
        components = ensemble.components(tiny_nb201, batch[0])
    assert math.isnan(components["failing"]) and components["params"] > 0 and components["synflow"] > 0
    with pytest.raises(RuntimeError, match="cannot read"):
        score_proxies([_Failing()], tiny_nb201, batch[0])


def test_expressivity_is_finite_when_a_feature_map_has_fewer_samples_than_channels():
    """32x32 images through five stride-2 layers leave 1x1 maps: 4 samples of 64 channels give a singular covariance,
    whose zero eigenvalues must not turn the entropy into NaN (which ranked every such candidate last)."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
            self.blocks = nn.Sequential(*[nn.Sequential(nn.Conv2d(c, 2 * c, 3, 2, 1), nn.BatchNorm2d(2 * c), nn.ReLU()) for c in (16, 32, 64, 128)])

        def forward(self, x):
            return self.blocks(self.stem(x))

    scores = score_proxies([Expressivity(batch_size=4), Trainability(batch_size=4)], Net(), torch.randn(4, 3, 32, 32))
    assert math.isfinite(scores["expressivity"]) and scores["expressivity"] > 0 and math.isfinite(scores["trainability"])


def test_block_wise_proxies_find_the_blocks_of_a_timm_features_only_baseline():
    from lnas.predictors.base import feature_modules
    from lnas.tasks import ClassificationTask
    from lnas.tasks.baseline import timm_baseline

    baseline = timm_baseline("resnet18", ClassificationTask(num_classes=10), (3, 32, 32), num_levels=3)
    modules = feature_modules(baseline)
    assert type(modules[0]).__name__ == "MaxPool2d" and [type(m).__name__ for m in modules[1:]] == ["BasicBlock"] * 8
    scores = score_proxies([Expressivity(batch_size=8), Trainability(batch_size=8)], baseline, torch.randn(8, 3, 32, 32))
    assert all(math.isfinite(value) for value in scores.values())
