"""The search cascade: screen from the arch alone, score the best with the full predictor, measure the finalists."""

import csv
import math

import lightning as L
import pytest
import torch
from conftest import FlopsLatency, MeasuringFlopsLatency

from lnas.callbacks import HardwareLatency, ZeroShotSearch
from lnas.data import SyntheticClassificationDataModule
from lnas.hardware.lut import LutLatencyPredictor
from lnas.hardware.nb201 import table_devices
from lnas.predictors import Params
from lnas.search import Candidate, Constraint, Leaderboard, Objective, OptunaSearch
from lnas.search.cascade import Cascade, finalists, promotion_order, shortlist
from lnas.spaces import MBConvSpace
from lnas.spaces.nb201 import NB201Space
from lnas.tasks import ClassificationTask, SupernetModule

UP, FAST = Objective("score", "maximize"), Objective("latency_ms.d", "minimize")


def test_promotion_order_takes_the_feasible_by_cheap_score_then_the_infeasible_nearest_the_budget():
    board = Leaderboard([UP, FAST], [Constraint("latency_ms.d", 5.0)])
    for arch, score, latency in (("big", 9, 4), ("small", 1, 1), ("slow", 2, 3), ("mid", 5, 2), ("over", 99, 9), ("far_over", 1, 20)):
        board.add(Candidate(arch, {"score": score, "latency_ms.d": latency}))
    # the feasible by score, whatever their latency ("slow" is dominated by "mid" but scores above "small"); then the
    # infeasible, nearest the budget first, whatever their score
    assert promotion_order(board) == ["big", "mid", "slow", "small", "over", "far_over"]


def test_finalists_are_the_best_scored_feasible_candidates_not_yet_measured():
    board = Leaderboard([UP, FAST], [Constraint("latency_ms.d", 5.0)])
    for arch, score, latency in (("a", 3, 1), ("b", 2, 1), ("c", 9, 9), ("d", 1, 1), ("e", math.nan, 1)):
        board.add(Candidate(arch, {"score": score, "latency_ms.d": latency}))
    assert [r.arch for r in finalists(board, 2, set())] == ["a", "b"] and [r.arch for r in finalists(board, 2, {"a"})] == ["b", "d"]


def test_when_no_unmeasured_candidate_meets_the_budget_the_finalists_are_the_scored_ones_nearest_to_it():
    board = Leaderboard([UP, FAST], [Constraint("latency_ms.d", 5.0)])
    for arch, score, latency, stage in (("edge", 9, 5.2, "score"), ("near", 1, 5.1, "score"), ("far", 8, 7.0, "score"),
                                        ("unscored", math.nan, 5.05, "score"), ("measured", 5, 6.0, "measure")):
        board.add(Candidate(arch, {"score": score, "latency_ms.d": latency}, stage=stage))
    board.add(Candidate("screened", {"screen_score": 99.0, "latency_ms.d": 5.2}, stage="screen"))
    # the screened one has only a cheap score and the measured one is excluded: measuring goes on down from the budget
    assert [r.arch for r in finalists(board, 2, {"measured"})] == ["near", "edge"]
    assert [r.arch for r in finalists(board, 5, {"measured", "near", "edge", "far"})] == []


def test_the_finetune_shortlist_is_the_best_scored_feasible_candidates_then_the_default():
    board = Leaderboard([UP, FAST], [Constraint("latency_ms.d", 5.0)])
    for arch, score, latency in (("a", 3, 1), ("b", 2, 1), ("c", 9, 9), ("default", 1, 1), ("e", math.nan, 1), ("f", 0, 1)):
        board.add(Candidate(arch, {"score": score, "latency_ms.d": latency}))
    assert [r.arch for r in shortlist(board, 2, board.constraints, None, always=["default"])] == ["default", "a"]
    assert [r.arch for r in shortlist(board, 3, board.constraints, None, always=["default", "c"])] == ["default", "a", "b"]  # c over budget
    assert [r.arch for r in shortlist(board, 3, board.constraints, None, always=["f", "b", "default"])] == ["f", "b", "a"]  # always: half at most
    assert [r.arch for r in shortlist(board, 2, board.constraints, lambda r: r.arch != "a")] == ["b", "default"]
    by_latency = lambda r: -r.measures["latency_ms.d"] - 0.1 * r.score  # noqa: E731 - a second ranking: fastest, then lowest score
    assert [r.arch for r in shortlist(board, 3, board.constraints, None, rankings=[by_latency])] == ["a", "f", "b"]


