from pathlib import Path

import lnas.conf
import onnxruntime as ort
import pytest
from hydra.utils import instantiate

from lnas.callbacks import HardwareLatency
from lnas.hardware import LatencyEstimator

OPTIONS = sorted(p.stem for p in (Path(lnas.conf.__file__).parent / "hardware").glob("*.yaml"))


def test_the_hardware_options_the_issues_ask_for_exist():
    assert {"ort_cpu", "ort_cpu_threads", "ort_cuda", "lut_cpu", "nb201"} <= set(OPTIONS)


@pytest.mark.parametrize("option", OPTIONS)
def test_every_hardware_option_instantiates_with_the_debug_overlay_or_names_the_missing_provider(compose_cfg, tmp_path, option):
    cfg = compose_cfg("+experiment=detection", f"hardware={option}", "+debug=fast", f"output_dir={tmp_path}",
                      *([f"hardware.devices.cpu.estimator.cache_dir={tmp_path}"] if option.startswith("lut") else []))
    assert cfg.hardware.target_speedup is None  # +debug=fast sets no budget
    providers = {d.estimator.get("provider") for d in cfg.hardware.devices.values()} if "names" not in cfg.hardware.devices else set()
    missing = sorted(p for p in providers if p and p not in ort.get_available_providers())
    if missing:
        with pytest.raises(Exception, match="available providers") as error:
            instantiate(cfg.hardware)
        assert "CPUExecutionProvider" in str(error.value)
        return
    hardware = instantiate(cfg.hardware)
    assert isinstance(hardware, HardwareLatency) and hardware.targets
    assert all(isinstance(t.estimator, LatencyEstimator) and t.estimator.describe() for t in hardware.targets)
    assert [c.measure for c in hardware.constraints()] == []  # budgets come from the baseline at run time
