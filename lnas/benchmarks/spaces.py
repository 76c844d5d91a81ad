"""Recipe ``spaces``: how large each search space is, how long a subnet takes to extract, and what RepVGG fusion buys.

1. For each option of ``conf/space`` listed in ``spaces``: log10 of its exact number of candidates and the
   median wall time of ``supernet.extract(arch)`` over ``extract_samples`` random archs (every space shares weights).
2. RepVGG (Ding et al., CVPR 2021, "RepVGG: Making VGG-style ConvNets Great Again"): networks of the default space
   with every block a RepVGG block (``repvgg_archs``), BatchNorm statistics set by ``stat_batches`` random batches,
   measured in ONNX Runtime in the multi-branch form (as trained) and fused (``reparameterize``, as exported),
   interleaved block by block in one session (:meth:`~lnas.hardware.ort.OrtLatencyEstimator.measure_many`), so
   both see the same machine state. ``repvgg_unfused_over_fused`` is the smallest of the per-network median ratios;
   ``repvgg_max_abs_difference`` compares the two forms' outputs in eval mode.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lnas.benchmarks.latency_fidelity import load_space
from lnas.hardware import OrtLatencyEstimator
from lnas.predictors.base import flatten_outputs
from lnas.spaces.repvgg import multi_branch, reparameterize


def extraction_ms(space, samples: int, seed: int) -> list[float]:
    """Milliseconds of ``supernet.extract`` for ``samples`` random archs."""
    supernet = space.supernet().eval()
    generator = torch.Generator().manual_seed(seed)
    times = []
    for _ in range(samples):
        arch = space.sample(generator)
        start = time.perf_counter()
        supernet.extract(arch)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def with_batch_statistics(model: nn.Module, shape: tuple[int, ...], batches: int, seed: int) -> nn.Module:
    """``model`` in eval mode after ``batches`` training-mode passes of random inputs (non-trivial BatchNorm statistics)."""
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn((4, *shape), generator=generator))
    return model.eval()


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Sizes and extraction times of ``cfg.spaces``; fused vs unfused RepVGG latency (see the module docstring)."""
    results: dict = {"log10_size": {}, "extract_ms": {}, "extract_ms_min_max": {}}
    for name in cfg.spaces:
        space = load_space(name, int(cfg.input_shape[-1]))
        results["log10_size"][name] = math.log10(space.size())
        if cfg.extract_samples > 0:
            times = extraction_ms(space, int(cfg.extract_samples), int(cfg.seed))
            results["extract_ms"][name] = statistics.median(times)
            results["extract_ms_min_max"][name] = [min(times), max(times)]
        print(f"[spaces] {name}: log10 size {results['log10_size'][name]:.2f}; extract ms {results['extract_ms'].get(name, math.nan):.1f}",
              flush=True)

    shape = tuple(int(s) for s in cfg.input_shape)
    estimator = OrtLatencyEstimator(**OmegaConf.to_container(cfg.estimator, resolve=True))
    space = load_space(cfg.repvgg_space, int(cfg.input_shape[-1]))
    rows, differences, protocol = [], [], {}
    for index, arch in enumerate(cfg.repvgg_archs):
        fused = with_batch_statistics(space.build(space.decode(arch)), shape, int(cfg.stat_batches), int(cfg.seed) + index)
        branches = multi_branch(fused)
        reparameterize(fused)
        x = torch.randn((2, *shape), generator=torch.Generator().manual_seed(int(cfg.seed)))
        with torch.no_grad():
            differences.append(max((a - b).abs().max().item() for a, b in zip(flatten_outputs(branches(x)), flatten_outputs(fused(x)), strict=True)))
        unfused_result, fused_result = estimator.measure_many([branches, fused], [shape, shape])
        ratios = [u / f for u, f in zip(unfused_result.block_medians_ms, fused_result.block_medians_ms, strict=True)]
        protocol = {k: v for k, v in fused_result.as_dict().items() if k not in ("median_ms", "spread_ms", "block_medians_ms")}
        rows.append({"arch": arch, "unfused_ms": unfused_result.median_ms, "fused_ms": fused_result.median_ms,
                     "ratio_median": statistics.median(ratios), "ratio_min_max": [min(ratios), max(ratios)]})
        print(f"[spaces] RepVGG {arch}: unfused {unfused_result.median_ms:.3f} ms, fused {fused_result.median_ms:.3f} ms, "
              f"ratio {rows[-1]['ratio_median']:.2f} (blocks {min(ratios):.2f}-{max(ratios):.2f})", flush=True)
    results["repvgg"] = rows
    results["repvgg_unfused_over_fused"] = min(r["ratio_median"] for r in rows) if rows else math.nan
    results["repvgg_max_abs_difference"] = max(differences) if differences else math.nan
    results["latency_protocol"] = protocol
    return results
