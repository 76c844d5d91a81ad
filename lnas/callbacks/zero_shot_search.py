"""``ZeroShotSearch``: a Lightning callback that searches the module's space during the warmup epochs.

A strategy (:class:`~lnas.search.strategies.OptunaSearch`) proposes candidates; each is scored by a training-free
proxy on batches from the trainer, its costs and every device's latency are taken (:class:`HardwareLatency`), and the
result is told back to the strategy as named objectives and constraint violations. With ``screen`` > 0 the search is a
cascade (:mod:`lnas.search.cascade`): the strategy explores ``screen`` candidates with costs from the arch alone,
the best ``num_candidates`` of them get the full predictor, and ``finalists`` of those are measured side by side at
the end. Every candidate is scored on one scoring batch drawn with the seed from the training data (the same on every
rank and in every run), and the scoring is spread over the warmup batches. With a device that estimates latency from
the arch (a look-up table), a few candidates are measured end to end first to calibrate it, and the measured
finalists refit it. At the end of training, rank 0 picks the best feasible candidate
for every device (``picks.yaml``; the first device's pick is :attr:`chosen`), broadcasts it, and writes
``leaderboard.csv`` (with the stage that last scored each candidate), ``pareto.png`` and ``arch.yaml``.

The LightningModule must expose ``space`` (a :class:`~lnas.spaces.SearchSpace`) and
``candidate(arch, inherit, seed) -> nn.Module`` (a plain network for an arch); if it has
``proxy_loss(outputs, targets, images, model)``, label-using proxies differentiate that loss; the cascade's screen needs
``arch_costs(arch, input_shape) -> (params, flops)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.utils.data import DataLoader, default_collate

from lnas.callbacks.hardware_latency import HardwareLatency
from lnas.hardware.cost import count_flops, count_params
from lnas.io import atomic_write_text
from lnas.predictors.base import SCORING_ERRORS, Proxy, Supervision
from lnas.report import describe_stages, write_arch_yaml, write_pareto_plot
from lnas.search.cascade import CALIBRATED, FINETUNED, MEASURED, SCORED, SCREEN, Cascade, finalists, shortlist
from lnas.search.leaderboard import Candidate, Leaderboard
from lnas.search.loop import SearchLoop
from lnas.search.objectives import EVERY_LATENCY, FINETUNE_LOSS, FLOPS, MAXIMIZE, MINIMIZE, PARAMS, SCORE, Objective
from lnas.search.strategies import OptunaSearch
from lnas.spaces.arch import Arch

SCALINGS_NOTE = "scalings"
"""The study's note that keeps the scalings chosen for the search (a continued study reads them back)."""


def supervision(pl_module: L.LightningModule, batch, model: nn.Module) -> object:
    """What label-using proxies get: the module's ``proxy_loss(outputs, targets, images, model)`` over the batch's
    targets when it has one (an lnas task module), else the targets themselves (class indices: cross-entropy)."""
    images, targets = batch[0], batch[1]
    loss = getattr(pl_module, "proxy_loss", None)
    if loss is None:
        return targets
    return Supervision(targets, lambda outputs, labels: loss(outputs, labels, images, model))


def scoring_batch(loader, size: int | None, seed: int, fallback=None):
    """The batch every candidate is scored on: ``size`` examples (default: the loader's batch size) drawn with ``seed``
    from ``loader``'s dataset and collated as the loader does, random augmentation seeded too. It depends on neither
    the data order nor the number of processes (a DistributedSampler shards the order, not the dataset). A loader
    without a map-style dataset gives ``fallback`` (the first training batch)."""
    dataset = getattr(loader, "dataset", None)
    if not isinstance(loader, DataLoader) or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        return fallback
    size = min(size or loader.batch_size or 1, len(dataset))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size].tolist()
        return (loader.collate_fn or default_collate)([dataset[index] for index in indices])


