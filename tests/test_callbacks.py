"""The search callbacks inside a plain Lightning Trainer: the README example, shrunk, and an exact resume."""

import csv
import json
import os
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lnas.callbacks import HardwareLatency, ZeroShotSearch
from lnas.data import SyntheticDetectionDataModule
from lnas.hardware import OrtLatencyEstimator
from lnas.predictors import SynFlow
from lnas.search import OptunaSearch, RegularizedEvolutionSampler
from lnas.spaces import MBConvSpace
from lnas.tasks import DetectionTask, SupernetModule


def _parts(num_candidates: int, out):
    space = MBConvSpace(stages=[{"channels": c, "stride": 2, "depths": [1, 2]} for c in (16, 24, 32, 40)], stem_channels=8)
    module = SupernetModule(space, DetectionTask(3, head_width=16, tower_depth=1))
    strategy = OptunaSearch(partial(RegularizedEvolutionSampler, population=3, tournament=2))
    search = ZeroShotSearch(SynFlow(), num_candidates=num_candidates, strategy=strategy, output_dir=str(out))
    latency = HardwareLatency({"cpu": {"estimator": OrtLatencyEstimator(warmup=1, runs=3, repeats=2), "target_latency_ms": 50.0}})
    data = SyntheticDetectionDataModule(image_size=64, num_train=32, num_val=8, num_test=8, batch_size=8)
    return module, search, latency, data


def _trainer(epochs: int, callbacks, out) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=str(out), num_sanity_val_steps=0, limit_val_batches=1)


def test_callbacks_in_a_plain_trainer_choose_an_arch(tmp_path):
    module, search, latency, data = _parts(5, tmp_path)
    _trainer(1, [search, latency], tmp_path).fit(module, datamodule=data)
    assert len(search.leaderboard) == 5 and search.chosen is not None
    assert module.space.encode(search.chosen) == search.leaderboard.best().arch == search.picks["cpu"].arch
    assert search.leaderboard.rows[0].arch == module.space.encode(module.space.default())  # the default is always scored, first
    rows = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    assert len(rows) == 5 and all(float(r["latency_ms.cpu"]) > 0 for r in rows)
    assert all((tmp_path / name).exists() for name in ("arch.yaml", "picks.yaml", "pareto.png"))
    steps = [r.step for r in search.leaderboard.rows]
    assert steps == sorted(steps) and steps[0] < steps[-1]  # scoring is spread over the warmup batches
    best = module.candidate(search.chosen, inherit=True).eval()
    cls, box, ctr = best(torch.rand(1, 3, 64, 64))
    assert cls.shape[-1] == 3 and box.shape[-1] == 4


class _CrashInSecondEpoch(L.Callback):
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash")


def test_resumed_search_continues_exactly(tmp_path):
    torch.manual_seed(0)
    module, search, latency, data = _parts(8, tmp_path / "full")
    _trainer(2, [search, latency], tmp_path / "full").fit(module, datamodule=data)

    torch.manual_seed(0)
    module, search_a, latency_a, data = _parts(8, tmp_path / "a")
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _trainer(2, [search_a, latency_a, checkpoint, _CrashInSecondEpoch()], tmp_path / "a").fit(module, datamodule=data)
    first_half = [r.arch for r in search_a.leaderboard.rows]
    assert 0 < len(first_half) < 8

    module, search_b, latency_b, data = _parts(8, tmp_path / "b")
    _trainer(2, [search_b, latency_b], tmp_path / "b").fit(module, datamodule=data, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    resumed = [r.arch for r in search_b.leaderboard.rows]
    assert resumed[: len(first_half)] == first_half
    assert resumed == [r.arch for r in search.leaderboard.rows]
    assert set(first_half) <= set(latency_b.cache)  # measured latencies were restored, not re-measured


def test_search_under_two_process_ddp_agrees_on_every_rank(tmp_path):
    script = Path(__file__).with_name("ddp_search.py")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = sorted(re.findall(r"rank (\d) chose (\S+) scored (\d+)", result.stdout))  # the two processes' lines may interleave
    assert [rank for rank, _, _ in reports] == ["0", "1"]
    assert reports[0][1] == reports[1][1]  # both ranks received the same arch
    assert [scored for _, _, scored in reports] == ["4", "0"]  # the board is kept on rank 0 only
    assert (tmp_path / "arch.yaml").exists() and len(list(csv.DictReader((tmp_path / "leaderboard.csv").open()))) == 4


def test_two_processes_score_the_rounds_in_shares_and_match_one_process(tmp_path):
    """Rounds of 4 proposals shared out over 2 DDP ranks give the leaderboard and pick of 1 process (same seed)."""
    script = Path(__file__).with_name("ddp_rounds.py")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    results = {}
    for devices in (1, 2):
        done = subprocess.run([sys.executable, str(script), str(tmp_path / str(devices)), str(devices)], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        lines = re.findall(r"RESULT (\{.*\})", done.stdout)
        assert len(lines) == 1  # printed by rank 0 only
        results[devices] = json.loads(lines[0])
    assert len(results[1]["board"]) == 10 and results[2]["board"] == results[1]["board"] and results[2]["pick"] == results[1]["pick"]


def test_every_candidate_is_scored_on_one_seeded_batch_whatever_the_data_order_and_the_number_of_processes():
    from torch.utils.data import DataLoader, DistributedSampler, IterableDataset

    from lnas.callbacks.zero_shot_search import scoring_batch
    from lnas.data.transforms import AugmentedClassification

    dataset = AugmentedClassification(torch.rand(40, 3, 8, 8), torch.arange(40))  # random crop and flip at every access
    plain = scoring_batch(DataLoader(dataset, batch_size=6, shuffle=True), None, seed=3)
    sharded = scoring_batch(DataLoader(dataset, batch_size=6, sampler=DistributedSampler(dataset, num_replicas=2, rank=1)), None, seed=3)
    assert plain[0].shape == (6, 3, 8, 8) and torch.equal(plain[0], sharded[0]) and torch.equal(plain[1], sharded[1])
    assert not torch.equal(plain[1], scoring_batch(DataLoader(dataset, batch_size=6), None, seed=4)[1])  # the seed draws it
    assert len(scoring_batch(DataLoader(dataset, batch_size=6), 16, seed=3)[1]) == 16

    class Stream(IterableDataset):
        def __iter__(self):
            yield from range(3)

    assert scoring_batch(DataLoader(Stream(), batch_size=2), None, seed=3, fallback="first batch") == "first batch"
    with pytest.raises(ValueError, match="scoring_batch_size must be >= 1"):
        ZeroShotSearch(SynFlow(), scoring_batch_size=0)
