"""Tasks (classification, detection, segmentation) and the LightningModules that train any of them."""

from lnas.tasks.base import ElasticLaterals, Task, TaskHead, TaskModel
from lnas.tasks.classification import ClassificationTask, ClassifierHead
from lnas.tasks.detection import DetectionTask
from lnas.tasks.modules import FinalModule, SupernetModule, TaskSteps
from lnas.tasks.segmentation import SegmentationHead, SegmentationTask

__all__ = ["ClassificationTask", "ClassifierHead", "DetectionTask", "ElasticLaterals", "FinalModule", "SegmentationHead", "SegmentationTask",
           "SupernetModule", "Task", "TaskHead", "TaskModel", "TaskSteps"]