class ZeroShotSearch(L.Callback):
    """Score ``num_candidates`` candidates with ``proxy`` during warmup and pick the best feasible one per device.

    Args:
        proxy: the zero-shot accuracy predictor (its score is the objective ``score``).
        num_candidates: how many distinct candidates to score.
        strategy: proposes candidates (default: random sampling through Optuna).
        objectives: names among ``score`` (always first), ``latency`` (every device's latency), ``latency_ms.<device>``,
            ``params``, ``flops``, ``memory_mb``; all but ``score`` are minimised.
        include_default: score the space's default arch first, so the search always sees the reference point.
        seed: seeds the strategy and the fresh initialisation of scored candidates.
        inherit_weights: score candidates with the supernet's current weights instead of a fresh initialisation
            (the zero-shot papers score freshly initialised networks).
        output_dir: where to write the search results (default: the trainer's ``default_root_dir``).
        screen: candidates the strategy screens with costs from the arch alone before the best ``num_candidates`` of
            them are scored (0: no screen; the strategy proposes the scored candidates itself).
        finalists: best feasible scored candidates measured again on every measuring device, side by side with the
            baseline, before the pick (0: none; the pick uses the latencies taken while scoring).
        finetune: feasible (measured) candidates of the trained device (:func:`~lnas.search.cascade.shortlist`): the
            space's default and its scalings first (at most half of them), then in turn from the predictor's ranking
            and from each ensemble member's, trained for ``finetune_steps`` steps from the supernet's weights; the pick
            is then the one with the lowest mean training loss over them (0: none; the pick is the best predicted accuracy). Needs a module with
            ``finetune_loss(arch, train_batches, steps)``.
        finetune_steps: training steps of each fine-tune.
        scalings: how many uniformly scaled-down versions of the space's default (:meth:`SearchSpace.scalings`) are
            scored right after it: the largest in FLOPs of those within the default's FLOPs times the fraction of the
            default's latency that the tightest budget allows (the default is scored first to know it; without a
            latency, 1 / ``hardware.target_speedup``, or 1 without one). Those that meet the trained device's constraints join the
            fine-tune shortlist, and evolution mutates them: the search starts in the default's neighbourhood, near the
            budget (0: none). Needs a module with ``arch_costs(arch, input_shape)``.
        scaling_margin: with fine-tuned scalings, another fine-tuned candidate is picked over the best of them only
            when its fine-tune loss is lower by more than this fraction: a short fine-tune tells apart networks of one
            family better than networks of different families (0: the lowest loss is picked).
        storage: the strategy's Optuna storage (:class:`~lnas.search.strategies.OptunaSearch`): the study, every scored
            candidate and the chosen scalings persist there, and a run started again with it, or another process
            given the same storage, continues the study instead of scoring those candidates again (None: in memory).
        round_size: proposals asked, scored and told together (:meth:`~lnas.search.loop.SearchLoop.run_until`); under
            DDP every rank scores its share of a round. The proposals depend on it, not on the number of processes, so
            one process and several pick alike.
        scoring_batch_size: examples in the scoring batch (:func:`scoring_batch`; None: the training loader's batch size).
    """

    def __init__(self, proxy: Proxy, num_candidates: int = 50, strategy: OptunaSearch | None = None,
                 objectives: Sequence[str] = (SCORE, EVERY_LATENCY), include_default: bool = True, seed: int = 0,
                 inherit_weights: bool = False, output_dir: str | None = None, screen: int = 0, finalists: int = 0,
                 finetune: int = 0, finetune_steps: int = 50, scalings: int = 0, scaling_margin: float = 0.0,
                 storage: str | None = None, round_size: int = 1, scoring_batch_size: int | None = None) -> None:
        if num_candidates < 1:
            raise ValueError(f"search.num_candidates must be >= 1, got {num_candidates}")
        if screen < 0 or finalists < 0 or (screen and screen < num_candidates):
            raise ValueError(f"search.screen must be 0 or >= num_candidates ({num_candidates}) and search.finalists >= 0; "
                             f"got screen={screen}, finalists={finalists}")
        if scalings < 0 or not 0 <= scaling_margin < 1:
            raise ValueError(f"search.scalings must be >= 0 and search.scaling_margin in [0, 1); got scalings={scalings}, "
                             f"scaling_margin={scaling_margin}")
        if finetune < 0 or finetune_steps < 1:
            raise ValueError(f"search.finetune must be >= 0 and search.finetune_steps >= 1; got finetune={finetune}, finetune_steps={finetune_steps}")
        self.screen, self.finalists = screen, finalists
        self.finetune, self.finetune_steps = finetune, finetune_steps
        self.scalings, self.scaling_margin = scalings, scaling_margin
        self.scaling_keys: list[str] | None = None  # None until chosen at the first scoring
        if not objectives or objectives[0] != SCORE:
            raise ValueError(f"search.objectives must start with {SCORE!r} (the predicted accuracy), got {list(objectives)}")
        self.proxy, self.num_candidates, self.seed = proxy, num_candidates, seed
        if round_size < 1:
            raise ValueError(f"search.round_size must be >= 1, got {round_size}")
        self.round_size = round_size
        if scoring_batch_size is not None and scoring_batch_size < 1:
            raise ValueError(f"search.scoring_batch_size must be >= 1 or null (the training batch size), got {scoring_batch_size}")
        self.scoring_batch_size = scoring_batch_size
        self._scoring_batch = None  # drawn at the first scoring
        self.strategy = strategy or OptunaSearch()
        if storage:
            self.strategy.storage = storage
        self.objective_names, self.include_default = list(objectives), include_default
        self.inherit_weights, self.output_dir = inherit_weights, output_dir
        self.hardware: HardwareLatency | None = None
        self.leaderboard: Leaderboard | None = None
        self.references: dict[str, nn.Module] = {}
        self.baseline: tuple[str, nn.Module] | None = None
        self.cascade: Cascade | None = None
        self.picks: dict[str, Candidate] = {}
        self.stage_seconds: dict[str, float] = {}  # wall time of each stage of the cascade on rank 0 (see stage_report)
        self.measured_count = 0  # finalists measured side by side
        self.calibrated_count = 0  # candidates measured to calibrate estimates from the arch
        self.chosen: Arch | None = None
        self._restored: dict | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(proxy=type(self.proxy).__name__, seed=self.seed)

    # -- setup -------------------------------------------------------------------------------------------------
    def objectives(self, hardware: HardwareLatency | None) -> list[Objective]:
        """The objectives named in ``objectives``, checked against what the predictor and the hardware provide."""
        provided = {SCORE, PARAMS, FLOPS, *(hardware.measures() if hardware else [])}
        result: list[Objective] = []
        for name in self.objective_names:
            if name == SCORE:
                result.append(Objective(SCORE, MAXIMIZE if self.proxy.higher_is_better else MINIMIZE))
            elif name == EVERY_LATENCY:
                if not hardware or not hardware.targets:
                    raise ValueError("search.objectives has 'latency' but no device estimates latency: add a hardware device or drop it")
                result += [Objective(t.measure, MINIMIZE) for t in hardware.targets]
            elif name in provided:
                result.append(Objective(name, MINIMIZE))
            else:
                raise ValueError(f"search objective {name!r} is provided by nothing in this run; available: "
                                 f"{[SCORE, EVERY_LATENCY, *sorted(provided - {SCORE})]} (memory_mb needs hardware.max_activation_mb)")
        if len({o.name for o in result}) != len(result):
            raise ValueError(f"search.objectives lists a measure twice: {[o.name for o in result]}")
        return result

    def configure(self, space, hardware: HardwareLatency | None) -> None:
        """Objectives, constraints, leaderboard and strategy for ``space`` (called by :meth:`setup`; tests may call it directly)."""
        self.hardware = hardware
        if hardware is not None:
            hardware.check_space(space)
        objectives = self.objectives(hardware)
        constraints = hardware.constraints() if hardware else []
        self.leaderboard = Leaderboard(objectives, constraints, aggregate=getattr(self.proxy, "aggregate", None))
        self.strategy.start(space, self.screen_objectives() if self.screen else objectives, self.seed)
        self.cascade = Cascade(space, self.strategy, self.leaderboard, self.include_default)
        if self._restored is not None:
            self._apply_restored()
        if self.strategy.storage:  # a stored study: what this or another process scored into it is not scored again
            resumed = SearchLoop(space, self.strategy, self.leaderboard).sync()
            self.scaling_keys = self.strategy.note(SCALINGS_NOTE) or self.scaling_keys
            rank_zero_info(f"ZeroShotSearch continues the study {self.strategy.study_name!r} in {self.strategy.storage}: "
                           f"{resumed} candidates read back")
        if self.include_default and self._restored is None:
            self.strategy.enqueue(space.default())

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        missing = [name for name in ("space", "candidate") if not hasattr(pl_module, name)]
        if missing:
            raise TypeError(f"ZeroShotSearch needs a LightningModule with `space` and `candidate(arch, inherit, seed)`; "
                            f"{type(pl_module).__name__} lacks {missing}")
        if self.scalings and not hasattr(pl_module, "arch_costs"):
            raise TypeError(f"search.scalings needs a module with arch_costs(arch, input_shape); {type(pl_module).__name__} has none: "
                            "set search.scalings=0")
        if self.finetune and not hasattr(pl_module, "finetune_loss"):
            raise TypeError(f"search.finetune needs a module with finetune_loss(arch, train_batches, steps); "
                            f"{type(pl_module).__name__} has none: set search.finetune=0")
        hardware = [cb for cb in trainer.callbacks if isinstance(cb, HardwareLatency)]
        if len(hardware) > 1:
            raise ValueError(f"found {len(hardware)} HardwareLatency callbacks; list every device in one (HardwareLatency(devices={{...}}))")
        self.configure(pl_module.space, hardware[0] if hardware else None)

    def add_reference(self, name: str, model: nn.Module) -> None:
        """Score ``model`` (e.g. the user's baseline) like a candidate and show it on the leaderboard; it is never picked."""
        self.references[name] = model

    def set_baseline(self, key: str, model: nn.Module) -> None:
        """The model the finalists are measured beside (its key on the board); with ``hardware.target_speedup``, the
        budgets are re-derived from that side-by-side measurement, so budget and pick share one session."""
        self.baseline = (key, model)

    # -- scoring -----------------------------------------------------------------------------------------------
    def evaluate(self, pl_module: L.LightningModule, key: str, model: nn.Module, batch, step: int, reference: bool = False,
                 arch: Arch | None = None, hardware: bool = True) -> Candidate:
        """Score one model: proxy (or its ensemble components), params, FLOPs, and (with ``hardware``) every device's
        latency. Given its ``arch`` and a module with ``arch_costs``, the costs and latency estimates come from the arch."""
        inputs = batch[0]
        input_shape = tuple(inputs.shape[1:])
        targets = supervision(pl_module, batch, model) if self.proxy.needs_labels else None
        row = Candidate(arch=key, step=step, reference=reference)
        try:
            if self.leaderboard.aggregate is not None:  # a population-level ensemble: keep each proxy, aggregate later
                row.components = self.proxy.components(model, inputs, targets)
            else:
                row.measures[SCORE] = self.proxy.score(model, inputs, targets)
        except SCORING_ERRORS as error:
            rank_zero_info(f"proxy {self.proxy.name} failed on {key}: {error}")
            row.measures[SCORE] = math.nan
        if arch is not None and hasattr(pl_module, "arch_costs"):
            params, flops = pl_module.arch_costs(arch, input_shape)
        else:
            params, flops = count_params(model), count_flops(model, input_shape)
        row.measures[PARAMS], row.measures[FLOPS] = float(params), float(flops)
        if hardware:
            self._add_hardware(pl_module, row, input_shape, model, arch)
        return row

    def _add_hardware(self, pl_module: L.LightningModule, row: Candidate, input_shape: tuple[int, ...], model: nn.Module | None = None,
                      arch: Arch | None = None) -> None:
        """Every device's latency of ``row`` (from its arch's parts where a device estimates from them)."""
        if self.hardware is None:
            return
        parts = pl_module.space.parts(arch, input_shape) if arch is not None and hasattr(pl_module, "arch_costs") else None
        if model is None and self.hardware.needs_network(row.arch, parts):
            model = pl_module.candidate(arch, inherit=self.inherit_weights, seed=self.seed)
        result = self.hardware.evaluate(row.arch, model, input_shape, parts)
        row.measures.update(result.measures)
        row.spreads.update(result.spreads)
        row.errors += result.errors

    def score_candidate(self, pl_module: L.LightningModule, arch: Arch, batch, step: int, hardware: bool = True) -> Candidate:
        key = pl_module.space.encode(arch)
        model = pl_module.candidate(arch, inherit=self.inherit_weights, seed=self.seed)
        return self.evaluate(pl_module, key, model, batch, step, arch=arch, hardware=hardware)

    def _arch_measures(self) -> set[str]:
        return {PARAMS, FLOPS, *(self.hardware.arch_measures() if self.hardware else [])}

    def screen_objectives(self) -> list[Objective]:
        """The screen's objectives: its cheap predicted accuracy (FLOPs, higher is better), then every objective of the
        search that the arch alone gives (costs, and the latency of devices that estimate it from the arch)."""
        return [Objective(SCORE, MAXIMIZE)] + [o for o in self.leaderboard.objectives[1:] if o.name in self._arch_measures()]

    def _screen(self, pl_module: L.LightningModule, input_shape: tuple[int, ...]) -> None:
        """Stage 1 of the cascade: the strategy explores ``screen`` candidates with costs from the arch alone."""
        if not hasattr(pl_module, "arch_costs"):
            raise TypeError(f"search.screen needs a module with arch_costs(arch, input_shape); {type(pl_module).__name__} has none: "
                            "set search.screen=0")
        space = pl_module.space

        def evaluate(arch: Arch, key: str) -> Candidate:
            params, flops = pl_module.arch_costs(arch, input_shape)
            row = Candidate(key, {SCORE: float(flops), PARAMS: float(params), FLOPS: float(flops)})
            if self.hardware is not None:
                result = self.hardware.estimate_arch(key, space.parts(arch, input_shape), input_shape)
                row.measures.update(result.measures)
                row.spreads.update(result.spreads)
                row.errors += result.errors
            return row

        constraints = [c for c in self.leaderboard.constraints if c.measure in self._arch_measures()]
        board = self.cascade.screen(self.screen, self.screen_objectives(), constraints, evaluate, first=self.scaling_keys or [])
        rank_zero_info(f"ZeroShotSearch screened {len(board)} candidates from the arch alone; the best {self.num_candidates} get {self.proxy.name}")

    def _score_until(self, count: int, trainer: L.Trainer, pl_module: L.LightningModule, batch) -> None:
        """Score candidates until ``count`` are on the board (at most ``num_candidates``). Rank 0 runs the search; under
        DDP it shares each round out (:meth:`_score_round`) and the other ranks score their shares until it is done."""
        if not trainer.is_global_zero:
            self._score_shares(trainer, pl_module, batch)
            return
        try:
            self._search_until(count, trainer, pl_module, batch)
        finally:
            if trainer.world_size > 1:
                trainer.strategy.broadcast(None, src=0)  # no more rounds at this step

    def _search_until(self, count: int, trainer: L.Trainer, pl_module: L.LightningModule, batch) -> None:
        for name in list(self.references):
            if name not in self.leaderboard:
                self.leaderboard.add(self.evaluate(pl_module, name, self.references[name], batch, trainer.global_step, reference=True))

        def evaluate(arch: Arch, key: str) -> Candidate:
            return self.score_candidate(pl_module, arch, batch, trainer.global_step)

        if self.hardware is not None and hasattr(pl_module, "arch_costs") and self.hardware.arch_calibration_wanted():
            with self._timed(CALIBRATED):
                self._calibrate(pl_module, tuple(batch[0].shape[1:]))
        if self.scalings and self.scaling_keys is None and not self.leaderboard.candidates():
            default = pl_module.space.default()
            with self._timed(SCORED):
                row = evaluate(default, pl_module.space.encode(default))  # its latency sizes the scalings
            self.leaderboard.add(row)
            self._enqueue_scalings(pl_module, tuple(batch[0].shape[1:]), row)
        target = min(count, self.num_candidates)
        if not self.screen:
            rounds = (lambda items: self._score_round(trainer, pl_module, batch, [key for _, key in items])) if trainer.world_size > 1 else None
            with self._timed(SCORED):
                SearchLoop(pl_module.space, self.strategy, self.leaderboard).run_until(
                    target, evaluate, max_attempts=100 * self.num_candidates, round_size=self.round_size, evaluate_round=rounds,
                    limit=self.num_candidates)
            return
        if not self.cascade.screened:
            with self._timed(SCREEN):
                self._screen(pl_module, tuple(batch[0].shape[1:]))
        with self._timed(SCORED):
            self.cascade.score_until(target, evaluate)

    def _calibrate(self, pl_module: L.LightningModule, input_shape: tuple[int, ...]) -> None:
        """Measure the space's default and random candidates (seeded) side by side, as many as the devices want, to
        calibrate their latency estimates from the arch before the search relies on them."""
        space = pl_module.space
        generator = torch.Generator().manual_seed(self.seed)
        samples = [space.sample(generator) for _ in range(self.hardware.arch_calibration_wanted() - 1)]
        archs = {space.encode(arch): arch for arch in [space.default(), *samples]}
        models = {key: pl_module.candidate(arch, inherit=self.inherit_weights, seed=self.seed) for key, arch in archs.items()}
        results = self.hardware.measure_side_by_side(models, input_shape)
        self.hardware.recalibrate({key: space.parts(arch, input_shape) for key, arch in archs.items()}, results, input_shape)
        self.calibrated_count = len(archs)
        rank_zero_info(f"ZeroShotSearch measured {len(archs)} candidates to calibrate the latency estimates from the arch: "
                       f"{self.hardware.describe()}")

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        """Add the wall time of the block to ``stage_seconds[stage]``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + time.perf_counter() - started

    def stage_report(self) -> dict[str, dict[str, float]]:
        """Per stage of the cascade: candidates it handled last, its wall time, and the time per candidate (ms)."""
        rows = self.leaderboard.candidates()
        counts = {CALIBRATED: self.calibrated_count, SCREEN: len(rows), SCORED: len(self.scored()), MEASURED: self.measured_count,
                  FINETUNED: sum(r.stage == FINETUNED for r in rows)}
        return {stage: {"candidates": counts[stage], "seconds": seconds, "ms_per_candidate": 1e3 * seconds / max(counts[stage], 1)}
                for stage, seconds in self.stage_seconds.items()}

    def _score_share(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, keys: Sequence[str]) -> list[Candidate]:
        """This rank's share of a round: every ``world_size``-th key from its rank on."""
        mine = keys[trainer.global_rank::trainer.world_size]
        return [self.score_candidate(pl_module, pl_module.space.decode(key), batch, trainer.global_step, hardware=False) for key in mine]

    def _gather(self, trainer: L.Trainer, share: list[Candidate]) -> list[list[Candidate]]:
        """Every rank's share, in rank order, through the strategy's collectives (each rank broadcasts its own)."""
        return [trainer.strategy.broadcast(share if rank == trainer.global_rank else None, src=rank) for rank in range(trainer.world_size)]

    def _score_round(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, keys: list[str]) -> list[Candidate]:
        """Rank 0: send the round's keys, score its share, gather the others'; then every device's latency of each
        (taken by rank 0 alone, so one calibration and one measuring process); in key order."""
        trainer.strategy.broadcast(keys, src=0)
        rows = {row.arch: row for share in self._gather(trainer, self._score_share(trainer, pl_module, batch, keys)) for row in share}
        for key in keys:
            self._add_hardware(pl_module, rows[key], tuple(batch[0].shape[1:]), arch=pl_module.space.decode(key))
        return [rows[key] for key in keys]

    def _score_shares(self, trainer: L.Trainer, pl_module: L.LightningModule, batch) -> None:
        """Ranks other than 0: score their share of each round rank 0 sends (on the same scoring batch), until it sends none."""
        while (keys := trainer.strategy.broadcast(None, src=0)) is not None:
            self._gather(trainer, self._score_share(trainer, pl_module, batch, keys))

    def scored(self) -> list[Candidate]:
        """The candidates the full predictor scored (measured finalists included)."""
        return [row for row in self.leaderboard.candidates() if row.stage != SCREEN]

    def _budget_fraction(self, default: Candidate) -> tuple[float, str]:
        """The fraction of the default's latency that the tightest device budget allows, and how it was found."""
        fractions = [t.target_latency_ms / default.measures[t.measure] for t in self.hardware.targets
                     if t.target_latency_ms is not None and math.isfinite(default.measures.get(t.measure, math.nan))] if self.hardware else []
        if fractions:
            return min(fractions), "the tightest budget / the default's latency"
        speedup = self.hardware.target_speedup if self.hardware is not None and self.hardware.target_speedup else 1.0
        return 1.0 / speedup, f"1 / {speedup:g}"

    def _enqueue_scalings(self, pl_module: L.LightningModule, input_shape: tuple[int, ...], default: Candidate) -> None:
        """Make the ``scalings`` largest scaled-down versions of the space's default within the budget in FLOPs (the
        default's FLOPs times :meth:`_budget_fraction`) the strategy's next proposals."""
        space = pl_module.space
        fraction, reason = self._budget_fraction(default)
        target = pl_module.arch_costs(space.default(), input_shape)[1] * fraction
        flops = {space.encode(arch): (arch, pl_module.arch_costs(arch, input_shape)[1]) for arch in space.scalings(space.default())}
        largest = sorted((key for key in flops if flops[key][1] <= target), key=lambda key: -flops[key][1])[:self.scalings]
        for key in largest:
            self.strategy.enqueue(flops[key][0])
        self.scaling_keys = largest
        if self.strategy.storage:
            self.strategy.note(SCALINGS_NOTE, largest)
        rank_zero_info(f"ZeroShotSearch scores {len(largest)} scalings of the space default first, the largest within "
                       f"{target / 1e6:.1f} MFLOPs (the default's x {fraction:.3g}: {reason}): {largest}")

    def _measure_finalists(self, pl_module: L.LightningModule, input_shape: tuple[int, ...]) -> None:
        """Stage 3: the best feasible scored candidates measured side by side with the baseline on every measuring device,
        ``finalists`` at a time until one meets every constraint on its measured latency (or none are left). The first
        round also measures the scored scalings of the default, whatever their latency while scoring was: they sit near
        the budget, where the noise of a measurement taken during training decides."""
        measured: set[str] = set()
        while True:
            chosen = finalists(self.leaderboard, self.finalists, measured)
            if not measured:  # the first round
                taken = {row.arch for row in chosen}
                chosen += [self.leaderboard.get(key) for key in self.scaling_keys or [] if key in self.leaderboard and key not in taken]
            if not chosen:
                return
            models = {row.arch: pl_module.candidate(pl_module.space.decode(row.arch), inherit=self.inherit_weights, seed=self.seed)
                      for row in chosen}
            if self.baseline is not None:
                models.setdefault(self.baseline[0], self.baseline[1])
            results = self.hardware.measure_side_by_side(models, input_shape)
            if not any(result.measures for result in results.values()):
                return  # no device measures (every latency is looked up): the values taken while scoring are final
            if self.baseline is not None and self.hardware.target_speedup is not None:
                baseline_ms = {t.name: results[self.baseline[0]].measures[t.measure]
                               for t in self.hardware.targets if t.measure in results[self.baseline[0]].measures}
                self.hardware.set_budgets_from_baseline(baseline_ms, devices=list(baseline_ms))
                self.leaderboard.constraints = self.hardware.constraints()
            for key, result in results.items():
                if key in self.leaderboard:
                    row = self.leaderboard.get(key)
                    row.measures.update(result.measures)
                    row.spreads.update(result.spreads)
                    row.stage = MEASURED
            self._recalibrate(pl_module, results, input_shape)
            measured |= {row.arch for row in chosen}
            self.measured_count = len(measured)
            rank_zero_info(f"ZeroShotSearch measured {len(measured)} finalists side by side; budgets: {self.hardware.describe()}")
            if any(self.leaderboard.is_feasible(self.leaderboard.get(key)) for key in measured):
                return

    def _recalibrate(self, pl_module: L.LightningModule, results, input_shape: tuple[int, ...]) -> None:
        """Refit the devices' latency estimates from the arch with the finalists just measured, and estimate the scored
        candidates not measured yet again (the next finalists are chosen on those)."""
        if not hasattr(pl_module, "arch_costs") or not self.hardware.arch_measures():
            return
        space = pl_module.space
        keys = [row.arch for row in self.scored() if row.stage == SCORED or row.arch in results]
        estimates = self.hardware.recalibrate({key: space.parts(space.decode(key), input_shape) for key in keys}, results, input_shape)
        for key, estimate in estimates.items():
            self.leaderboard.get(key).measures.update(estimate.measures)

    def _finetune_shortlist(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Stage 4: fine-tune the shortlist of the trained device (:func:`~lnas.search.cascade.shortlist`) and record
        each one's mean training loss as ``finetune_loss``."""
        train_batches = _training_data(trainer)
        device = self.hardware.devices[0] if self.hardware is not None and self.hardware.targets else None
        constraints = self.hardware.device_constraints(device) if device else self.leaderboard.constraints
        measured = self.finalists and any(row.stage == MEASURED for row in self.leaderboard.candidates())
        default = pl_module.space.encode(pl_module.space.default())
        rows = shortlist(self.leaderboard, self.finetune, constraints, (lambda row: row.stage == MEASURED) if measured else None,
                         always=([default] if self.include_default else []) + (self.scaling_keys or []), rankings=self._member_rankings())
        for index, row in enumerate(rows, start=1):
            row.measures[FINETUNE_LOSS] = pl_module.finetune_loss(pl_module.space.decode(row.arch), train_batches, self.finetune_steps)
            row.stage = FINETUNED
            rank_zero_info(f"ZeroShotSearch fine-tuned {index}/{len(rows)} for {self.finetune_steps} steps: {row.arch} "
                           f"{FINETUNE_LOSS}={row.measures[FINETUNE_LOSS]:.4g}")

    def _member_rankings(self) -> list:
        """For an ensemble predictor, one ranking per member (its score, oriented larger-is-better); else none."""
        def ranking(member: Proxy):
            objective = Objective(member.name, MAXIMIZE if member.higher_is_better else MINIMIZE)
            return lambda row: objective.oriented(row.components.get(member.name, math.nan))

        return [ranking(member) for member in getattr(self.proxy, "proxies", [])]

    def _total_batches(self, trainer: L.Trainer) -> float:
        if trainer.max_steps and trainer.max_steps > 0:
            return float(trainer.max_steps)
        per_epoch = trainer.num_training_batches
        return float(per_epoch * max(trainer.max_epochs or 1, 1)) if math.isfinite(per_epoch) else math.inf

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        progress = min(trainer.global_step / self._total_batches(trainer), 1.0)
        if self._scoring_batch is None:
            self._scoring_batch = move_data_to_device(scoring_batch(_training_data(trainer), self.scoring_batch_size, self.seed, fallback=batch),
                                                      pl_module.device)
        with torch.random.fork_rng(devices=[]):  # the search leaves the training's random stream as it found it
            self._score_until(math.ceil(progress * self.num_candidates), trainer, pl_module, self._scoring_batch)
        scored = self.leaderboard.candidates()
        if scored:
            best = max(scored, key=self.leaderboard.objective)
            pl_module.log_dict({"search/scored": float(len(scored)), "search/feasible": float(len(self.leaderboard.feasible())),
                                "search/best_score": best.score}, prog_bar=True, rank_zero_only=True, batch_size=1)

    # -- the picks -----------------------------------------------------------------------------------------------
    def pick_per_device(self) -> dict[str, Candidate]:
        """The best feasible candidate for every device (its budget and the device-independent bounds); without devices,
        the best under every constraint, keyed ``"any"``."""
        board = self.leaderboard
        tuned = [row for row in board.candidates() if row.stage == FINETUNED]
        if self.hardware is None or not self.hardware.targets:
            return {"any": board.best(only=lambda row: row.stage == FINETUNED, key=board.finetuned) if tuned else board.best()}
        measured = self.finalists and any(row.stage in (MEASURED, FINETUNED) for row in board.candidates())
        only = (lambda row: row.stage in (MEASURED, FINETUNED)) if measured else None  # with finalists, the pick is made on measured latency
        picks = {}
        for device in self.hardware.devices:
            constraints = self.hardware.device_constraints(device)
            if any(board.is_feasible(row, constraints) for row in tuned):  # fine-tuned: the fastest falling loss decides
                picks[device] = self._pick_finetuned(constraints)
            else:
                picks[device] = board.best(constraints, only=only)
        return picks

    def _pick_finetuned(self, constraints) -> Candidate:
        """The feasible fine-tuned candidate with the lowest loss, unless it is not a scaling of the default and the best
        scaling's loss is within ``scaling_margin`` of it: then that scaling."""
        board = self.leaderboard
        best = board.best(constraints, only=lambda row: row.stage == FINETUNED, key=board.finetuned)
        keys = set(self.scaling_keys or [])
        tuned = [row for row in board.feasible(constraints) if row.stage == FINETUNED and row.arch in keys and math.isfinite(board.finetuned(row))]
        if best.arch in keys or not tuned:
            return best
        scaling = max(tuned, key=board.finetuned)
        return best if best.measures[FINETUNE_LOSS] < (1 - self.scaling_margin) * scaling.measures[FINETUNE_LOSS] else scaling

    def write_picks(self, path: Path, space) -> Path:
        """``picks.yaml``: per device its pick's arch, score, latency on that device and budget; which one is trained."""
        budgets = {t.name: t.target_latency_ms for t in self.hardware.targets} if self.hardware else {}
        record = {"trained": next(iter(self.picks)), "devices": {}}
        for device, row in self.picks.items():
            record["devices"][device] = {"arch": row.arch, "score": row.score, "measures": dict(row.measures),
                                         "budget_ms": budgets.get(device)}
        clean = yaml.safe_load(yaml.safe_dump(record, sort_keys=False).replace(".nan", "null"))
        return atomic_write_text(path, yaml.safe_dump(clean, sort_keys=False))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with torch.random.fork_rng(devices=[]):
            self._finish(trainer, pl_module)

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The search's last stages (the rest of the scoring, finalists, fine-tune), the picks and the files; the pick is
        broadcast to every rank."""
        if self._scoring_batch is not None:
            self._score_until(self.num_candidates, trainer, pl_module, self._scoring_batch)
        chosen, error = None, None
        if trainer.is_global_zero:
            out = Path(self.output_dir or trainer.default_root_dir)
            if self.finalists and self.hardware is not None and self._scoring_batch is not None:
                with self._timed(MEASURED):
                    self._measure_finalists(pl_module, tuple(self._scoring_batch[0].shape[1:]))
            if self.finetune:
                with self._timed(FINETUNED):
                    self._finetune_shortlist(trainer, pl_module)
            rank_zero_info(f"ZeroShotSearch stages: {describe_stages(self.stage_report())}")
            try:
                self.picks = self.pick_per_device()
                best = next(iter(self.picks.values()))
                self.leaderboard.write_csv(out / "leaderboard.csv", first=best.arch)
                chosen = pl_module.space.decode(best.arch)
                self.write_picks(out / "picks.yaml", pl_module.space)
                write_arch_yaml(out / "arch.yaml", best, chosen, proxy_name=self.proxy.name)
                rank_zero_info(f"ZeroShotSearch picked {best.arch} (score {best.score:.4g}) from {len(self.leaderboard.candidates())} candidates")
            except Exception as caught:  # noqa: BLE001 - re-raised on every rank after the broadcast
                error = caught
                self.leaderboard.write_csv(out / "leaderboard.csv")
            write_pareto_plot(self.leaderboard, out / "pareto.png", self.proxy.name, self.hardware, self.picks)
        chosen, message = trainer.strategy.broadcast((chosen, str(error) if error else None), src=0)
        if error is not None:
            raise error
        if message is not None:
            raise RuntimeError(message)
        self.chosen = chosen

    def state_dict(self) -> dict:
        if self.leaderboard is None:
            return {}
        space = self.cascade.space
        return {"leaderboard": self.leaderboard.state_dict(), "strategy": self.strategy.state_dict(), "promotions": list(self.cascade.promotions),
                "screened": self.cascade.screened, "scalings": self.scaling_keys, "stage_seconds": dict(self.stage_seconds),
                "measured_count": self.measured_count, "calibrated_count": self.calibrated_count,
                "picks": {device: asdict(row) for device, row in self.picks.items()},
                "chosen": space.encode(self.chosen) if self.chosen is not None else None}

    def _apply_restored(self) -> None:
        self.leaderboard.load_state_dict(self._restored["leaderboard"])
        self.strategy.load_state_dict(self._restored["strategy"])
        self.cascade.promotions = list(self._restored.get("promotions", []))
        self.cascade.screened = bool(self._restored.get("screened", False))
        self.stage_seconds = dict(self._restored.get("stage_seconds", {}))
        self.measured_count, self.calibrated_count = self._restored.get("measured_count", 0), self._restored.get("calibrated_count", 0)
        self.picks = {device: Candidate(**row) for device, row in self._restored.get("picks", {}).items()}
        chosen = self._restored.get("chosen")
        self.chosen = self.cascade.space.decode(chosen) if chosen is not None else None
        self.scaling_keys = self._restored.get("scalings")

    def load_state_dict(self, state_dict: dict) -> None:
        """Lightning restores callbacks after ``setup``: the leaderboard and the study are replaced at once (or, before
        ``setup``, kept for :meth:`configure`)."""
        self._restored = state_dict or None
        if self._restored is not None and self.leaderboard is not None:
            self._apply_restored()


def _training_data(trainer: L.Trainer):
    """The training data of the fit that runs the search: the datamodule's loader, else the one given to ``fit``."""
    return trainer.datamodule.train_dataloader() if trainer.datamodule is not None else trainer.train_dataloader
