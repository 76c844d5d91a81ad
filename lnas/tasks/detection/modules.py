"""LightningModules for detection: the warmup supernet and the final (chosen) network, sharing one set of steps."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import lightning as L
import torch
from torchmetrics.detection import MeanAveragePrecision

from lnas.spaces.arch import Arch
from lnas.spaces.base import FeatureInfo
from lnas.spaces.staged import StagedSpace
from lnas.tasks.detection.head import Detector, FCOSHead, anchor_points, at_resolution, postprocess
from lnas.tasks.detection.loss import fcos_loss

OptimizerFactory = Callable[..., torch.optim.Optimizer]


def default_optimizer(params) -> torch.optim.Optimizer:
    """AdamW, lr 2e-3, weight decay 1e-4 (used when the config gives no optimizer)."""
    return torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)


class DetectionSteps(L.LightningModule):
    """Training (FCOS loss), validation and test (COCO mAP via torchmetrics) for any module whose forward is a detector.

    The learning rate follows a cosine decay over the whole fit (Loshchilov & Hutter, 2017).
    """

    def __init__(self, optimizer: OptimizerFactory | None = None) -> None:
        super().__init__()
        self.optimizer_factory = optimizer or default_optimizer
        self.val_map = MeanAveragePrecision(box_format="xyxy", backend="pycocotools")
        self.test_map = MeanAveragePrecision(box_format="xyxy", backend="pycocotools")

    def _points(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor points and their strides of the outputs for ``images``, in the images' pixels."""
        raise NotImplementedError

    def training_step(self, batch, batch_index: int) -> torch.Tensor:
        images, targets = batch
        losses = fcos_loss(self(images), targets, *self._points(images))
        self.log_dict({f"train/{k}": v for k, v in losses.items() if k != "loss"}, batch_size=len(images))
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=len(images))
        return losses["loss"]

    def _evaluate(self, batch, metric: MeanAveragePrecision) -> None:
        images, targets = batch
        points, _ = self._points(images)
        metric.update(postprocess(self(images), points, tuple(images.shape[-2:])), targets)

    def validation_step(self, batch, batch_index: int) -> None:
        self._evaluate(batch, self.val_map)

    def test_step(self, batch, batch_index: int) -> None:
        self._evaluate(batch, self.test_map)

    def _log_map(self, metric: MeanAveragePrecision, prefix: str) -> None:
        result = metric.compute()
        self.log_dict({f"{prefix}/map": result["map"], f"{prefix}/map_50": result["map_50"]}, prog_bar=True)
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_map(self.val_map, "val")

    def on_test_epoch_end(self) -> None:
        self._log_map(self.test_map, "test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class DetectionModule(DetectionSteps):
    """Final phase: trains one plain :class:`Detector` end to end."""

    def __init__(self, model: Detector, optimizer: OptimizerFactory | None = None) -> None:
        super().__init__(optimizer)
        self.model = model

    def _points(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.points(tuple(images.shape[-2:]), images.device)

    def forward(self, images: torch.Tensor):
        return self.model(images)


class DetectionSupernetModule(DetectionSteps):
    """Warmup phase: trains the weight-sharing supernet + head, one random arch per step (Once-for-All / SPOS).

    The arch of step ``t`` is drawn from a generator seeded with ``(seed, t)``, so every DDP rank trains the same
    arch and a resumed run continues the same sequence. Validation uses the space's ``default()`` arch.
    Implements the protocol the search callbacks need: ``space`` and ``candidate(arch, inherit)``.
    The head is sized for the widest backbone and slices its inputs for narrower archs (:class:`FCOSHead`); an arch's
    ``resolution``, when the space has one, is the size the network runs at (:class:`Detector`).
    """

    def __init__(self, space: StagedSpace, num_classes: int, head_width: int = 64, head_depth: int = 2,
                 optimizer: OptimizerFactory | None = None, seed: int = 0) -> None:
        super().__init__(optimizer)
        self.space, self.num_classes, self.seed = space, num_classes, seed
        self.head_width, self.head_depth = head_width, head_depth
        self.supernet = space.supernet()
        self.head = self._new_head(space.feature_info())

    def _new_head(self, feature_info: Sequence[FeatureInfo]) -> FCOSHead:
        return FCOSHead(feature_info, self.num_classes, self.head_width, self.head_depth)

    @property
    def resolution(self) -> int | None:
        """The active arch's input resolution (None: the space has no resolution choice; images are used as they are)."""
        return self.supernet.arch.get("resolution")

    def _points(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return anchor_points(tuple(images.shape[-2:]), self.head.strides, images.device, self.resolution)

    def forward(self, images: torch.Tensor):
        return at_resolution(images, self.resolution, lambda x: self.head(self.supernet(x)))

    def on_train_batch_start(self, batch, batch_index: int) -> None:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.global_step)
        self.supernet.activate(self.space.sample(generator))

    def on_validation_epoch_start(self) -> None:
        self.supernet.activate(self.space.default())

    def candidate(self, arch: Arch, inherit: bool = True, seed: int = 0) -> Detector:
        """A plain detector for ``arch``: supernet weights copied in (``inherit``) or freshly initialised from ``seed``."""
        if inherit:
            model = Detector(self.supernet.extract(arch), self.head.narrowed(self.space.feature_info(arch)), arch.get("resolution"))
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = Detector(self.space.build(arch), self._new_head(self.space.feature_info(arch)), arch.get("resolution"))
        return model.to(self.device)