def test_a_cascade_screens_many_from_the_arch_and_scores_the_best_few():
    space = NB201Space()
    hardware = HardwareLatency(table_devices(["fpga"], 4.0))
    board = Leaderboard([UP, Objective("latency_ms.fpga", "minimize")], hardware.constraints())
    strategy = OptunaSearch()
    strategy.start(space, board.objectives, seed=0)
    strategy.enqueue(space.default())
    cascade = Cascade(space, strategy, board)

    def cheap(arch, key):
        return Candidate(key, {"score": float(len(key)), **hardware.estimate_arch(key, None, (3, 32, 32)).measures})

    cascade.screen(60, board.objectives, board.constraints, cheap)
    assert len(board) == 60 and {r.stage for r in board.rows} == {"screen"} and all("screen_score" in r.measures for r in board.rows)
    order = list(cascade.promotions)
    assert order[0] == space.encode(space.default())  # the reference point is always scored, first
    scored = []
    cascade.score_until(8, lambda arch, key: scored.append(key) or Candidate(key, {"score": 1.0, "latency_ms.fpga": 1.0}))
    assert scored == order[:8] and len(cascade.scored()) == 8 and len(board) == 60
    assert {r.stage for r in cascade.scored()} == {"score"} and all(math.isfinite(r.measures["screen_score"]) for r in cascade.scored())


def _run(tmp_path, hardware: HardwareLatency, search: ZeroShotSearch | None = None, **options) -> tuple[ZeroShotSearch, SupernetModule]:
    space = MBConvSpace(stages=[{"channels": c, "stride": 2, "depths": [1, 2]} for c in (8, 16, 24, 32)], stem_channels=8, widths=[0.5, 1.0],
                        resolutions=[32, 64])
    module = SupernetModule(space, ClassificationTask(3, head_width=16))
    callback = search or ZeroShotSearch(Params(), output_dir=str(tmp_path), **options)
    data = SyntheticClassificationDataModule(image_size=64, num_train=16, num_val=4, num_test=4, batch_size=8)
    L.Trainer(max_epochs=1, callbacks=[callback, hardware], logger=False, enable_progress_bar=False, enable_model_summary=False,
              default_root_dir=str(tmp_path), num_sanity_val_steps=0, limit_val_batches=0).fit(module, datamodule=data)
    return callback, module


def test_the_search_callback_runs_the_cascade_and_records_each_candidates_stage(tmp_path):
    hardware = HardwareLatency({"d": {"estimator": FlopsLatency(1.0)}})  # no latency from the arch: the screen ranks by FLOPs
    search, module = _run(tmp_path, hardware, num_candidates=6, screen=40, strategy=OptunaSearch())
    default = module.space.encode(module.space.default())
    rows = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    stages = [row["stage"] for row in rows]
    assert len(rows) == 40 and stages.count("screen") == 34 and stages.count("score") + stages.count("measure") == 6
    assert default in {row["arch"] for row in rows if row["stage"] != "screen"}
    assert "screen_score" in rows[0] and all(float(r["screen_score"]) == float(r["flops"]) for r in rows)


def test_finalists_are_measured_side_by_side_with_the_baseline_and_the_pick_uses_that_measurement(tmp_path):
    device = MeasuringFlopsLatency(1.0, measured_factor=1.2)
    hardware = HardwareLatency({"d": {"estimator": device}}, target_speedup=1.5)
    space = MBConvSpace(stages=[{"channels": c, "stride": 2, "depths": [1, 2]} for c in (8, 16, 24, 32)], stem_channels=8, widths=[0.5, 1.0],
                        resolutions=[32, 64])
    module = SupernetModule(space, ClassificationTask(3, head_width=16))
    baseline = module.candidate(space.default(), inherit=False)
    hardware.set_budgets_from_baseline({"d": device.estimate("", baseline, (3, 64, 64)).median_ms})
    estimated_budget = hardware.targets[0].target_latency_ms
    callback = ZeroShotSearch(Params(), num_candidates=10, finalists=3, output_dir=str(tmp_path))
    callback.set_baseline(space.encode(space.default()), baseline)
    data = SyntheticClassificationDataModule(image_size=64, num_train=16, num_val=4, num_test=4, batch_size=8)
    L.Trainer(max_epochs=1, callbacks=[callback, hardware], logger=False, enable_progress_bar=False, enable_model_summary=False,
              default_root_dir=str(tmp_path), num_sanity_val_steps=0, limit_val_batches=0).fit(module, datamodule=data)
    measured = {r.arch for r in callback.leaderboard.candidates() if r.stage == "measure"}
    assert space.encode(space.default()) in measured and len(measured) == device.measured == 4  # 3 finalists and the baseline, one session
    assert hardware.targets[0].target_latency_ms == pytest.approx(1.2 * estimated_budget)  # the budget from the side-by-side baseline
    pick = callback.picks["d"]
    assert pick.stage == "measure" and pick.measures["latency_ms.d"] <= hardware.targets[0].target_latency_ms


