"""Run by tests/test_callbacks.py: a search in rounds of 4 on ``devices`` CPU processes (DDP when 2); rank 0 prints its
leaderboard (arch, score, latency) and pick as JSON, and the scoring stage's wall time and throughput. The predictor
uses the data (JacobCov's input Jacobians), so the two runs agree only if every rank scores on the same batch."""

import json
import sys
import time
from functools import partial
from pathlib import Path

import lightning as L

sys.path.insert(0, str(Path(__file__).parent))
from conftest import FlopsLatency  # noqa: E402

from lnas.callbacks import HardwareLatency, ZeroShotSearch  # noqa: E402
from lnas.data import SyntheticClassificationDataModule  # noqa: E402
from lnas.predictors import JacobCov, SynFlow, ZeroShotEnsemble  # noqa: E402
from lnas.search import OptunaSearch, RegularizedEvolutionSampler  # noqa: E402
from lnas.spaces import MBConvSpace  # noqa: E402
from lnas.tasks import ClassificationTask, SupernetModule  # noqa: E402


def main(out: Path, devices: int) -> None:
    space = MBConvSpace(stages=[{"channels": c, "stride": 2, "depths": [1, 2]} for c in (16, 24, 32, 40)], stem_channels=8,
                        widths=[0.5, 1.0], resolutions=[32, 64])
    module = SupernetModule(space, ClassificationTask(3, head_width=16))
    strategy = OptunaSearch(partial(RegularizedEvolutionSampler, population=4, tournament=2))
    search = ZeroShotSearch(ZeroShotEnsemble([SynFlow(), JacobCov()]), num_candidates=10, strategy=strategy, output_dir=str(out), round_size=4)
    latency = HardwareLatency({"d": {"estimator": FlopsLatency(1.0), "target_latency_ms": 8.0}})
    data = SyntheticClassificationDataModule(image_size=64, num_train=48, num_val=8, num_test=8, batch_size=8)
    trainer = L.Trainer(max_epochs=1, callbacks=[search, latency], logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(out), num_sanity_val_steps=0, limit_val_batches=0, accelerator="cpu", devices=devices,
                        strategy="ddp_find_unused_parameters_true" if devices > 1 else "auto")
    started = time.perf_counter()
    trainer.fit(module, datamodule=data)
    if trainer.global_rank == 0:
        board = [(r.arch, r.score, r.measures["latency_ms.d"]) for r in search.leaderboard.rows]
        score = search.stage_report()["score"]
        print("RESULT " + json.dumps({"board": board, "pick": space.encode(search.chosen), "fit_seconds": time.perf_counter() - started,
                                      "score_seconds": score["seconds"], "candidates_per_second": score["candidates"] / score["seconds"]}),
              flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
