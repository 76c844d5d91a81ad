"""The two LightningModules of a run, for any :class:`~lnas.tasks.base.Task`: the warmup supernet and the final network.

Both share one set of steps (:class:`TaskSteps`): the task's training loss, its metrics on the validation and test
splits (logged as ``val/<metric>`` and ``test/<metric>``), AdamW by default and a cosine learning-rate decay.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn

from lnas.spaces.arch import Arch
from lnas.spaces.base import SearchSpace
from lnas.spaces.parts import Part, PartCosts
from lnas.tasks.base import Outputs, Task, TaskModel

OptimizerFactory = Callable[..., torch.optim.Optimizer]


def default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW, lr 2e-3, weight decay 1e-4 (used when the config gives no optimizer)."""
    return torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)


class TaskSteps(L.LightningModule):
    """Training, validation and test steps of ``task`` for a module whose ``net`` computes the task's outputs.

    The learning rate follows a cosine decay over the whole fit (Loshchilov & Hutter, 2017).
    """

    net: TaskModel

    def __init__(self, task: Task, optimizer: OptimizerFactory | None = None) -> None:
        super().__init__()
        self.task = task
        self.optimizer_factory = optimizer or default_optimizer
        self.val_metrics = task.metrics()
        self.test_metrics = task.metrics()

    def forward(self, images: torch.Tensor) -> Outputs:
        return self.net(images)

    def proxy_loss(self, outputs: Outputs, targets: Any, images: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """The loss label-using zero-shot proxies differentiate (the search callback reads it)."""
        return self.task.proxy_loss(outputs, targets, images, model)

    def training_step(self, batch, batch_index: int) -> torch.Tensor | None:
        images, targets = batch
        if targets is None:  # data-free batches (data=characteristics): nothing to train, the step is skipped
            return None
        losses = self.task.loss(self(images), targets, images, self.net)
        self.log_dict({f"train/{k}": v for k, v in losses.items() if k != "loss"}, batch_size=len(images))
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=len(images))
        return losses["loss"]

    def validation_step(self, batch, batch_index: int) -> None:
        images, targets = batch
        self.task.update_metrics(self.val_metrics, self(images), targets, images, self.net)

    def test_step(self, batch, batch_index: int) -> None:
        images, targets = batch
        self.task.update_metrics(self.test_metrics, self(images), targets, images, self.net)

    def _log_metrics(self, metrics, prefix: str) -> None:
        values = self.task.compute_metrics(metrics)
        self.log_dict({f"{prefix}/{name}": value for name, value in values.items()}, prog_bar=True, sync_dist=True)
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics, "test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class FinalModule(TaskSteps):
    """Final phase: trains one plain :class:`~lnas.tasks.base.TaskModel` (the pick, or the baseline) end to end."""

    def __init__(self, model: TaskModel, task: Task, optimizer: OptimizerFactory | None = None) -> None:
        super().__init__(task, optimizer)
        self.net = model

    @property
    def model(self) -> TaskModel:
        return self.net


class SupernetModule(TaskSteps):
    """Warmup phase: trains the space's weight-sharing supernet and the task head, one random arch per step
    (single-path one-shot training: Guo et al., ECCV 2020, "SPOS"; Once-for-All, Cai et al., ICLR 2020).

    The arch of step ``t`` is drawn from a generator seeded with ``(seed, t)``, so every DDP rank trains the same
    arch and a resumed run continues the same sequence. Validation uses the space's ``default()`` arch.
    Implements the protocol the search callbacks need: ``space`` and ``candidate(arch, inherit, seed)``.
    The head is sized for the widest backbone and slices its inputs for narrower archs
    (:class:`~lnas.tasks.base.ElasticLaterals`).
    """

    def __init__(self, space: SearchSpace, task: Task, optimizer: OptimizerFactory | None = None, seed: int = 0) -> None:
        super().__init__(task, optimizer)
        self.space, self.seed = space, seed
        self.net = TaskModel(space.supernet(), task.head(space.feature_info()))
        self.part_costs = PartCosts()
        self.activate(space.default())

    @property
    def supernet(self) -> nn.Module:
        return self.net.backbone

    def activate(self, arch: Arch) -> None:
        """Make ``arch`` the network this module computes (backbone and input resolution)."""
        self.supernet.activate(arch)
        self.net.resolution = arch.get("resolution")

    def on_train_batch_start(self, batch, batch_index: int) -> None:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.global_step)
        self.activate(self.space.sample(generator))

    def on_validation_epoch_start(self) -> None:
        self.activate(self.space.default())

    def arch_costs(self, arch: Arch, input_shape: tuple[int, int, int]) -> tuple[int, int]:
        """Parameters and FLOPs of ``arch``'s candidate for inputs ``(C, H, W)``, from the arch alone (no network is built:
        each backbone part and head is counted once and cached, :mod:`lnas.spaces.parts`)."""
        info = self.space.feature_info(arch)
        size = (arch["resolution"],) * 2 if "resolution" in arch else tuple(input_shape[1:])
        shapes = [(f.num_chs, -(-size[0] // f.reduction), -(-size[1] // f.reduction)) for f in info]
        head = Part(("head", tuple(info), size, tuple(input_shape[1:])), lambda: self.task.head(info),
                    lambda: ([torch.zeros((1, *shape)) for shape in shapes], size, tuple(input_shape[1:])))
        return self.part_costs([*self.space.parts(arch, input_shape), head])

    def finetune_loss(self, arch: Arch, train_batches: Iterable, steps: int) -> float:
        """The mean training loss of ``arch``'s candidate over ``steps`` training steps from the supernet's weights with
        the run's optimizer (the cascade's *finetune* stage, :mod:`lnas.search.cascade`); NaN without training data."""
        model = self.candidate(arch, inherit=True)
        optimizer = self.optimizer_factory(model.parameters())
        model.train()
        losses = []
        with torch.enable_grad():
            for _, batch in zip(range(steps), _repeat(train_batches), strict=False):
                images, targets = move_data_to_device(batch, self.device)
                loss = self.task.loss(model(images), targets, images, model)["loss"]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
        return sum(losses) / len(losses) if losses else math.nan

    def candidate(self, arch: Arch, inherit: bool = True, seed: int = 0) -> TaskModel:
        """A plain network for ``arch``: supernet weights copied in (``inherit``) or freshly initialised from ``seed``."""
        info = self.space.feature_info(arch)
        if inherit:
            model = TaskModel(self.supernet.extract(arch), self.net.head.narrowed(info), arch.get("resolution"))
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = TaskModel(self.space.build(arch), self.task.head(info), arch.get("resolution"))
        return model.to(self.device)


def _repeat(batches: Iterable) -> Iterator:
    """``batches`` over and over (a new pass over a data loader each time); nothing if a pass gives nothing."""
    while True:
        given = False
        for batch in batches:
            given = True
            yield batch
        if not given:
            return
