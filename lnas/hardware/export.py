"""ONNX export fast enough to run per candidate, and a numerical check of the export in ONNX Runtime.

Two exporters: the legacy TorchScript one (``torch.onnx.export(..., dynamo=False)``, the default) and the dynamo one
(``torch.export`` + onnxscript: ``pip install -e ".[dynamo]"``). Timed side by side by the ``latency_fidelity`` recipe on
detectors of the default space, the legacy exporter took 0.3-0.6 s per candidate and the dynamo exporter 8-12 s
(torch 2.11-2.14), so the legacy exporter is the default. Both write one self-contained file (the dynamo exporter with
``external_data=False``).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lnas.io import atomic_write
from lnas.predictors.base import flatten_outputs

OPSET = 17
EXPORTERS = ("legacy", "dynamo")


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, batch_size: int = 1, exporter: str = "legacy") -> Path:
    """Export ``model`` (eval mode, CPU, float32) traced at ``(batch_size, *input_shape)`` to one ONNX file; batch axis dynamic.

    ``exporter``: ``"legacy"`` (TorchScript tracing, fast) or ``"dynamo"`` (``torch.export``; needs ``onnxscript``).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {exporter!r}; allowed: {list(EXPORTERS)}")
    net = copy.deepcopy(model).cpu().float().eval()
    example = torch.zeros((batch_size, *input_shape))
    with torch.no_grad():
        n_outputs = len(flatten_outputs(net(example)))
    names = [f"output{i}" for i in range(n_outputs)]

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "legacy":
                torch.onnx.export(net, (example,), str(tmp), dynamo=False, opset_version=OPSET, input_names=["input"], output_names=names,
                                  dynamic_axes={name: {0: "batch"} for name in ["input", *names]})
            else:  # traced at batch >= 2: torch.export specialises an axis of size 1
                wide = torch.zeros((max(batch_size, 2), *input_shape))
                torch.onnx.export(net, (wide,), str(tmp), dynamo=True, external_data=False, opset_version=max(OPSET, 18), input_names=["input"],
                                  output_names=names, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), verbose=False)

    return atomic_write(path, write)


def check_onnx_matches(model: nn.Module, onnx_path: str | Path, inputs: torch.Tensor, rtol: float = 1e-3, atol: float = 1e-4) -> float:
    """Run ``inputs`` through PyTorch (eval) and ONNX Runtime; raise if any output differs. Returns the max abs difference."""
    import onnxruntime as ort

    net = copy.deepcopy(model).cpu().float().eval()
    with torch.no_grad():
        expected = [t.numpy() for t in flatten_outputs(net(inputs.cpu().float()))]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: inputs.cpu().float().numpy()})
    if len(got) != len(expected):
        raise AssertionError(f"ONNX model has {len(got)} outputs, PyTorch {len(expected)}")
    worst = 0.0
    for index, (a, b) in enumerate(zip(expected, got, strict=True)):
        if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=atol):
            diff = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
            raise AssertionError(f"ONNX output {index} differs from PyTorch: shapes {a.shape} vs {b.shape}, max abs diff {diff:.3g}")
        worst = max(worst, float(np.abs(a - b).max()))
    return worst
