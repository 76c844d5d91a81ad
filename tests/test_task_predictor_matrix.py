"""Every predictor with every task, end to end (``+debug=fast``, shrunk further to two candidates at 32x32, no
finalists, a latency of a few runs, and the fine-tune stage only with the default predictor: the matrix checks that
each combination works, not what it picks)."""

import csv
import math

import pytest
from conftest import QUICK_LATENCY

from lnas.predictors.registry import available
from lnas.train import train

TASKS = ("classification", "detection", "segmentation")


@pytest.mark.parametrize("predictor", available())
@pytest.mark.parametrize("experiment", TASKS)
def test_every_predictor_runs_end_to_end_with_every_task(compose_cfg, tmp_path, experiment, predictor):
    cfg = compose_cfg(f"+experiment={experiment}", "+debug=fast", f"predictor={predictor}", "search.num_candidates=2", "train_baseline=false",
                      "data.image_size=32", "data.num_train=16", "search.finalists=0",
                      f"search.finetune={2 if predictor == 'ensemble' else 0}", *QUICK_LATENCY, f"output_dir={tmp_path}")
    summary = train(cfg)
    rows = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    assert len(rows) == summary["candidates_scored"] == 2 and summary["task"] == experiment
    scores = [float(row["score"]) for row in rows]
    assert any(math.isfinite(score) for score in scores), f"{predictor} gave no finite score on {experiment}: {scores}"
    assert math.isfinite(summary["pick"]["metrics"][summary["metric"]]) and (tmp_path / "model.onnx").exists()
    if predictor == "ensemble":  # the fine-tune's training loss decided the pick: the lowest, or a scaling of the default within the margin
        pick = next(row for row in rows if row["arch"] == summary["pick"]["arch"])
        assert rows[0]["stage"] == pick["stage"] == "finetune" and math.isfinite(float(rows[0]["finetune_loss"]))
        assert float(rows[0]["finetune_loss"]) >= (1 - cfg.search.scaling_margin) * float(pick["finetune_loss"])
