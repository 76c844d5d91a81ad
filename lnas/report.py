"""Run outputs: ``arch.yaml``, the Pareto plot and ``report.md`` (all written atomically)."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import yaml

from lnas.io import atomic_write, atomic_write_text
from lnas.search.leaderboard import Candidate, Leaderboard
from lnas.spaces.arch import Arch


def write_arch_yaml(path: str | Path, best: Candidate, arch: Arch, proxy_name: str) -> Path:
    """The chosen arch: its string (``arch``), every label (``choices``) and the measurements behind the choice."""
    record = {"arch": best.arch, "choices": dict(arch), "proxy": proxy_name, **{k: v for k, v in asdict(best).items() if k != "arch"}}
    record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    return atomic_write_text(path, yaml.safe_dump(record, sort_keys=False))


def read_arch_yaml(path: str | Path) -> str:
    """The arch string stored in an ``arch.yaml``."""
    record = yaml.safe_load(Path(path).read_text())
    if not isinstance(record, dict) or "arch" not in record:
        raise ValueError(f"{path} is not an lnas arch.yaml (it needs an 'arch' key)")
    return str(record["arch"])


def write_pareto_plot(leaderboard: Leaderboard, path: str | Path, proxy_name: str, target_latency_ms: float | None = None) -> Path | None:
    """Scatter of proxy score vs latency: feasible, rejected, the Pareto front, the target and the chosen arch. None if no latency."""
    rows = [r for r in leaderboard.rows if math.isfinite(r.latency_ms) and math.isfinite(r.score)]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    for feasible, colour, label in ((True, "tab:blue", "feasible"), (False, "tab:gray", "rejected")):
        subset = [r for r in rows if r.feasible == feasible]
        if subset:
            ax.scatter([r.latency_ms for r in subset], [r.score for r in subset], s=14, c=colour, alpha=0.7, label=label)
    front = sorted((r for r in leaderboard.pareto() if r in rows), key=lambda r: r.latency_ms)
    if front:
        ax.plot([r.latency_ms for r in front], [r.score for r in front], "-o", c="tab:orange", ms=4, label="Pareto front")
    if target_latency_ms is not None:
        ax.axvline(target_latency_ms, ls="--", c="tab:red", lw=1, label=f"target {target_latency_ms} ms")
    try:
        best = leaderboard.best()
        if math.isfinite(best.latency_ms):
            ax.scatter([best.latency_ms], [best.score], marker="*", s=160, c="tab:red", label=f"chosen {best.arch}", zorder=5)
    except RuntimeError:
        pass
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel(f"{proxy_name} score")
    if all(r.score > 0 for r in rows) and max(r.score for r in rows) / min(r.score for r in rows) > 100:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    written = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return written


def _fmt(value: float, unit: str = "", digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}{unit}"


def render_report(summary: dict) -> str:
    """``report.md`` text from the run summary produced by :func:`lnas.train.train`."""
    chosen, baseline = summary["chosen"], summary.get("baseline")
    trained = baseline is not None and math.isfinite(baseline.get("test_map", math.nan))
    baseline_note = "" if trained else "; its test mAP is n/a unless the run sets `baseline.train=true`"
    lines = [
        "# lnas run report",
        "",
        f"- experiment: `{summary['experiment']}`",
        f"- chosen architecture: `{chosen['arch']}`",
        f"- candidates scored: {summary['candidates_scored']} ({summary['candidates_feasible']} feasible) with proxy `{summary['proxy']}`",
        f"- latency target: {summary['target_latency_ms']} ms",
        f"- hardware: {summary['hardware']}",
        "",
        "| model | arch | params (M) | MFLOPs | latency (ms) | test mAP | test mAP@50 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in (("chosen", chosen), ("baseline (space default)", baseline)):
        if entry:
            lines.append(
                f"| {name} | `{entry['arch']}` | {entry['params'] / 1e6:.3f} | {entry['flops'] / 1e6:.1f} | "
                f"{_fmt(entry['latency_ms'])} ± {_fmt(entry.get('latency_spread_ms'))} | {_fmt(entry.get('test_map'))} | "
                f"{_fmt(entry.get('test_map_50'))} |"
            )
    lines += [
        "",
        "Latency: median ± spread as reported by the hardware estimator above (measured models: spread of the block medians);",
        f"the chosen model measured {_fmt(chosen.get('search_latency_ms'))} ms during the search and is measured again on the exported file.",
        f"ONNX export checked against PyTorch: max abs difference {summary['onnx_max_abs_diff']:.2e}.",
        "",
        f"The baseline is the space's default arch{baseline_note}.",
        "",
        "Files: `arch.yaml`, `leaderboard.csv`, `pareto.png`, `model.onnx`, `report.md`.",
        "",
        "![Pareto front](pareto.png)",
        "",
    ]
    return "\n".join(lines)


def write_report(path: str | Path, summary: dict) -> Path:
    return atomic_write_text(path, render_report(summary))
