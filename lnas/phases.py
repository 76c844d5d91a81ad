"""The phases of the main job (warmup search, final training of the pick, of the baseline) made resumable.

Each phase lives in ``<run folder>/<phase>/``. While it trains, :class:`PhaseCheckpoint` writes ``last.ckpt`` at the end
of every epoch but the last (atomically: a kill never leaves half a checkpoint), with the random state of torch, Python
and NumPy, because Lightning's checkpoints do not keep it and the next epoch's data order and augmentation draw from
it. Not after the last epoch: Lightning resumes a finished fit without its end hooks, where the search's last stages
run, so a phase killed in its last epoch or after it runs that epoch again. When a
phase is over, its outcome goes to ``result.pt`` (:func:`save_result`). ``python -m lnas.train resume=<run folder>``
skips the phases with a result, continues the one that was running from its ``last.ckpt`` (module, optimizer, loop
position, callbacks: the search's leaderboard and study, the latency cache), and runs the rest. Every phase starts
from the run's seed, so what a phase draws does not depend on whether the phases before it ran in this process.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only

CHECKPOINT, RESULT = "last.ckpt", "result.pt"


class PhaseCheckpoint(L.Callback):
    """Save the trainer's state to ``path`` at the end of every training epoch but the last, atomically, with the random
    state."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs:
            return
        partial = self.path.with_name(self.path.name + ".partial")
        trainer.save_checkpoint(partial, weights_only=False)  # the full state: optimizer, loops, callbacks
        if trainer.is_global_zero:
            os.replace(partial, self.path)
        trainer.strategy.barrier()

    def state_dict(self) -> dict:
        """The random states as tensors and plain values (what a weights-only checkpoint load accepts)."""
        name, keys, position, has_gauss, cached = np.random.get_state()
        return {"torch": torch.get_rng_state(), "python": random.getstate(),
                "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)]}

    def load_state_dict(self, state_dict: dict) -> None:
        torch.set_rng_state(state_dict["torch"])
        random.setstate(state_dict["python"])
        name, keys, position, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))


def phase_dir(out: Path, phase: str) -> Path:
    return Path(out) / phase


def save_result(out: Path, phase: str, result: dict) -> Path:
    """Write a finished phase's outcome (tensors and plain values) atomically; only rank 0 writes."""
    path = phase_dir(out, phase) / RESULT
    if rank_zero_only.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        torch.save(result, partial)
        os.replace(partial, path)
    return path


def load_result(out: Path, phase: str) -> dict | None:
    """A finished phase's outcome, or None when it did not finish."""
    path = phase_dir(out, phase) / RESULT
    return torch.load(path, weights_only=False) if path.exists() else None


def checkpoint_path(out: Path, phase: str) -> Path:
    """Where :class:`PhaseCheckpoint` keeps the phase's last checkpoint."""
    return phase_dir(out, phase) / "checkpoints" / CHECKPOINT


def last_checkpoint(out: Path, phase: str) -> Path | None:
    """The phase's last checkpoint, if it wrote one."""
    path = checkpoint_path(out, phase)
    return path if path.exists() else None
