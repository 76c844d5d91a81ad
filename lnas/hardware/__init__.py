"""Hardware costs: ONNX export, ONNX Runtime latency, a calibrated look-up-table predictor, NAS-Bench-201 device
tables, parameters, FLOPs and peak activation memory."""

from lnas.hardware.base import LatencyEstimator
from lnas.hardware.blocks import BlockCall, decompose
from lnas.hardware.calibration import Calibration, fit_calibration
from lnas.hardware.cost import count_flops, count_params
from lnas.hardware.export import check_onnx_matches, export_onnx
from lnas.hardware.lut import LutLatencyPredictor
from lnas.hardware.memory import peak_activation_bytes
from lnas.hardware.nb201 import Nb201LatencyTable
from lnas.hardware.ort import LatencyResult, OrtLatencyEstimator, hardware_fingerprint

__all__ = ["BlockCall", "Calibration", "LatencyEstimator", "LatencyResult", "LutLatencyPredictor", "Nb201LatencyTable", "OrtLatencyEstimator",
           "check_onnx_matches", "count_flops", "count_params", "decompose", "export_onnx", "fit_calibration", "hardware_fingerprint",
           "peak_activation_bytes"]
