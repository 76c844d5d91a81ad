import inspect
from pathlib import Path

import lnas.conf
import pytest
from hydra.errors import MissingConfigException
from hydra.utils import get_class, instantiate

EXPERIMENTS = sorted(p.stem for p in (Path(lnas.conf.__file__).parent / "experiment").glob("*.yaml"))


def test_there_is_an_experiment_per_task():
    assert {"classification", "detection", "segmentation"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("debug", [[], ["+debug=fast"]])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(compose_cfg, tmp_path, experiment, debug):
    cfg = compose_cfg(f"+experiment={experiment}", *debug, f"output_dir={tmp_path}")
    datamodule = instantiate(cfg.data)
    space = instantiate(cfg.space)
    proxy = instantiate(cfg.predictor)
    hardware = instantiate(cfg.hardware)
    search = instantiate(cfg.search, proxy=proxy)
    task = instantiate(cfg.task)(num_classes=datamodule.num_classes)
    assert task.name == experiment and space.size() >= 10**9
    assert search.proxy is proxy and hardware.devices == ["cpu"] and (hardware.target_speedup is None) == bool(debug)
    instantiate(cfg.trainer, max_epochs=1, logger=False, enable_checkpointing=False)
    if debug:
        assert cfg.trainer.limit_train_batches <= 2 and cfg.final_epochs == 1


def _init_arguments(cls: type) -> set[str]:
    """The keyword arguments ``cls(...)`` takes, following ``**kwargs`` up to the base classes."""
    names: set[str] = set()
    for klass in cls.__mro__:
        parameters = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            return names
    return names


def test_debug_fast_sets_only_what_every_data_module_takes(compose_cfg, tmp_path):
    """``+debug=fast`` works with any ``data=`` (a smoke run on real images or on data characteristics alone)."""
    root = Path(lnas.conf.__file__).parent
    for option in sorted(p.stem for p in (root / "data").glob("*.yaml")):
        cfg = compose_cfg("+experiment=detection", f"data={option}", "+debug=fast", f"output_dir={tmp_path}")
        assert set(cfg.data) - {"_target_"} <= _init_arguments(get_class(cfg.data._target_)), option
        assert cfg.data.image_size == 64 and cfg.data.batch_size == 16


def test_every_config_group_option_instantiates(compose_cfg, tmp_path):
    root = Path(lnas.conf.__file__).parent
    for group in ("space", "predictor", "search", "task"):  # hardware: tests/test_hardware_config.py; data: tests/test_data.py
        for option in sorted(p.stem for p in (root / group).glob("*.yaml")):
            cfg = compose_cfg(f"{group}={option}", f"output_dir={tmp_path}")
            node = instantiate(cfg[group], proxy=instantiate(cfg.predictor)) if group == "search" else instantiate(cfg[group])
            if group == "task":
                node = node(num_classes=3)
            assert node is not None


def test_unknown_config_option_names_the_valid_ones(compose_cfg):
    with pytest.raises(MissingConfigException) as error:
        compose_cfg("space=no_such_space")
    assert "no_such_space" in str(error.value) and "mbconv" in str(error.value)
