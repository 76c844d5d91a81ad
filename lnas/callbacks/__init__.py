"""Lightning callbacks that run the search during warmup inside any Trainer."""

from lnas.callbacks.hardware_latency import HardwareLatency, HardwareResult, LatencyTarget
from lnas.callbacks.zero_shot_search import ZeroShotSearch

__all__ = ["HardwareLatency", "HardwareResult", "LatencyTarget", "ZeroShotSearch"]
