"""Detection task: FCOS head, loss, postprocessing."""

from lnas.tasks.detection.head import FCOSHead, anchor_points, postprocess
from lnas.tasks.detection.task import DetectionTask

__all__ = ["DetectionTask", "FCOSHead", "anchor_points", "postprocess"]
