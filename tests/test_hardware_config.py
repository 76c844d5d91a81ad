from pathlib import Path

import lnas.conf
import onnxruntime as ort
import pytest
from hydra.utils import instantiate

from lnas.callbacks import HardwareLatency
from lnas.hardware import LatencyEstimator

OPTIONS = sorted(p.stem for p in (Path(lnas.conf.__file__).parent / "hardware").glob("*.yaml"))


def test_the_hardware_options_the_issue_asks_for_exist():
    assert {"ort_cpu", "ort_cuda", "lut_cpu", "nb201_raspi4", "nb201_edgegpu", "nb201_fpga", "nb201_gold_6226"} <= set(OPTIONS)


@pytest.mark.parametrize("option", OPTIONS)
def test_every_hardware_option_instantiates_with_the_debug_overlay_or_names_the_missing_provider(compose_cfg, tmp_path, option):
    cfg = compose_cfg("+experiment=detection", f"hardware={option}", "+debug=fast", f"output_dir={tmp_path}",
                      *([f"hardware.estimator.cache_dir={tmp_path}"] if option.startswith("lut") else []))
    assert cfg.hardware.target_latency_ms > 0
    provider = cfg.hardware.estimator.get("provider")
    if provider and provider not in ort.get_available_providers():
        with pytest.raises(Exception, match="available providers") as error:
            instantiate(cfg.hardware)
        assert "CPUExecutionProvider" in str(error.value)
        return
    hardware = instantiate(cfg.hardware)
    assert isinstance(hardware, HardwareLatency) and isinstance(hardware.estimator, LatencyEstimator)
    assert hardware.estimator.describe()
