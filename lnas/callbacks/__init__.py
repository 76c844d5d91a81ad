"""Lightning callbacks that run the search during warmup inside any Trainer."""

from lnas.callbacks.hardware_latency import ConstraintResult, HardwareLatency
from lnas.callbacks.zero_shot_search import ZeroShotSearch

__all__ = ["ConstraintResult", "HardwareLatency", "ZeroShotSearch"]
