"""Proxies by name: each is configured by ``conf/predictor/<name>.yaml`` (shipped as package data ``lnas.conf``)."""

from __future__ import annotations

from importlib.resources import files

from hydra.utils import instantiate
from omegaconf import OmegaConf

from lnas.predictors.base import Proxy

CONFIG_PACKAGE = "lnas.conf"


def available() -> list[str]:
    """Names of the configured predictors (``conf/predictor/*.yaml``)."""
    return sorted(p.name[:-5] for p in (files(CONFIG_PACKAGE) / "predictor").iterdir() if p.name.endswith(".yaml"))


def load_proxy(name: str) -> Proxy:
    """The predictor configured by ``conf/predictor/<name>.yaml``."""
    config = files(CONFIG_PACKAGE) / "predictor" / f"{name}.yaml"
    if not config.is_file():
        raise ValueError(f"unknown predictor {name!r}; available: {available()}")
    return instantiate(OmegaConf.create(config.read_text()))
