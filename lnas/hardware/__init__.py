"""Hardware costs: ONNX export, ONNX Runtime latency, parameters and FLOPs."""

from lnas.hardware.cost import count_flops, count_params
from lnas.hardware.export import check_onnx_matches, export_onnx
from lnas.hardware.ort import LatencyResult, OrtLatencyEstimator, hardware_fingerprint

__all__ = ["LatencyResult", "OrtLatencyEstimator", "check_onnx_matches", "count_flops", "count_params", "export_onnx",
           "hardware_fingerprint"]
