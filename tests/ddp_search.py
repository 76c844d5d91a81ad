"""Run by tests/test_callbacks.py: the search callbacks under 2-process DDP on CPU; every rank prints what it chose."""

import sys
from pathlib import Path

import lightning as L

sys.path.insert(0, str(Path(__file__).parent))
from test_callbacks import _parts  # noqa: E402


def main(out: Path) -> None:
    module, search, latency, data = _parts(4, out)
    trainer = L.Trainer(max_epochs=1, callbacks=[search, latency], logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(out), num_sanity_val_steps=0, limit_val_batches=1,
                        strategy="ddp_find_unused_parameters_true", accelerator="cpu", devices=2)
    trainer.fit(module, datamodule=data)
    print(f"rank {trainer.global_rank} chose {module.space.encode(search.chosen)} scored {len(search.leaderboard)}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
