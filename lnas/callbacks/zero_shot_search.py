"""``ZeroShotSearch``: a Lightning callback that searches the module's space during the warmup epochs.

Candidates are proposed by a strategy, scored by a training-free proxy on batches from the trainer, checked by
every constraint callback in the trainer (e.g. :class:`~lnas.callbacks.HardwareLatency`), and recorded in a
leaderboard. Scoring is spread over the warmup batches; at the end of training the best feasible candidate is
chosen on rank 0, broadcast, and ``leaderboard.csv``, ``pareto.png`` and ``arch.yaml`` are written there.

The LightningModule must expose ``space`` (a :class:`~lnas.spaces.SearchSpace`) and
``candidate(arch, inherit, seed) -> nn.Module`` (a plain network for an arch).
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from lnas.callbacks.hardware_latency import HardwareLatency
from lnas.hardware.cost import count_flops, count_params
from lnas.predictors.base import Proxy, Supervision
from lnas.report import write_arch_yaml, write_pareto_plot
from lnas.search.leaderboard import Candidate, Leaderboard
from lnas.search.strategies import RandomSearch, Strategy
from lnas.spaces.arch import Arch


def _inputs_of(batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, list | tuple) else batch


def supervision(pl_module: L.LightningModule, batch, model: torch.nn.Module) -> object:
    """What label-using proxies get: the module's ``proxy_loss(outputs, targets, images, model)`` over the batch's
    targets when it has one (an lnas task module), else the targets themselves (class indices: cross-entropy)."""
    images, targets = batch[0], batch[1]
    loss = getattr(pl_module, "proxy_loss", None)
    if loss is None:
        return targets
    return Supervision(targets, lambda outputs, labels: loss(outputs, labels, images, model))


class ZeroShotSearch(L.Callback):
    """Score ``num_candidates`` candidates with ``proxy`` during warmup and choose the best feasible one.

    Args:
        proxy: the zero-shot accuracy predictor.
        num_candidates: how many distinct candidates to score.
        strategy: proposes candidates (default: random sampling).
        seed: seeds the proposal generator and the fresh initialisation of scored candidates.
        inherit_weights: score candidates with the supernet's current weights instead of a fresh
            initialisation (the zero-shot papers score freshly initialised networks).
        output_dir: where to write the search results (default: the trainer's ``default_root_dir``).
    """

    def __init__(self, proxy: Proxy, num_candidates: int = 50, strategy: Strategy | None = None, seed: int = 0,
                 inherit_weights: bool = False, output_dir: str | None = None) -> None:
        if num_candidates < 1:
            raise ValueError(f"search.num_candidates must be >= 1, got {num_candidates}")
        self.proxy, self.num_candidates, self.seed = proxy, num_candidates, seed
        self.strategy = strategy or RandomSearch()
        self.inherit_weights, self.output_dir = inherit_weights, output_dir
        self.leaderboard = Leaderboard(proxy.higher_is_better, aggregate=getattr(proxy, "aggregate", None))
        self.generator = torch.Generator().manual_seed(seed)
        self.chosen: Arch | None = None
        self.constraints: list[HardwareLatency] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(proxy=type(self.proxy).__name__, seed=self.seed)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        missing = [name for name in ("space", "candidate") if not hasattr(pl_module, name)]
        if missing:
            raise TypeError(f"ZeroShotSearch needs a LightningModule with `space` and `candidate(arch, inherit, seed)`; "
                            f"{type(pl_module).__name__} lacks {missing}")
        self.constraints = [cb for cb in trainer.callbacks if isinstance(cb, HardwareLatency)]

    def _total_batches(self, trainer: L.Trainer) -> float:
        per_epoch = trainer.num_training_batches
        if trainer.max_steps and trainer.max_steps > 0:
            return float(trainer.max_steps)
        return float(per_epoch * max(trainer.max_epochs or 1, 1)) if math.isfinite(per_epoch) else math.inf

    def score_candidate(self, pl_module: L.LightningModule, arch: Arch, batch, step: int) -> Candidate:
        """Score one arch: proxy, params, FLOPs and every constraint."""
        space = pl_module.space
        key = space.encode(arch)
        inputs = _inputs_of(batch)
        model = pl_module.candidate(arch, inherit=self.inherit_weights, seed=self.seed)
        input_shape = tuple(inputs.shape[1:])
        targets = supervision(pl_module, batch, model) if self.proxy.needs_labels else None
        components: dict[str, float] = {}
        try:
            if self.leaderboard.aggregate is not None:  # a population-level ensemble: keep each proxy, aggregate later
                components, score = self.proxy.components(model, inputs, targets), math.nan
            else:
                score = self.proxy.score(model, inputs, targets)
        except (RuntimeError, ValueError, FloatingPointError) as error:
            rank_zero_info(f"proxy {type(self.proxy).__name__} failed on {key}: {error}")
            score = math.nan
        row = Candidate(arch=key, score=score, params=count_params(model), flops=count_flops(model, input_shape), step=step,
                        components=components)
        for constraint in self.constraints:
            result = constraint.evaluate(key, model, input_shape)
            row.latency_ms, row.latency_spread_ms = result.latency_ms, result.spread_ms
            if not result.feasible:
                row.feasible, row.reason = False, result.reason
        return row

    def _score_until(self, count: int, trainer: L.Trainer, pl_module: L.LightningModule, batch) -> None:
        if not trainer.is_global_zero:
            return
        attempts = 0
        while len(self.leaderboard) < min(count, self.num_candidates) and attempts < 100 * self.num_candidates:
            attempts += 1
            arch = self.strategy.propose(pl_module.space, self.leaderboard, self.generator)
            if pl_module.space.encode(arch) in self.leaderboard:
                continue
            self.leaderboard.add(self.score_candidate(pl_module, arch, batch, trainer.global_step))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        progress = min(trainer.global_step / self._total_batches(trainer), 1.0)
        self._score_until(math.ceil(progress * self.num_candidates), trainer, pl_module, batch)
        self._last_batch = batch
        if len(self.leaderboard):
            best = max(self.leaderboard.rows, key=self.leaderboard.objective)
            pl_module.log_dict({"search/scored": float(len(self.leaderboard)), "search/feasible": float(len(self.leaderboard.feasible())),
                                "search/best_score": best.score}, prog_bar=True, rank_zero_only=True, batch_size=1)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if hasattr(self, "_last_batch"):
            self._score_until(self.num_candidates, trainer, pl_module, self._last_batch)
        chosen = None
        error: Exception | None = None
        if trainer.is_global_zero:
            out = Path(self.output_dir or trainer.default_root_dir)
            self.leaderboard.write_csv(out / "leaderboard.csv")
            targets = [c.target_latency_ms for c in self.constraints if c.target_latency_ms is not None]
            write_pareto_plot(self.leaderboard, out / "pareto.png", proxy_name=self.proxy.name, target_latency_ms=min(targets, default=None))
            try:
                best = self.leaderboard.best()
                chosen = pl_module.space.decode(best.arch)
                write_arch_yaml(out / "arch.yaml", best, chosen, proxy_name=self.proxy.name)
                rank_zero_info(f"ZeroShotSearch chose {best.arch} (score {best.score:.4g}, latency {best.latency_ms:.3f} ms) "
                               f"from {len(self.leaderboard)} candidates")
            except Exception as caught:  # noqa: BLE001 - re-raised on every rank after the broadcast
                error = caught
        chosen, message = trainer.strategy.broadcast((chosen, str(error) if error else None), src=0)
        if error is not None:
            raise error
        if message is not None:
            raise RuntimeError(message)
        self.chosen = chosen

    def state_dict(self) -> dict:
        return {"leaderboard": self.leaderboard.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.leaderboard.load_state_dict(state_dict["leaderboard"])
        self.generator.set_state(state_dict["generator"])
