"""Run outputs: ``arch.yaml``, the Pareto plot and ``report.md`` (all written atomically)."""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from lnas.io import atomic_write, atomic_write_text
from lnas.search.leaderboard import Candidate, Leaderboard
from lnas.search.objectives import FLOPS
from lnas.spaces.arch import Arch


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    return value


def write_arch_yaml(path: str | Path, best: Candidate, arch: Arch, proxy_name: str) -> Path:
    """The chosen arch: its string (``arch``), every label (``choices``) and the measurements behind the choice."""
    record = {"arch": best.arch, "choices": dict(arch), "proxy": proxy_name, "score": best.score, "measures": dict(best.measures),
              "spreads": dict(best.spreads), "components": dict(best.components)}
    return atomic_write_text(path, yaml.safe_dump(_finite_or_none(record), sort_keys=False))


def read_arch_yaml(path: str | Path) -> str:
    """The arch string stored in an ``arch.yaml``."""
    record = yaml.safe_load(Path(path).read_text())
    if not isinstance(record, dict) or "arch" not in record:
        raise ValueError(f"{path} is not an lnas arch.yaml (it needs an 'arch' key)")
    return str(record["arch"])


def write_pareto_plot(leaderboard: Leaderboard, path: str | Path, proxy_name: str, hardware=None, picks: dict[str, Candidate] | None = None,
                      baseline: tuple[str, dict[str, float]] | None = None) -> Path | None:
    """One panel per device: proxy score vs latency of every candidate (feasible, rejected), the Pareto front, the
    device's budget, its pick, and the baseline's latency there (``(name, {device: ms})``). Without devices, score vs
    MFLOPs. None if no candidate has a finite score."""
    devices = [(t.name, t.measure, t.target_latency_ms) for t in hardware.targets] if hardware is not None else []
    panels = devices or [("FLOPs", FLOPS, None)]
    if not any(math.isfinite(r.score) for r in leaderboard.rows):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), dpi=120, squeeze=False)
    front = {r.arch for r in leaderboard.front()}
    for ax, (device, measure, budget) in zip(axes[0], panels, strict=True):
        scale = 1e-6 if measure == FLOPS else 1.0
        rows = [r for r in leaderboard.candidates() if math.isfinite(r.measures.get(measure, math.nan)) and math.isfinite(r.score)]
        for feasible, colour, label in ((True, "tab:blue", "feasible"), (False, "tab:gray", "rejected")):
            subset = [r for r in rows if leaderboard.is_feasible(r) == feasible]
            if subset:
                ax.scatter([r.measures[measure] * scale for r in subset], [r.score for r in subset], s=14, c=colour, alpha=0.7, label=label)
        on_front = sorted((r for r in rows if r.arch in front), key=lambda r: r.measures[measure])
        if on_front:
            ax.plot([r.measures[measure] * scale for r in on_front], [r.score for r in on_front], "-o", c="tab:orange", ms=4, label="Pareto front")
        if budget is not None:
            ax.axvline(budget, ls="--", c="tab:red", lw=1, label=f"budget {budget:.3g} ms")
        for row in leaderboard.rows:
            if row.reference and math.isfinite(row.measures.get(measure, math.nan)) and math.isfinite(row.score):
                ax.scatter([row.measures[measure] * scale], [row.score], marker="D", s=60, c="black", label=f"reference {row.arch[:30]}", zorder=6)
        if baseline is not None and math.isfinite(baseline[1].get(device, math.nan)):
            ax.axvline(baseline[1][device], ls=":", c="black", lw=1.2, label=f"baseline {baseline[0][:30]}: {baseline[1][device]:.3g} ms")
        pick = (picks or {}).get(device) or (picks or {}).get("any")
        if pick is not None and math.isfinite(pick.measures.get(measure, math.nan)):
            ax.scatter([pick.measures[measure] * scale], [pick.score], marker="*", s=180, c="tab:red", label=f"pick {pick.arch[:30]}", zorder=7)
        ax.set_xlabel("MFLOPs" if measure == FLOPS else f"latency on {device} (ms)")
        ax.set_ylabel(f"{proxy_name} score")
        ax.set_title(device)
        scores = [r.score for r in rows]
        if scores and all(v > 0 for v in scores) and max(scores) / min(scores) > 100:
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


def speedup(summary: dict, device: str | None = None) -> float:
    """The baseline's latency over the pick's on ``device`` (default: the first), both measured side by side."""
    device = device or summary["devices"][0]
    return summary["baseline"]["latency_ms"][device] / summary["pick"]["latency_ms"][device]


def headline(summary: dict) -> str:
    """E.g. ``3.4x faster, -0.6 pt top-1 than resnet18 on cpu`` (the first line of ``report.md``)."""
    delta = metric_delta_points(summary)
    if summary.get("data_free"):
        quality = f"{summary['metric_label']} not measured (data-free search)"
    elif math.isfinite(delta):
        quality = f"{delta:+.1f} pt {summary['metric_label']}"
    else:
        quality = f"{summary['metric_label']} of the baseline not measured"
    ratio = speedup(summary)
    pace = f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"
    return f"{pace}, {quality} than {summary['baseline']['name']} on {summary['devices'][0]}"


