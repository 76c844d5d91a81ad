"""A persistent, shared study (``search.storage``): continued after a kill, shared by processes, refused when it cannot work."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from lnas.search import Candidate, Leaderboard, Objective, OptunaSearch, RegularizedEvolutionSampler
from lnas.search.loop import SearchLoop
from lnas.search.objectives import MAXIMIZE, MINIMIZE
from lnas.spaces.nb201 import NB201Space

OBJECTIVES = [Objective("score", MAXIMIZE), Objective("params", MINIMIZE)]


def _loop(storage: str, objectives=OBJECTIVES) -> SearchLoop:
    strategy = OptunaSearch(sampler=lambda seed: RegularizedEvolutionSampler(population=4, tournament=2, seed=seed), storage=storage)
    space = NB201Space()
    strategy.start(space, objectives, seed=0)
    return SearchLoop(space, strategy, Leaderboard(objectives))


def _scorer(calls: list[str]):
    def evaluate(arch, key: str) -> Candidate:
        calls.append(key)
        return Candidate(key, {"score": float(len(key) % 7), "params": float(key.count("conv"))}, components={"member": 1.5})
    return evaluate


@pytest.mark.parametrize("form", ["sqlite", "journal"])
def test_a_restarted_search_continues_the_stored_study_without_scoring_again(tmp_path, form):
    storage = f"sqlite:///{tmp_path / 'study.db'}" if form == "sqlite" else f"journal:{tmp_path / 'study.log'}"
    first_calls: list[str] = []
    first = _loop(storage)
    first.run_until(6, _scorer(first_calls), max_attempts=100)
    second_calls: list[str] = []
    second = _loop(storage)  # a new process: nothing in memory, the same storage
    assert second.sync() == 6 and [r.arch for r in second.leaderboard.rows] == first_calls  # read back, in scoring order
    assert second.leaderboard.get(first_calls[0]).components == {"member": 1.5}
    second.run_until(10, _scorer(second_calls), max_attempts=100)
    assert len(second_calls) == 4 and not set(second_calls) & set(first_calls)  # only the missing four were scored
    assert len(second.strategy.study.trials) >= 10


def test_two_processes_share_one_study_and_see_each_others_candidates(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    a, b = _loop(storage), _loop(storage)
    a_calls, b_calls = [], []
    a.run_until(4, _scorer(a_calls), max_attempts=100)
    b.run_until(8, _scorer(b_calls), max_attempts=100)
    assert len(b_calls) == 4 and not set(a_calls) & set(b_calls)  # b counted a's four towards its eight
    a.sync()
    assert {r.arch for r in a.leaderboard.rows} == {r.arch for r in b.leaderboard.rows} == set(a_calls) | set(b_calls)


def _stored_trials(path) -> int:
    """Finished trials in an Optuna sqlite file (each holds its candidate; a trial being scored does not yet), read
    without opening it as a storage (which would race the writer's set-up)."""
    try:
        with sqlite3.connect(path) as connection:
            return connection.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_a_kill_at_any_moment_leaves_the_storage_consistent(tmp_path):
    """SIGKILL a process in the middle of a search; the study opens again and continues."""
    storage = f"sqlite:///{tmp_path / 'killed.db'}"
    script = tmp_path / "search_forever.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_study_storage import _loop, _scorer
        calls = []
        score = _scorer(calls)
        def slow(arch, key):
            time.sleep(0.02)
            return score(arch, key)
        _loop({storage!r}).run_until(10_000, slow, max_attempts=10_000)
    """))
    process = subprocess.Popen([sys.executable, str(script)], env=dict(os.environ, HF_HUB_OFFLINE="1"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
        if _stored_trials(tmp_path / "killed.db") >= 8:
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    resumed = _loop(storage)
    killed_rows = resumed.sync()
    assert killed_rows >= 8 and all(r.measures["score"] >= 0 for r in resumed.leaderboard.rows)
    calls: list[str] = []
    resumed.run_until(killed_rows + 3, _scorer(calls), max_attempts=100)
    assert len(calls) == 3


def test_a_storage_that_cannot_be_opened_or_a_study_with_other_objectives_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"search.storage='sqlite:////no/such/dir/x.db' cannot be opened .*allowed: an SQLAlchemy URL"):
        _loop("sqlite:////no/such/dir/x.db")
    with pytest.raises(ValueError, match=r"cannot be opened .*journal:<file>"):
        _loop("journal:/no/such/dir/x.log")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    _loop(storage).run_until(2, _scorer([]), max_attempts=10)
    other = [Objective("score", MAXIMIZE), Objective("latency_ms.cpu", MINIMIZE)]
    with pytest.raises(ValueError, match=r"has objectives \[\('score', 'maximize'\), \('params', 'minimize'\)\]; this run's are "
                                         r"\[\('score', 'maximize'\), \('latency_ms.cpu', 'minimize'\)\]"):
        _loop(storage, other)


def test_the_main_job_continues_a_stored_study_instead_of_scoring_again(compose_cfg, tmp_path, monkeypatch):
    from conftest import QUICK_LATENCY

    from lnas.callbacks import ZeroShotSearch
    from lnas.train import train

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["+experiment=classification", "+debug=fast", f"search.storage={storage}", "train_baseline=false", *QUICK_LATENCY]
    first = train(compose_cfg(*args, f"output_dir={tmp_path / 'first'}"))
    scored: list[str] = []
    original = ZeroShotSearch.score_candidate
    monkeypatch.setattr(ZeroShotSearch, "score_candidate",
                        lambda self, module, arch, *rest: scored.append(arch) or original(self, module, arch, *rest))
    second = train(compose_cfg(*args, f"output_dir={tmp_path / 'second'}"))
    assert scored == [] and second["candidates_scored"] == first["candidates_scored"]
    rows = [(tmp_path / run / "leaderboard.csv").read_text().splitlines() for run in ("first", "second")]
    assert sorted(line.split(",")[0] for line in rows[0][1:]) == sorted(line.split(",")[0] for line in rows[1][1:])
