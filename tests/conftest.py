"""Shared fixtures: the real Hydra configs composed as in ``python -m lnas.train``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    """Compose ``train.yaml`` with overrides (``output_dir`` must be given: no Hydra run dir in tests)."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_module("lnas.conf", version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides))

    return _compose


@pytest.fixture
def fast_detection(compose_cfg, tmp_path: Path) -> Callable[..., DictConfig]:
    """The detection experiment shrunk by ``+debug=fast``, writing into ``tmp_path``."""
    return lambda *extra: compose_cfg("+experiment=detection", "+debug=fast", f"output_dir={tmp_path}", *extra)
