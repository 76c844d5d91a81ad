"""Search spaces: architecture dicts, space declarations and weight-sharing supernets."""

from lnas.spaces.arch import Arch, InvalidArchError
from lnas.spaces.base import FeatureInfo, SearchSpace
from lnas.spaces.recalibrate import recalibrate_batchnorm
from lnas.spaces.repvgg import RepVGGBlock, reparameterize
from lnas.spaces.staged import MBConvSpace, StagedNet, StagedSpace, StagedSupernet
from lnas.spaces.timm_spaces import timm_space

__all__ = ["Arch", "FeatureInfo", "InvalidArchError", "MBConvSpace", "RepVGGBlock", "SearchSpace", "StagedNet", "StagedSpace",
           "StagedSupernet", "recalibrate_batchnorm", "reparameterize", "timm_space"]