def test_finetune_trains_the_shortlist_briefly_and_the_pick_is_the_one_whose_loss_fell_fastest(tmp_path, monkeypatch):
    hardware = HardwareLatency({"d": {"estimator": MeasuringFlopsLatency(1.0)}})
    calls = []

    def loss(self, arch, train_batches, steps):  # the lowest-scored of the shortlist trains best
        key = self.space.encode(arch)
        calls.append((key, steps, len(list(train_batches))))
        return search.leaderboard.get(key).score

    monkeypatch.setattr(SupernetModule, "finetune_loss", loss)
    search = ZeroShotSearch(Params(), num_candidates=8, finalists=4, finetune=3, finetune_steps=7, output_dir=str(tmp_path))
    search, module = _run(tmp_path, hardware, search=search)
    tuned = [r for r in search.leaderboard.candidates() if r.stage == "finetune"]
    default = module.space.encode(module.space.default())
    assert len(calls) == len(tuned) and 3 <= len(tuned) <= 4 and {steps for _, steps, _ in calls} == {7} and default in {r.arch for r in tuned}
    assert all(n == 2 for *_, n in calls)  # the training split (16 images, two batches)
    assert search.picks["d"].arch == min(tuned, key=lambda r: r.score).arch
    rows = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    assert rows[0]["stage"] == "finetune" and float(rows[0]["finetune_loss"]) == search.picks["d"].score


def test_the_finetune_loss_is_the_mean_training_loss_of_a_short_run_from_the_supernets_weights():
    space = MBConvSpace(stages=[{"channels": c, "stride": 2, "depths": [1, 2]} for c in (8, 16, 24, 32)], stem_channels=8, widths=[0.5, 1.0])
    module = SupernetModule(space, ClassificationTask(3, head_width=16))
    data = SyntheticClassificationDataModule(image_size=32, num_train=16, num_val=8, num_test=4, batch_size=8)
    data.setup("fit")
    before = [p.detach().clone() for p in module.parameters()]
    seen = []
    batches = [(images, labels) for images, labels in data.train_dataloader()]  # two batches, repeated for the third step
    module.task.loss = lambda outputs, targets, images, model: seen.append(len(images)) or {"loss": outputs.logsumexp(1).mean() * 0 + len(seen)}
    assert module.finetune_loss(space.default(), batches, steps=3) == pytest.approx((1 + 2 + 3) / 3) and seen == [8, 8, 8]
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))  # the supernet is not touched
    assert math.isnan(module.finetune_loss(space.default(), [], steps=3))  # no training data: no endless loop


def _scaling_search(tmp_path, monkeypatch, margin: float, scaling_loss: float,
                    baseline_mflops: float | None = None) -> tuple[ZeroShotSearch, SupernetModule]:
    """A search with 3 scalings of the default; fine-tuning gives each scaling ``scaling_loss``, every other candidate 1.
    The baseline's latency is the default's MFLOPs (the default is the baseline) or ``baseline_mflops``; budget: / 1.5."""
    space = MBConvSpace(stages=[{"channels": c, "stride": 2, "depths": [1, 2]} for c in (8, 16, 24, 32)], stem_channels=8, widths=[0.5, 1.0],
                        resolutions=[32, 64])
    module = SupernetModule(space, ClassificationTask(3, head_width=16))
    hardware = HardwareLatency({"d": {"estimator": MeasuringFlopsLatency(1.0)}}, target_speedup=1.5)
    hardware.set_budgets_from_baseline({"d": baseline_mflops or module.arch_costs(space.default(), (3, 64, 64))[1] / 1e6})
    search = ZeroShotSearch(Params(), num_candidates=8, finalists=1, finetune=6, finetune_steps=1, scalings=3, scaling_margin=margin,
                            output_dir=str(tmp_path))
    monkeypatch.setattr(SupernetModule, "finetune_loss",
                        lambda self, arch, batches, steps: scaling_loss if self.space.encode(arch) in search.scaling_keys else 1.0)
    _run(tmp_path, hardware, search=search)
    return search, module


