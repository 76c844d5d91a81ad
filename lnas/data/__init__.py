"""LightningDataModules: embedded synthetic data for every task (no download), real formats (image folder, COCO json,
image + mask folders), and the characteristics of data for a search without any (data-free mode)."""

from lnas.data.bad_files import BadDataError
from lnas.data.base import IGNORE_INDEX, SplitDataModule, collate_detection
from lnas.data.characteristics import DataCharacteristics
from lnas.data.coco import CocoDetectionDataModule
from lnas.data.image_folder import ImageFolderDataModule
from lnas.data.segmentation_folder import SegmentationFolderDataModule
from lnas.data.synthetic import SyntheticClassificationDataModule, SyntheticDetectionDataModule, SyntheticSegmentationDataModule

__all__ = ["IGNORE_INDEX", "BadDataError", "CocoDetectionDataModule", "DataCharacteristics", "ImageFolderDataModule",
           "SegmentationFolderDataModule", "SplitDataModule",
           "SyntheticClassificationDataModule", "SyntheticDetectionDataModule", "SyntheticSegmentationDataModule", "collate_detection"]
