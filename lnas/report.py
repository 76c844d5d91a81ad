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


def write_pareto_plot(leaderboard: Leaderboard, path: str | Path, proxy_name: str, target_latency_ms: float | None = None,
                      baseline: tuple[str, float] | None = None) -> Path | None:
    """Scatter of proxy score vs latency: feasible, rejected, the Pareto front, the target, the chosen arch and the
    baseline's latency (``(name, ms)``). None if no candidate has a latency."""
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
        ax.axvline(target_latency_ms, ls="--", c="tab:red", lw=1, label=f"target {target_latency_ms:.3g} ms")
    if baseline is not None and math.isfinite(baseline[1]):
        ax.axvline(baseline[1], ls=":", c="black", lw=1.2, label=f"baseline {baseline[0][:40]}: {baseline[1]:.3g} ms")
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


def _fmt(value: float | None, unit: str = "", digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}{unit}"


def _primary(summary: dict, role: str) -> float:
    return summary[role]["metrics"].get(summary["metric"], math.nan)


def metric_delta_points(summary: dict) -> float:
    """The pick's primary metric minus the baseline's, in points (metrics in [0, 1] times 100); NaN when either is missing."""
    return 100.0 * (_primary(summary, "pick") - _primary(summary, "baseline"))


def speedup(summary: dict) -> float:
    """The baseline's latency over the pick's (both measured with the same estimator, side by side)."""
    return summary["baseline"]["latency_ms"] / summary["pick"]["latency_ms"]


def headline(summary: dict) -> str:
    """E.g. ``3.4x faster, -0.6 pt top-1 than resnet18`` (the first line of ``report.md``)."""
    delta = metric_delta_points(summary)
    quality = f"{delta:+.1f} pt {summary['metric_label']}" if math.isfinite(delta) else f"{summary['metric_label']} of the baseline not measured"
    return f"{speedup(summary):.1f}x faster, {quality} than {summary['baseline']['name']}"


def render_report(summary: dict) -> str:
    """``report.md`` text from the run summary produced by :func:`lnas.train.train`."""
    label = summary["metric_label"]
    metric_names = sorted({name for role in ("pick", "baseline") for name in summary[role]["metrics"]},
                          key=lambda name: (name != summary["metric"], name))
    lines = [
        f"# {headline(summary)}",
        "",
        f"- task: {summary['task']} (experiment `{summary['experiment']}`); primary metric {label} on the test split",
        f"- pick: `{summary['pick']['arch']}`",
        f"- baseline: {summary['baseline']['name']}",
        f"- candidates scored: {summary['candidates_scored']} ({summary['candidates_feasible']} feasible) with proxy `{summary['proxy']}`",
        f"- latency target: {summary['target_latency_ms']} ms",
        f"- hardware: {summary['hardware']}",
        "",
        "| model | " + " | ".join(f"test {n}" for n in metric_names) + " | latency (ms) | params (M) | MFLOPs |",
        "|---|" + "---|" * len(metric_names) + "---|---|---|",
    ]
    for role in ("pick", "baseline"):
        entry = summary[role]
        values = " | ".join(_fmt(entry["metrics"].get(n)) for n in metric_names)
        lines.append(f"| {role}: {entry['name'] if role == 'baseline' else '`' + entry['arch'] + '`'} | {values} | "
                     f"{_fmt(entry['latency_ms'])} ± {_fmt(entry['latency_spread_ms'])} | {entry['params'] / 1e6:.3f} | {entry['flops'] / 1e6:.1f} |")
    trained = summary["baseline"]["trained"]
    lines += [
        "",
        "Both models were trained with the same final recipe and data, tested on the same split, and their latencies "
        "measured with the same estimator, side by side (median ± spread of the block medians)." if trained else
        "The baseline was not trained (`train_baseline=false`): its metrics are n/a.",
        f"The pick {'started from the supernet weights' if summary['inherit'] else 'was trained from scratch'}; "
        f"it measured {_fmt(summary.get('search_latency_ms'))} ms during the search.",
        f"ONNX export checked against PyTorch: max abs difference {summary['onnx_max_abs_diff']:.2e}.",
        "",
        "Files: `arch.yaml`, `leaderboard.csv`, `pareto.png`, `model.onnx` (the pick), `baseline.onnx`, `summary.json`.",
        "",
        "![Pareto front](pareto.png)",
        "",
    ]
    return "\n".join(lines)


def write_report(path: str | Path, summary: dict) -> Path:
    return atomic_write_text(path, render_report(summary))
