"""Search spaces: architecture dicts, space declarations and weight-sharing supernets."""

from lnas.spaces.arch import Arch, InvalidArchError
from lnas.spaces.base import FeatureInfo, SearchSpace
from lnas.spaces.mbconv import MBConvNet, MBConvSpace, MBConvSupernet

__all__ = ["Arch", "FeatureInfo", "InvalidArchError", "MBConvNet", "MBConvSpace", "MBConvSupernet", "SearchSpace"]
