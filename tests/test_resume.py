"""``resume=<run folder>``: a run killed in any phase continues and ends with the files of an uninterrupted run."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

# Two epochs per phase (a checkpoint after the first), the cascade's screen on; latency from the look-up table only (a shared table, raw sums,
# no finalists measured), so two runs see the same latencies and only the resume can make them differ.
RUN = ["+experiment=classification", "+debug=fast", "warmup_epochs=2", "final_epochs=2", "search.screen=24", "search.finalists=0",
       "hardware.target_speedup=null", "hardware.devices.cpu.target_latency_ms=1000", "hardware.devices.cpu.estimator.calibration_size=0"]


def _start(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lnas.train", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_when(process: subprocess.Popen, path: Path, timeout: float = 300) -> None:
    """SIGKILL ``process`` as soon as ``path`` exists (it must appear before the process ends)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended before {path} appeared:\n{process.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    return output


def _outcome(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    with (run / "leaderboard.csv").open() as handle:
        board = [(row["arch"], row["stage"], row["score"], row["feasible"]) for row in csv.DictReader(handle)]
    return {"picks": yaml.safe_load((run / "picks.yaml").read_text()), "arch": (run / "arch.yaml").read_text(), "board": board,
            "metrics": {role: summary[role]["metrics"] for role in ("pick", "baseline")},
            "stages": {stage: entry["candidates"] for stage, entry in summary["search_stages"].items()}}


def test_a_run_killed_in_each_phase_resumes_to_the_files_of_an_uninterrupted_run(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", LNAS_CACHE_DIR=str(tmp_path / "cache"))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _finish(_start([*RUN, f"hydra.run.dir={whole}"], env))

    first = _start([*RUN, f"hydra.run.dir={killed}"], env)
    _kill_when(first, killed / "warmup" / "checkpoints" / "last.ckpt")  # during the warmup's second epoch or its search stages
    resumed = _start([f"resume={killed}"], env)
    _kill_when(resumed, killed / "final" / "checkpoints" / "last.ckpt")
    assert (killed / "warmup" / "result.pt").exists() and not (killed / "final" / "result.pt").exists()
    resumed = _start([f"resume={killed}"], env)
    _kill_when(resumed, killed / "baseline" / "checkpoints" / "last.ckpt")
    output = _finish(_start([f"resume={killed}"], env))
    assert "the warmup phase (search) finished before" in output and "the final phase finished before" in output
    assert "resuming the baseline phase from" in output

    assert _outcome(killed) == _outcome(whole)


def test_resume_needs_the_folder_of_a_run(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lnas.train", f"resume={tmp_path}"], env=dict(os.environ, HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and ".hydra/config.yaml not found" in done.stdout + done.stderr
    with pytest.raises(AssertionError):  # the helper notices a run that ended before the file it waits for
        _kill_when(subprocess.Popen([sys.executable, "-c", "pass"], stdout=subprocess.PIPE, text=True), tmp_path / "never")