def _device_table(summary: dict) -> list[str]:
    lines = ["| device | budget (ms) | search pick for the device | pick (ms) | baseline (ms) | speed-up |", "|---|---|---|---|---|---|"]
    for device in summary["devices"]:
        budget = summary["budgets_ms"].get(device)
        search_pick = summary["search_picks"].get(device, {}).get("arch", "n/a")
        pick, base = summary["pick"], summary["baseline"]
        pick_ms = f"{_fmt(pick['latency_ms'][device])} ± {_fmt(pick['latency_spread_ms'][device])}"
        base_ms = f"{_fmt(base['latency_ms'][device])} ± {_fmt(base['latency_spread_ms'][device])}"
        lines.append(f"| {device} | {_fmt(budget)} | `{search_pick}` | {pick_ms} | {base_ms} | {speedup(summary, device):.2f}x |")
    return lines


def describe_stages(stages: dict) -> str:
    """E.g. ``score 48 in 35.2 s (733 ms each), measure 17 in 8.1 s (476 ms each)``."""
    parts = [f"{stage} {e['candidates']} in {e['seconds']:.1f} s ({e['ms_per_candidate']:.0f} ms each)" for stage, e in stages.items()]
    return ", ".join(parts) or "n/a"


def _training_lines(summary: dict) -> list[str]:
    """How the two models were trained, or, for a data-free search, what it ran on and which predictor members it used."""
    free = summary.get("data_free")
    if free:
        left_out = ", ".join(f"{name} ({why})" for name, why in free["left_out"].items()) or "none"
        return [f"Data-free search (`data=characteristics`: {free['characteristics']}): the candidates were scored on Gaussian inputs "
                "of that shape and nothing was trained or tested, so there is no metric; latencies are measured as in any run.",
                f"Predictor members used: {', '.join(free['predictor_members'])} (they need no real data); left out: {left_out}. "
                "The fine-tune stage was skipped (it trains on data)."]
    trained = summary["baseline"]["trained"]
    return [
        "Both models were trained with the same final recipe and data, tested on the same split, and their latencies measured "
        "with the same estimator, side by side (median ± spread of the block medians)." if trained else
        "The baseline was not trained (`train_baseline=false`): its metrics are n/a.",
        f"The pick {'started from the supernet weights' if summary['inherit'] else 'was trained from scratch'}.",
    ]


def render_report(summary: dict) -> str:
    """``report.md`` text from the run summary produced by :func:`lnas.train.train`."""
    label, first = summary["metric_label"], summary["devices"][0]
    metric_names = sorted({name for role in ("pick", "baseline") for name in summary[role]["metrics"]},
                          key=lambda name: (name != summary["metric"], name))
    if summary["target_speedup"]:
        budget = f"the baseline's latency / {summary['target_speedup']:g} on each device"
    elif any(value is not None for value in summary["budgets_ms"].values()):
        budget = "absolute, per device (below)"
    else:
        budget = "none: the pick is the candidate with the best predicted accuracy"
    lines = [
        f"# {headline(summary)}",
        "",
        f"- task: {summary['task']} (experiment `{summary['experiment']}`); primary metric {label} on the test split",
        f"- pick ({'not trained' if summary.get('data_free') else 'trained'}, the search's pick for {first}): `{summary['pick']['arch']}`",
        f"- baseline: {summary['baseline']['name']}",
        f"- candidates scored: {summary['candidates_scored']} with proxy `{summary['proxy']}`, of "
        f"{summary.get('candidates_screened', summary['candidates_scored'])} on the leaderboard ({summary['candidates_feasible']} "
        "feasible on every device)",
        f"- latency budget: {budget}",
        f"- search time per stage: {describe_stages(summary.get('search_stages', {}))}",
        f"- hardware: {summary['hardware']}",
        "",
        "| model | " + " | ".join(f"test {n}" for n in metric_names) + f" | latency on {first} (ms) | params (M) | MFLOPs |",
        "|---|" + "---|" * len(metric_names) + "---|---|---|",
    ]
    for role in ("pick", "baseline"):
        entry = summary[role]
        values = " | ".join(_fmt(entry["metrics"].get(n)) for n in metric_names)
        name = entry["name"] if role == "baseline" else f"`{entry['arch']}`"
        lines.append(f"| {role}: {name} | {values} | {_fmt(entry['latency_ms'][first])} ± {_fmt(entry['latency_spread_ms'][first])} | "
                     f"{entry['params'] / 1e6:.3f} | {entry['flops'] / 1e6:.1f} |")
    lines += [
        "",
        *_training_lines(summary),
        f"ONNX export checked against PyTorch: max abs difference {summary['onnx_max_abs_diff']:.2e}.",
        "",
        "Per device (the search's pick for each device is in `picks.yaml`; the trained pick and the baseline are measured on every device):",
        "",
        *_device_table(summary),
        "",
        "Files: `arch.yaml`, `picks.yaml`, `leaderboard.csv`, `pareto.png`, `model.onnx` (the pick), `baseline.onnx`, `summary.json`.",
        "",
        "![Pareto front](pareto.png)",
        "",
    ]
    return "\n".join(lines)


def write_report(path: str | Path, summary: dict) -> Path:
    return atomic_write_text(path, render_report(summary))
