"""Zero-shot accuracy predictors (training-free proxies)."""

from lnas.predictors.base import Proxy
from lnas.predictors.params import Params
from lnas.predictors.synflow import SynFlow

__all__ = ["Params", "Proxy", "SynFlow"]