@pytest.mark.parametrize("baseline_share", [None, 0.6])
def test_the_largest_default_scalings_within_the_budget_are_scored_first_and_fine_tuned_when_feasible(tmp_path, monkeypatch, baseline_share):
    """The scalings' FLOPs bound: the default's FLOPs times the budget over the default's latency, whether the baseline is
    the default or another model (``baseline_share``: its latency as a fraction of the default's MFLOPs)."""
    probe = SupernetModule(MBConvSpace(stages=[{"channels": c, "stride": 2, "depths": [1, 2]} for c in (8, 16, 24, 32)], stem_channels=8,
                                       widths=[0.5, 1.0], resolutions=[32, 64]), ClassificationTask(3, head_width=16))
    default_mflops = probe.arch_costs(probe.space.default(), (3, 64, 64))[1] / 1e6
    search, module = _scaling_search(tmp_path, monkeypatch, margin=0.0, scaling_loss=1.0,
                                     baseline_mflops=baseline_share and baseline_share * default_mflops)
    space = module.space
    default_row = search.leaderboard.get(space.encode(space.default()))
    budget = search.hardware.targets[0].target_latency_ms
    fraction = budget / default_row.measures["latency_ms.d"]
    target = module.arch_costs(space.default(), (3, 64, 64))[1] * fraction
    if baseline_share:
        assert fraction < 0.5 < 1 / 1.5  # the bound follows the budget, not the default's FLOPs / target_speedup
    flops = {space.encode(a): module.arch_costs(a, (3, 64, 64))[1] for a in space.scalings(space.default())}
    assert search.scaling_keys == sorted((key for key in flops if flops[key] <= target), key=lambda key: -flops[key])[:3]
    scored = [row.arch for row in search.leaderboard.candidates()]
    assert scored[:4] == [space.encode(space.default()), *search.scaling_keys]  # the reference, then its scalings
    feasible = [key for key in search.scaling_keys if search.leaderboard.is_feasible(search.leaderboard.get(key))]
    assert {search.leaderboard.get(key).stage for key in search.scaling_keys} <= {"measure", "finetune"}  # measured beside the finalist
    tuned = {row.arch for row in search.leaderboard.candidates() if row.stage == "finetune"}
    assert feasible and set(feasible) <= tuned
    if baseline_share is None:  # a looser budget: the shortlist holds other feasible candidates too
        assert tuned - set(feasible)
    with pytest.raises(ValueError, match="search.scaling_margin in"):
        ZeroShotSearch(Params(), scaling_margin=1.0)


@pytest.mark.parametrize(("margin", "scaling_loss", "picks_a_scaling"), [(0.05, 1.04, True), (0.0, 1.04, False), (0.05, 1.06, False)])
def test_a_candidate_beats_the_best_scaling_only_by_more_than_the_margin(tmp_path, monkeypatch, margin, scaling_loss, picks_a_scaling):
    search, _ = _scaling_search(tmp_path, monkeypatch, margin, scaling_loss)
    assert (search.picks["d"].arch in search.scaling_keys) == picks_a_scaling


def test_a_look_up_table_device_is_calibrated_first_screens_from_the_arch_and_is_refit_by_the_finalists(tmp_path, monkeypatch):
    """The cascade with the default device kind: a few candidates measured to calibrate the table's estimates from the
    arch, the default scored and its scalings promoted first after the screen, the finalists measured and refitting it."""
    lut = LutLatencyPredictor(warmup=1, runs=3, repeats=2, cache_dir=tmp_path / "cache", calibration_size=3)
    hardware = HardwareLatency({"cpu": {"estimator": lut, "target_latency_ms": 1e6}})
    exported = []
    monkeypatch.setattr(HardwareLatency, "evaluate", _counting(HardwareLatency.evaluate, exported))
    search = ZeroShotSearch(Params(), num_candidates=8, screen=30, finalists=2, scalings=2, output_dir=str(tmp_path), strategy=OptunaSearch())
    search, module = _run(tmp_path, hardware, search=search)
    space, board = module.space, search.leaderboard
    default = space.encode(space.default())
    assert search.stage_report()["calibrate"]["candidates"] == 3 and len(lut.points) == 0  # measured, not estimated one by one
    assert all(parts is not None for parts in exported)  # every candidate's latency came from its parts
    scored = [row.arch for row in board.candidates() if row.stage != "screen"]
    assert len(scored) == 8 and {default, *search.scaling_keys} <= set(scored) and len(search.scaling_keys) == 2
    assert [row.arch for row in board.candidates() if row.stage == "screen"] and len(board.candidates()) >= 30
    measured = [row for row in board.candidates() if row.stage == "measure"]
    assert len(lut.arch_points) == 3 + len(measured) and len(measured) >= 2  # the finalists refit the estimate
    for row in board.candidates():
        if row.stage == "score":  # estimated again with the refit calibration
            parts = space.parts(space.decode(row.arch), (3, 64, 64))
            assert row.measures["latency_ms.cpu"] == pytest.approx(lut.estimate_arch(row.arch, parts, (3, 64, 64)).median_ms)


def _counting(evaluate, seen: list):
    def wrapper(self, key, model, input_shape, parts=None):
        seen.append(parts)
        return evaluate(self, key, model, input_shape, parts)

    return wrapper
