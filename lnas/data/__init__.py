"""LightningDataModules: embedded synthetic data (no download) and real formats."""

from lnas.data.detection import SyntheticDetectionDataModule, collate_detection

__all__ = ["SyntheticDetectionDataModule", "collate_detection"]
