"""Recipe ``nb201_proxies``: every zero-cost proxy and the ensemble on a fixed stratified random sample of NAS-Bench-201
cells (:func:`stratified_sample`: one cell from each of ``n`` test-accuracy strata).

Each architecture is built by :class:`~lnas.spaces.nb201.NB201Space` with a seeded default initialisation and
scored on real CIFAR-10 training images, normalised as in SamsungLabs/zero-cost-nas. With ``batch: per_arch`` (the
default) every architecture gets its own batch, as in the reference implementations, which draw a fresh batch from a
shuffled, augmented training loader for each network (zero-cost-nas ``nasbench2_pred.py``; NASWOT
``score_networks.py``). The batch-to-batch variation is part of what the published correlations measure: with one
fixed batch for all networks, grad_norm, snip and fisher correlate about 0.2 higher than published. ``batch: fixed``
scores every network on the same batch. Each proxy takes the first ``batch_size`` images it is configured for (64;
NASWOT 128; ZiCo two batches of 64). Proxies are compared with the benchmark's CIFAR-10 test accuracy, except those
of Abdelfattah et al., who used cifar10-valid.

Each rho comes with a 95% bootstrap interval (``spearman_ci95``), so a miss can be told from sampling noise, and
``correlations.png`` shows every proxy's rank against the accuracy it is compared with. ``spearman_finite_scores_only``
is a diagnostic: rho over the architectures with a finite score (e.g. without Zen-score's ``-inf`` for cells whose
output does not depend on the input).

Timing (side by side, same device and threads): on the first ``timing_archs`` architectures, each proxy alone, the
six proxies of Abdelfattah et al. together, the ensemble, and one forward+backward pass of the batch of 64, each the
median of ``timing_repeats`` interleaved rounds. On this project's shared 2-core CPU machine five runs of the recipe
(3 rounds each) gave 3.63, 3.68, 3.83, 3.84 and 3.87 forward+backward passes for the six, the median over 10
architectures; single architectures ranged from 2.98 to 4.97.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchvision.transforms import v2

from lnas.benchmarks.correlation import rank_correlations, spearman_interval
from lnas.io import DATA_DIR_ENV, atomic_write, atomic_write_text, data_dir, nb201_table, read_csv_rows
from lnas.predictors.base import Proxy, score_proxies
from lnas.predictors.ensemble import ZeroShotEnsemble, population_ranks, warn_non_finite
from lnas.predictors.registry import load_proxy
from lnas.spaces.nb201 import NB201Space

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
FORWARD_BACKWARD_BATCH = 64
BATCH_MODES = frozenset({"per_arch", "fixed"})
NAN_POLICIES = frozenset({"omit", "worst"})
TRUTH_COLUMNS = ("cifar10_test_acc", "cifar10_valid_acc")


def load_table() -> list[dict]:
    """Rows of ``nb201_cifar10.csv`` (index, arch string, test and cifar10-valid accuracy), from :func:`lnas.io.nb201_table`."""
    return [{"idx": int(r["idx"]), "arch": r["arch_str"], "cifar10_test_acc": float(r["cifar10_test_acc"]),
             "cifar10_valid_acc": float(r["cifar10_valid_acc"])} for r in read_csv_rows(nb201_table("nb201_cifar10.csv"))]


class CifarSample:
    """The CIFAR-10 images of ``cifar10_train_1000.npz`` (floats in [0, 1], NCHW) and their labels, to draw batches from."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR-10 sample {path} not found (lnas does not ship it): set data_dir=... or ${DATA_DIR_ENV} "
                                    "to the shared data folder holding cifar10/cifar10_train_1000.npz")
        archive = np.load(path)
        self.images = torch.from_numpy(archive["x"]).permute(0, 3, 1, 2).float().div(255.0)
        self.labels = torch.from_numpy(archive["y"]).long()
        self.path = path

    def batch(self, count: int, seed: int, augment: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` images drawn with ``seed``, normalised, and their labels.

        ``augment`` applies the reference's training transform to each image (random crop of 32 after 4 pixels of
        zero padding, horizontal flip with probability 0.5), drawn from the same seed.
        """
        if count > len(self.images):
            raise ValueError(f"batch_size={count} exceeds the {len(self.images)} images in {self.path}")
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(len(self.images), generator=generator)[:count]
        images = self.images[chosen]
        if augment:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                transform = v2.Compose([v2.RandomCrop(images.shape[-1], padding=4), v2.RandomHorizontalFlip()])
                images = torch.stack([transform(image) for image in images])
        mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
        return (images - mean) / std, self.labels[chosen]


def stratified_sample(accuracy: Sequence[float], n: int, seed: int) -> list[int]:
    """``n`` row indices, one from each of ``n`` strata of (nearly) equal size cut from the rows sorted by ``accuracy``
    (ties by index), in random order; drawn with ``seed``.

    Stratified sampling (Cochran, "Sampling Techniques", ch. 5): every accuracy range is represented in proportion, so
    a sample's rho varies less around the full benchmark's than with a simple random sample. Over 2,000 samples of
    1,000 cells (seeds 1-2000), Zen-score's rho had a standard deviation of 0.024 instead of 0.033, #params' 0.013
    instead of 0.014.
    """
    if not 1 <= n <= len(accuracy):
        raise ValueError(f"n must be between 1 and {len(accuracy)}, got {n}")
    ordered = sorted(range(len(accuracy)), key=accuracy.__getitem__)  # a stable sort: ties stay in index order
    generator = torch.Generator().manual_seed(seed)
    bounds = [k * len(ordered) // n for k in range(n + 1)]
    offsets = torch.rand(n, generator=generator, dtype=torch.float64).tolist()
    picks = [ordered[low + int(offset * (high - low))] for low, high, offset in zip(bounds[:-1], bounds[1:], offsets, strict=True)]
    return [picks[k] for k in torch.randperm(n, generator=generator).tolist()]


def build_seeded(space: NB201Space, arch: str, seed: int) -> nn.Module:
    """The network of ``arch`` with PyTorch's default initialisation drawn from ``seed`` (global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return space.benchmark_network(space.decode(arch))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def timed(function: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of ``function()`` (CUDA work included)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def forward_backward(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> Callable[[], None]:
    """One training-mode forward+backward pass of the cross-entropy loss on a copy of ``model`` (the time unit)."""
    net = copy.deepcopy(model).train()
    x, y = inputs[:FORWARD_BACKWARD_BATCH], targets[:FORWARD_BACKWARD_BATCH]

    def run() -> None:
        F.cross_entropy(net(x), y).backward()

    return run


def measure_timings(models: Sequence[nn.Module], proxies: Sequence[Proxy], groups: dict[str, Sequence[Proxy]],
                    inputs: torch.Tensor, targets: torch.Tensor, device: torch.device, repeats: int = 1) -> dict[str, list[float]]:
    """Per-architecture seconds of each proxy alone, of each group scored together, and of one forward+backward: the
    median of ``repeats`` rounds, each round timing all of them one after the other (so drift hits all alike)."""
    seconds: dict[str, list[float]] = {name: [] for name in ["forward_backward", *groups, *(p.name for p in proxies)]}
    for model in models:
        run = forward_backward(model, inputs, targets)
        run()  # warm-up (allocator, kernels)
        rounds: dict[str, list[float]] = {name: [] for name in seconds}
        for _ in range(repeats):
            rounds["forward_backward"].append(timed(run, device))
            for proxy in proxies:
                rounds[proxy.name].append(timed(lambda p=proxy, net=model: p.score(net, inputs, targets), device))
            for name, members in groups.items():
                rounds[name].append(timed(lambda m=members, net=model: score_proxies(m, net, inputs, targets), device))
        for name, values in rounds.items():
            seconds[name].append(statistics.median(values))
    return seconds


def load_scores(paths: Sequence[str]) -> dict[int, dict[str, float]]:
    """Proxy scores of earlier runs (``scores.csv`` files), by NAS-Bench-201 index; the ensemble column is recomputed."""
    reused: dict[int, dict[str, float]] = {}
    for path in paths:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                reused.setdefault(int(row["idx"]), {}).update({k: float(v) for k, v in row.items() if k not in ("idx", "arch", "ensemble")})
    return reused


def scores_csv(rows: Sequence[dict], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["idx", "arch", *columns], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def render_table(names: Sequence[str], results: dict, expected: dict) -> str:
    lines = ["| proxy | spearman | 95% CI | kendall | published | vs | NaN scores | s/arch |", "|---|---|---|---|---|---|---|---|"]
    for name in names:
        published = expected.get(f"spearman.{name}", {})
        value = published.get("value", published.get("min", ""))
        seconds = results["seconds_per_arch"].get(name, math.nan)
        low, high = results["spearman_ci95"][name]
        lines.append(f"| {name} | {results['spearman'][name]:.3f} | {low:.3f}–{high:.3f} | {results['kendall'][name]:.3f} | {value} | "
                     f"{results['truth'][name]} | {results['nan_count'][name]} | {seconds:.3g} |")
    return "\n".join(lines)


def write_correlation_figure(rows: Sequence[dict], names: Sequence[str], truth: dict[str, str], directions: dict[str, bool],
                             spearman: dict[str, float], path: Path) -> Path:
    """One panel per proxy: its population rank (non-finite scores lowest) against the accuracy it is compared with."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, len(names))
    lines = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 2.8 * lines), dpi=110, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        ranks = population_ranks([r[name] for r in rows], directions[name]) / len(rows)
        ax.scatter([r[truth[name]] for r in rows], ranks, s=3, alpha=0.4, c="tab:red" if name == "ensemble" else "tab:blue")
        ax.set_title(f"{name}  rho={spearman[name]:.3f}", fontsize=9)
        ax.set_xlabel(f"{truth[name]} (%)", fontsize=7)
        ax.set_ylabel("score rank (fraction)", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"NAS-Bench-201 CIFAR-10: zero-cost proxies vs accuracy ({len(rows)} architectures)", fontsize=10)
    fig.tight_layout()
    written = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return written


def configured_proxies(cfg: DictConfig) -> tuple[list[Proxy], ZeroShotEnsemble, list[Proxy]]:
    """The listed proxies, the ensemble (sharing their instances), and every proxy to score (listed first)."""
    proxies = [load_proxy(name) for name in cfg.proxies]
    by_name = {p.name: p for p in proxies}
    ensemble = ensemble_of(cfg.ensemble, cfg.aggregation, by_name)
    return proxies, ensemble, proxies + [p for p in ensemble.proxies if p.name not in by_name]


def ensemble_of(spec: str | Sequence[str], aggregation: str | None = None, given: Mapping[str, Proxy] | None = None) -> ZeroShotEnsemble:
    """The ensemble ``spec`` names: a predictor config (``conf/predictor/<name>.yaml``, which must be an ensemble) or a list
    of member proxy names; members found in ``given`` are those instances; ``aggregation`` None keeps the config's."""
    if isinstance(spec, str):
        configured = load_proxy(spec)
        if not isinstance(configured, ZeroShotEnsemble):
            raise ValueError(f"predictor {spec!r} is not an ensemble; give an ensemble config (e.g. 'ensemble') or a list of proxy names")
        members, aggregation = configured.used, aggregation or configured.aggregation
    else:
        members = list(spec)
    given = given or {}
    return ZeroShotEnsemble([given.get(m) or load_proxy(m) for m in members], aggregation or "log_rank")


def architecture_batch(cifar: CifarSample, cfg: DictConfig, idx: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch that architecture ``idx`` is scored on: its own augmented draw (``batch: per_arch``) or the shared one."""
    inputs, targets = cifar.batch(cfg.batch_size, cfg.seed + idx, augment=True) if cfg.batch == "per_arch" else \
        cifar.batch(cfg.batch_size, cfg.seed)
    return inputs.to(device), targets.to(device)


def score_sample(entries: Sequence[dict], scored: Sequence[Proxy], ensemble: ZeroShotEnsemble, cfg: DictConfig, device: torch.device,
                 cifar: CifarSample, out_dir: Path) -> tuple[list[dict], float]:
    """One row per architecture (its scores, reused from ``cfg.resume`` where there), and seconds per computed architecture."""
    space, reused = NB201Space(cell_conv_bias=cfg.cell_conv_bias), load_scores(cfg.resume or [])
    columns = [p.name for p in scored] + ["ensemble"]
    rows: list[dict] = []
    computed, started = 0, time.perf_counter()
    for count, entry in enumerate(entries, start=1):
        scores = dict(reused.get(entry["idx"], {}))
        missing = [p for p in scored if p.name not in scores]
        if missing:
            model = build_seeded(space, entry["arch"], cfg.seed + entry["idx"]).to(device)
            scores.update(score_proxies(missing, model, *architecture_batch(cifar, cfg, entry["idx"], device)))
            computed += 1
        warn_non_finite(entry["arch"], {p.name: scores[p.name] for p in scored})
        rows.append({**entry, **scores})
        if count % cfg.checkpoint_every == 0 or count == len(entries):
            for row, value in zip(rows, ensemble.aggregate(rows), strict=True):
                row["ensemble"] = value
            atomic_write_text(out_dir / "scores.csv", scores_csv(rows, columns))
            print(f"[nb201_proxies] {count}/{len(entries)} architectures, {time.perf_counter() - started:.0f} s", flush=True)
    return rows, (time.perf_counter() - started) / computed if computed else math.nan


def timing_results(seconds: dict[str, list[float]], six: Sequence[str], repeats: int) -> dict:
    ratios = [s / f for s, f in zip(seconds["six_shared"], seconds["forward_backward"], strict=True)]
    return {"archs": len(ratios), "repeats": repeats, "six": list(six), "forward_backward_batch": FORWARD_BACKWARD_BATCH,
            "six_over_forward_backward": statistics.median(ratios) if ratios else math.nan,
            "six_over_forward_backward_min_max": [min(ratios), max(ratios)] if ratios else []}


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Score the sampled architectures; write ``scores.csv``; return correlations and timings."""
    table = load_table()
    if not 2 <= cfg.n <= len(table):
        raise ValueError(f"n must be between 2 and {len(table)}, got {cfg.n}")
    sample = stratified_sample([row["cifar10_test_acc"] for row in table], cfg.n, cfg.seed)[cfg.start: cfg.stop]
    if len(sample) < 2:
        raise ValueError(f"start={cfg.start}, stop={cfg.stop} leave fewer than 2 of the n={cfg.n} sampled architectures")
    if cfg.batch not in BATCH_MODES:
        raise ValueError(f"batch must be one of {sorted(BATCH_MODES)}, got {cfg.batch!r}")
    if cfg.timing_repeats < 1:
        raise ValueError(f"timing_repeats must be >= 1, got {cfg.timing_repeats}")
    if cfg.nan_scores not in NAN_POLICIES:
        raise ValueError(f"nan_scores must be one of {sorted(NAN_POLICIES)}, got {cfg.nan_scores!r}")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    cifar = CifarSample((Path(cfg.data_dir) if cfg.get("data_dir") else data_dir()) / "cifar10" / "cifar10_train_1000.npz")
    proxies, ensemble, scored = configured_proxies(cfg)
    entries = [table[i] for i in sample]
    rows, scoring_seconds = score_sample(entries, scored, ensemble, cfg, device, cifar, out_dir)
    batch = tuple(t.to(device) for t in cifar.batch(cfg.batch_size, cfg.seed))

    space = NB201Space(cell_conv_bias=cfg.cell_conv_bias)
    timing_models = [build_seeded(space, e["arch"], cfg.seed + e["idx"]).to(device) for e in entries[: cfg.timing_archs]]
    six = [next((p for p in scored if p.name == name), None) or load_proxy(name) for name in cfg.six]
    seconds = measure_timings(timing_models, scored, {"six_shared": six, "ensemble": ensemble.proxies}, *batch, device, cfg.timing_repeats)

    names = [p.name for p in scored] + ["ensemble"]
    truth = {n: "cifar10_valid_acc" if n in set(cfg.valid_accuracy_proxies) else "cifar10_test_acc" for n in names}
    directions = {p.name: p.higher_is_better for p in scored} | {"ensemble": True}
    omit_nan = cfg.nan_scores == "omit"
    by_column = {column: {n: rank_correlations([r[n] for r in rows], [r[column] for r in rows], directions[n], omit_nan) for n in names}
                 for column in TRUTH_COLUMNS}
    correlations = {n: by_column[truth[n]][n] for n in names}
    intervals = {n: spearman_interval([r[n] for r in rows], [r[truth[n]] for r in rows], directions[n], omit_nan, seed=cfg.seed) for n in names}
    finite_pairs = {n: [(r[n], r[truth[n]]) for r in rows if math.isfinite(r[n])] for n in names}
    results: dict = {"n": len(rows), "seed": cfg.seed, "batch": cfg.batch, "cell_conv_bias": cfg.cell_conv_bias,
                     "device": str(device), "threads": torch.get_num_threads(),
                     "ensemble_uses": ensemble.used, "aggregation": ensemble.aggregation, "truth": truth, "nan_scores": cfg.nan_scores,
                     "nan_count": {n: sum(math.isnan(r[n]) for r in rows) for n in names},
                     "spearman": {n: c[0] for n, c in correlations.items()}, "kendall": {n: c[1] for n, c in correlations.items()}}
    results["spearman_ci95"] = {n: list(interval) for n, interval in intervals.items()}
    results["spearman_by_truth"] = {column: {n: c[0] for n, c in by_name.items()} for column, by_name in by_column.items()}
    results["non_finite_count"] = {n: len(rows) - len(pairs) for n, pairs in finite_pairs.items()}
    results["spearman_finite_scores_only"] = {n: rank_correlations(*zip(*pairs, strict=True), directions[n])[0]
                                              for n, pairs in finite_pairs.items() if len(pairs) >= 2}
    results["ensemble_gain_over_params"] = results["spearman"]["ensemble"] - results["spearman"].get("params", math.nan)
    results["seconds_per_arch"] = {name: statistics.median(values) for name, values in seconds.items() if values}
    results["seconds_per_arch"]["all_proxies_shared"] = scoring_seconds
    results["timing"] = timing_results(seconds, cfg.six, cfg.timing_repeats)
    write_correlation_figure(rows, names, truth, directions, results["spearman"], out_dir / "correlations.png")
    print(render_table(names, results, OmegaConf.to_container(cfg.get("expected", {}), resolve=True)))
    print(f"six proxies shared / one forward+backward: {results['timing']['six_over_forward_backward']:.2f} "
          f"(median over {results['timing']['archs']} archs, {device}, {torch.get_num_threads()} threads)")
    return results
