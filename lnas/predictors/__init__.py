"""Zero-shot accuracy predictors (training-free proxies) and their rank-aggregation ensemble."""

from lnas.predictors.az_nas import Expressivity, Progressivity, Trainability
from lnas.predictors.base import Proxy, score_proxies
from lnas.predictors.ensemble import ZeroShotEnsemble, data_free_predictor, warn_non_finite
from lnas.predictors.flops import Flops
from lnas.predictors.gradients import Fisher, GradNorm, Grasp, JacobCov, Snip, ZiCo
from lnas.predictors.naswot import NASWOT
from lnas.predictors.params import Params
from lnas.predictors.synflow import SynFlow
from lnas.predictors.zen import ZenScore

__all__ = [
    "NASWOT", "Expressivity", "Fisher", "Flops", "GradNorm", "Grasp", "JacobCov", "Params", "Progressivity", "Proxy",
    "Snip", "SynFlow", "Trainability", "ZenScore", "ZeroShotEnsemble", "ZiCo", "data_free_predictor", "score_proxies", "warn_non_finite",
]
