"""Data-free mode (``data=characteristics``): a search from the input shape, classes and object sizes alone."""

import csv
import json

import pytest
from conftest import QUICK_LATENCY

from lnas.data import DataCharacteristics
from lnas.predictors import JacobCov, SynFlow, ZeroShotEnsemble, data_free_predictor
from lnas.predictors.registry import load_proxy
from lnas.report import headline
from lnas.spaces.base import FeatureInfo
from lnas.train import train

SMALL_SEARCH = ["warmup_epochs=1", "search.num_candidates=5", "search.screen=30", "search.scalings=2", "search.finalists=2",
                "hardware.target_speedup=null", "data.num_batches=2", "data.batch_size=4", *QUICK_LATENCY]


def test_the_predictor_keeps_only_members_that_score_without_data():
    default = load_proxy("ensemble")
    assert data_free_predictor(default) == (default, {})  # every member of the default predictor is data-free
    ensemble = load_proxy("ensemble_rank")
    kept, left_out = data_free_predictor(ensemble)
    assert isinstance(kept, ZeroShotEnsemble) and "jacob_cov" in ensemble.used
    assert kept.used == [name for name in ensemble.used if name != "jacob_cov"] and left_out == {"jacob_cov": "needs real images"}
    single = SynFlow()
    assert data_free_predictor(single) == (single, {})
    with pytest.raises(ValueError, match=r"'grad_norm' cannot score without data \(grad_norm: needs labels\).*'synflow'"):
        data_free_predictor(load_proxy("grad_norm"))
    with pytest.raises(ValueError, match="jacob_cov: needs real images"):
        data_free_predictor(ZeroShotEnsemble([JacobCov()]))


@pytest.mark.parametrize(("spec", "message"), [
    ({"num_classes": 3}, r"missing \['image_size'\].*data.image_size=128"),
    ({"image_size": 64}, r"missing \['num_classes'\]"),
    ({"image_size": 64, "num_classes": 0}, "must be >= 1"),
    ({"image_size": 50, "num_classes": 3}, "multiple of 32"),
    ({"image_size": 64, "num_classes": 3, "object_sizes": [20, 8]}, r"\[smallest, largest\].*got \[20, 8\]"),
    ({"image_size": 64, "num_classes": 3, "object_sizes": [8, 96]}, r"<= image_size \(64\)"),
])
def test_a_bad_characteristics_spec_names_the_field_and_what_is_allowed(spec, message):
    with pytest.raises(ValueError, match=message):
        DataCharacteristics(**spec)


def test_detection_needs_object_sizes_no_smaller_than_the_finest_stride():
    strides = [FeatureInfo(40, 8), FeatureInfo(80, 16)]
    DataCharacteristics(image_size=64, num_classes=3).check_task("classification", strides)
    with pytest.raises(ValueError, match="missing object_sizes"):
        DataCharacteristics(image_size=64, num_classes=3).check_task("detection", strides)
    with pytest.raises(ValueError, match=r"objects of 4 px are smaller than the finest feature stride of this space \(8 px\)"):
        DataCharacteristics(image_size=64, num_classes=3, object_sizes=[4, 32]).check_task("detection", strides)
    DataCharacteristics(image_size=64, num_classes=3, object_sizes=[8, 32]).check_task("detection", strides)


def test_the_supernet_takes_no_training_step_on_a_batch_without_targets():
    from lnas.spaces import MBConvSpace
    from lnas.tasks import ClassificationTask, SupernetModule

    space = MBConvSpace(stages=[{"channels": 8, "stride": 2, "depths": [1]}], stem_channels=8, out_indices=[0])
    module = SupernetModule(space, ClassificationTask(3, head_width=8))
    images, targets = next(iter(DataCharacteristics(image_size=32, num_classes=3, batch_size=2, num_batches=1).train_dataloader()))
    assert module.training_step((images, targets), 0) is None  # Lightning skips the optimizer step


def test_batches_are_gaussian_noise_of_the_shape_without_targets():
    data = DataCharacteristics(image_size=64, num_classes=3, channels=1, batch_size=4, num_batches=3, seed=5)
    batches = list(data.train_dataloader())
    assert len(batches) == 3 and all(images.shape == (4, 1, 64, 64) and targets is None for images, targets in batches)
    assert abs(float(batches[0][0].std()) - 1.0) < 0.1 and data.input_shape == (1, 64, 64)
    again = next(iter(DataCharacteristics(image_size=64, num_classes=3, channels=1, batch_size=4, num_batches=3, seed=5).train_dataloader()))
    assert (again[0] == batches[0][0]).all()  # fixed by the seed


@pytest.mark.parametrize(("experiment", "extra"), [("classification", ["data.image_size=64", "data.num_classes=10"]),
                                                   ("detection", ["data.image_size=64", "data.num_classes=3", "data.object_sizes=[16,48]"])])
def test_a_data_free_run_searches_measures_and_reports_without_training(compose_cfg, tmp_path, experiment, extra):
    out = tmp_path / experiment
    summary = train(compose_cfg(f"+experiment={experiment}", "data=characteristics", *extra, *SMALL_SEARCH, "predictor=ensemble_rank",
                                f"output_dir={out}"))
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert len(rows) == summary["candidates_screened"] >= 30 and summary["pick"]["arch"] == rows[0]["arch"]
    assert sum(row["stage"] != "screen" for row in rows) == summary["candidates_scored"] == 5  # the cascade: screened, then scored
    assert "proxy.jacob_cov" not in rows[0] and {"proxy.synflow", "proxy.expressivity"} <= set(rows[0])
    assert summary["data_free"]["left_out"] == {"jacob_cov": "needs real images"}
    assert summary["pick"]["metrics"] == {} and not summary["pick"]["trained"] and not summary["baseline"]["trained"]
    assert not (out / "final").exists() and not (out / "baseline").exists()  # nothing trained
    assert all(summary[role]["latency_ms"]["cpu"] > 0 for role in ("pick", "baseline"))
    report = (out / "report.md").read_text()
    assert report.startswith(f"# {headline(summary)}\n") and "not measured (data-free search)" in report.splitlines()[0]
    assert "Data-free search (`data=characteristics`: input [3, 64, 64]" in report and "left out: jacob_cov (needs real images)" in report
    assert json.loads((out / "summary.json").read_text())["data_free"]["predictor_members"] == summary["data_free"]["predictor_members"]


def test_a_data_free_run_refuses_a_given_arch_and_a_detection_spec_without_object_sizes(compose_cfg, tmp_path):
    with pytest.raises(ValueError, match="missing object_sizes"):
        train(compose_cfg("+experiment=detection", "data=characteristics", "data.image_size=64", "data.num_classes=3", f"output_dir={tmp_path}"))
    with pytest.raises(ValueError, match="searches without training"):
        train(compose_cfg("+experiment=classification", "data=characteristics", "data.image_size=64", "data.num_classes=3",
                          "arch=r64-w1k5e4k5e4-w1k5e4k5e4-w1k5e4k5e4-w1k5e4k5e4", f"output_dir={tmp_path}"))
    assert not any(tmp_path.iterdir())
