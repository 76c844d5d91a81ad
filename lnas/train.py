"""The main job: search (Trainer #1) → train the pick and the baseline (Trainer #2, same recipe) → test → ONNX export
+ check → latency of both measured side by side → report.

``train(cfg) -> dict`` does the work and is what tests call; ``main`` is the Hydra wrapper behind
``python -m lnas.train +experiment=<task>``. Every phase is resumable (:mod:`lnas.phases`): ``resume=<run folder>``
continues a killed run with its saved config.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lnas.callbacks import HardwareLatency, ZeroShotSearch
from lnas.hardware.cost import count_flops, count_params
from lnas.hardware.export import check_onnx_matches, export_onnx
from lnas.io import atomic_write_text
from lnas.phases import PhaseCheckpoint, checkpoint_path, last_checkpoint, load_result, save_result
from lnas.predictors import data_free_predictor
from lnas.report import headline, read_arch_yaml, write_pareto_plot, write_report
from lnas.search.leaderboard import NoFeasibleCandidateError
from lnas.spaces.arch import Arch
from lnas.spaces.base import SearchSpace
from lnas.tasks import FinalModule, SupernetModule, Task, TaskModel
from lnas.tasks.baseline import timm_baseline

log = logging.getLogger("lnas.train")


@dataclass
class Contender:
    """A model the report compares: the pick or the baseline."""

    role: str
    name: str
    model: TaskModel
    arch: str = ""


def make_trainer(cfg: DictConfig, out: Path, phase: str, epochs: int, callbacks: list[L.Callback]) -> L.Trainer:
    extra: list[L.Callback] = [RichProgressBar()] if cfg.trainer.get("enable_progress_bar", True) else []
    checkpoint = PhaseCheckpoint(checkpoint_path(out, phase))
    return instantiate(cfg.trainer, max_epochs=epochs, callbacks=callbacks + [checkpoint] + extra, default_root_dir=str(out / phase),
                       logger=CSVLogger(str(out), name=phase, version=""), enable_checkpointing=False)  # PhaseCheckpoint saves


def fit_phase(cfg: DictConfig, out: Path, phase: str, epochs: int, callbacks: list[L.Callback], module: L.LightningModule,
              datamodule: L.LightningDataModule) -> L.Trainer:
    """Fit ``module`` for ``phase`` from the run's seed, or, resuming, from the phase's last checkpoint when it wrote one."""
    L.seed_everything(cfg.seed, workers=True)
    trainer = make_trainer(cfg, out, phase, epochs, callbacks)
    checkpoint = last_checkpoint(out, phase) if cfg.get("resume") else None
    if checkpoint is not None:
        log.info("resuming the %s phase from %s", phase, checkpoint)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(checkpoint) if checkpoint else None)
    return trainer


def _given_arch(cfg: DictConfig, space: SearchSpace) -> Arch:
    text = str(cfg.arch)
    if text.endswith((".yaml", ".yml")):
        text = read_arch_yaml(text)
    return space.decode(text)


def train_and_test(cfg: DictConfig, out: Path, phase: str, model: TaskModel, task: Task, datamodule: L.LightningDataModule) -> dict:
    """Train ``model`` with the final recipe for ``final_epochs``; return its test metrics (keys without the ``test/`` prefix).
    A phase that finished in an earlier process of the run (``resume=``) is not run again: its weights and metrics are read back."""
    done = load_result(out, phase) if cfg.get("resume") else None
    if done is not None:
        model.load_state_dict(done["model"])
        log.info("the %s phase finished before: its weights and test metrics are read back", phase)
        return done["metrics"]
    module = FinalModule(model, task, instantiate(cfg.optimizer))
    trainer = fit_phase(cfg, out, phase, cfg.final_epochs, [], module, datamodule)
    results = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    metrics = {key.removeprefix("test/"): float(value) for key, value in results.items()}
    save_result(out, phase, {"model": model.state_dict(), "metrics": metrics})
    return metrics


def search_phase(cfg: DictConfig, out: Path, supernet: SupernetModule, search: ZeroShotSearch, hardware: HardwareLatency,
                 datamodule: L.LightningDataModule) -> Arch:
    """Train the supernet while ``search`` searches (Trainer #1); the pick. Resuming a run whose search finished, the
    supernet, the search and the latencies are read back instead."""
    done = load_result(out, "warmup") if cfg.get("resume") else None
    if done is None:
        fit_phase(cfg, out, "warmup", cfg.warmup_epochs, [search, hardware], supernet, datamodule)
        save_result(out, "warmup", {"supernet": supernet.state_dict(), "search": search.state_dict(), "hardware": hardware.state_dict()})
        return search.chosen
    log.info("the warmup phase (search) finished before: the supernet, the search and its pick are read back")
    supernet.load_state_dict(done["supernet"])
    hardware.load_state_dict(done["hardware"])
    search.load_state_dict(done["search"])
    search.configure(supernet.space, hardware)
    return search.chosen


def _latencies(hardware: HardwareLatency, contenders: list[Contender], onnx_paths: list[Path], input_shape: tuple[int, ...]) -> dict[str, list]:
    """Latency of every contender on every device: their exported files measured interleaved when the device's estimator
    measures ONNX files, else the estimator's value (e.g. a look-up table by arch key). Device → one result per contender."""
    latencies = {}
    for target in hardware.targets:
        estimator = target.estimator
        if hasattr(estimator, "measure_onnx_many"):
            latencies[target.name] = estimator.measure_onnx_many(onnx_paths, [input_shape] * len(onnx_paths))
        else:
            latencies[target.name] = [estimator.estimate(c.arch or c.name, c.model, input_shape) for c in contenders]
    return latencies


def _timm_baseline(cfg: DictConfig, space: SearchSpace, task: Task, input_shape: tuple[int, int, int]) -> Contender | None:
    """The user's timm model (``baseline=<name>``), built before any work so a bad name stops the run at once."""
    if not cfg.baseline:
        return None
    return Contender("baseline", str(cfg.baseline), timm_baseline(str(cfg.baseline), task, input_shape, num_levels=len(space.feature_info())))


def _default_baseline(space: SearchSpace, supernet: SupernetModule, inherit: bool, seed: int) -> Contender:
    default = space.default()
    key = space.encode(default)
    return Contender("baseline", f"space default {key}", supernet.candidate(default, inherit=inherit, seed=seed), key)


def _check_before_work(cfg: DictConfig, space: SearchSpace, hardware: HardwareLatency, search: ZeroShotSearch | None) -> None:
    """Refuse combinations that cannot work, before anything is trained or measured."""
    hardware.check_space(space)
    if search is not None:
        search.objectives(hardware)
    if cfg.baseline and any(not hasattr(t.estimator, "measure_onnx_many") for t in hardware.targets):
        tables = [t.name for t in hardware.targets if not hasattr(t.estimator, "measure_onnx_many")]
        raise ValueError(f"baseline={cfg.baseline} cannot be looked up in the latency tables of devices {tables}: a timm baseline needs "
                         "devices that measure (hardware=ort_cpu|lut_cpu|ort_cuda); with a table, the baseline is the space default (baseline=null)")


def _data_free_setup(cfg: DictConfig, datamodule: L.LightningDataModule, task: Task, space: SearchSpace, proxy) -> dict | None:
    """With ``data=characteristics``: check the characteristics against the task and the space, and restrict the
    predictor to what scores without data (:func:`~lnas.predictors.data_free_predictor`); None with real data."""
    if not getattr(datamodule, "data_free", False):
        return None
    if cfg.arch:
        raise ValueError(f"data=characteristics searches without training; arch={cfg.arch} asks to train an arch: drop one of them")
    datamodule.check_task(task.name, space.feature_info())
    predictor, left_out = data_free_predictor(proxy)
    log.info("data-free search on %s with %s; left out: %s", datamodule.describe(), getattr(predictor, "used", predictor.name), left_out or "none")
    return {"predictor": predictor, "left_out": left_out}


def train(cfg: DictConfig) -> dict:
    """Run the whole pipeline for ``cfg``; return the summary (also written to ``summary.json``), or ``{}`` on a DDP rank
    other than 0."""
    out = Path(cfg.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    task: Task = instantiate(cfg.task)(num_classes=datamodule.num_classes)
    space: SearchSpace = instantiate(cfg.space)
    proxy = instantiate(cfg.predictor)
    data_free = _data_free_setup(cfg, datamodule, task, space, proxy)
    if data_free:
        proxy = data_free["predictor"]
    hardware: HardwareLatency = instantiate(cfg.hardware)
    searched = not cfg.arch
    search: ZeroShotSearch | None = instantiate(cfg.search, proxy=proxy, output_dir=str(out)) if searched else None
    if data_free and search.finetune:
        log.info("data-free search: the fine-tune stage is skipped (search.finetune=%d needs training data)", search.finetune)
        search.finetune = 0
    _check_before_work(cfg, space, hardware, search)
    input_shape = tuple(datamodule.input_shape)
    supernet = SupernetModule(space, task, instantiate(cfg.optimizer), seed=cfg.seed)
    inherit = bool(cfg.inherit) and searched
    baseline = _timm_baseline(cfg, space, task, input_shape) or _default_baseline(space, supernet, False, cfg.seed)

    if searched:
        if hardware.target_speedup is not None:  # budgets from the baseline, measured with the search's protocol
            measured = hardware.evaluate(baseline.arch or baseline.name, baseline.model, input_shape)
            hardware.set_budgets_from_baseline({t.name: measured.measures[t.measure] for t in hardware.targets})
            log.info("latency budgets from the baseline: %s", hardware.describe())
        if not baseline.arch:  # a timm model: on the leaderboard for comparison (the space default is a candidate)
            search.add_reference(baseline.name, baseline.model)
        search.set_baseline(baseline.arch or baseline.name, baseline.model)
        arch = search_phase(cfg, out, supernet, search, hardware, datamodule)
    else:
        arch = _given_arch(cfg, space)
        log.info("training the given arch %s from scratch (search skipped)", space.encode(arch))
    if baseline.arch and inherit:  # the space default starts from the supernet's weights, as the pick does
        baseline = _default_baseline(space, supernet, True, cfg.seed)
    key = space.encode(arch)
    pick = Contender("pick", key, supernet.candidate(arch, inherit=inherit, seed=cfg.seed), key)

    metrics = {}
    if not data_free:
        metrics["pick"] = train_and_test(cfg, out, "final", pick.model, task, datamodule)
        if cfg.train_baseline:
            metrics["baseline"] = train_and_test(cfg, out, "baseline", baseline.model, task, datamodule)
    if rank_zero_only.rank != 0:  # under DDP every rank trained and tested both; rank 0 exports, measures and reports
        return {}
    images, _ = next(iter(datamodule.test_dataloader()))
    paths = [export_onnx(pick.model, input_shape, out / "model.onnx"), export_onnx(baseline.model, input_shape, out / "baseline.onnx")]
    onnx_diff = check_onnx_matches(pick.model, paths[0], images[:2])
    latencies = _latencies(hardware, [pick, baseline], paths, input_shape)
    entries = {}
    for index, contender in enumerate((pick, baseline)):
        entries[contender.role] = {
            "name": contender.name, "arch": contender.arch,
            "params": count_params(contender.model), "flops": count_flops(contender.model, input_shape),
            "latency_ms": {device: results[index].median_ms for device, results in latencies.items()},
            "latency_spread_ms": {device: results[index].spread_ms for device, results in latencies.items()},
            "metrics": metrics.get(contender.role, {}), "trained": contender.role in metrics,
        }
    summary = {
        "experiment": cfg.experiment,
        "task": task.name,
        "metric": task.primary_metric,
        "metric_label": task.describe_metric(),
        "higher_is_better": task.higher_is_better,
        **entries,
        "devices": hardware.devices,
        "budgets_ms": {t.name: t.target_latency_ms for t in hardware.targets},
        "target_speedup": hardware.target_speedup,
        "search_picks": {device: {"arch": row.arch, "score": row.score, **{k: v for k, v in row.measures.items()}}
                         for device, row in search.picks.items()} if search else {},
        "candidates_screened": len(search.leaderboard.candidates()) if search else 0,
        "candidates_scored": len(search.scored()) if search else 0,
        "candidates_feasible": len(search.leaderboard.feasible()) if search else 0,
        "search_stages": search.stage_report() if search else {},
        "proxy": proxy.name + (f" ({', '.join(proxy.used)})" if hasattr(proxy, "used") else ""),
        "hardware": f"{hardware.describe()}; input {list(input_shape)}",
        "inherit": inherit,
        "onnx_max_abs_diff": onnx_diff,
        "data_free": {"characteristics": datamodule.describe(), "predictor_members": list(getattr(proxy, "used", [proxy.name])),
                      "left_out": data_free["left_out"]} if data_free else None,
    }
    if search is not None:
        write_pareto_plot(search.leaderboard, out / "pareto.png", proxy.name, hardware, search.picks,
                          baseline=(baseline.name, entries["baseline"]["latency_ms"]))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    write_report(out / "report.md", summary)
    log.info("run folder: %s", out)
    return summary


def resumed_config(cfg: DictConfig) -> DictConfig:
    """With ``resume=<run folder>``: that run's saved config (``.hydra/config.yaml``) writing into that folder; else ``cfg``."""
    if not cfg.get("resume"):
        return cfg
    folder = Path(cfg.resume)
    saved = folder / ".hydra" / "config.yaml"
    if not saved.exists():
        raise FileNotFoundError(f"resume={cfg.resume}: {saved} not found; resume takes the folder of a run of python -m lnas.train "
                                "(it holds .hydra/config.yaml and one folder per phase)")
    resumed = OmegaConf.load(saved)
    resumed.output_dir, resumed.resume = str(folder), str(folder)
    return resumed


USER_ERRORS = (NoFeasibleCandidateError, InstantiationException, ValueError, FileNotFoundError)  # ValueError: bad arch, data, baseline


@hydra.main(config_path="pkg://lnas.conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point; user errors end the run with their message and exit status 1."""
    try:
        cfg = resumed_config(cfg)
        log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
        summary = train(cfg)
    except USER_ERRORS as error:
        log.error("%s: %s", type(error).__name__, error)
        sys.exit(1)
    if summary:  # rank 0 (the other ranks of a DDP run return nothing)
        print(f"{headline(summary)}; report: {Path(cfg.output_dir) / 'report.md'}")


if __name__ == "__main__":
    main()
