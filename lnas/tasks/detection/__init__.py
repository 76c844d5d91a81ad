"""Detection task: FCOS head, loss and LightningModules."""

from lnas.tasks.detection.head import Detector, FCOSHead, anchor_points, postprocess
from lnas.tasks.detection.modules import DetectionModule, DetectionSupernetModule

__all__ = ["DetectionModule", "DetectionSupernetModule", "Detector", "FCOSHead", "anchor_points", "postprocess"]
