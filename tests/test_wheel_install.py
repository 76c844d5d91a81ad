"""A wheel of lnas, installed (not editable) into a fresh virtual environment, finds its configs and its NAS-Bench-201
tables with no checkout around: run from an empty folder, without ``LNAS_DATA_DIR``.

The new environment takes lnas's dependencies (torch, Lightning, ...) from the running interpreter's site folders
through a ``.pth`` file, so nothing but the wheel is installed.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from lnas.io import read_csv_rows

REPO = Path(__file__).resolve().parents[1]
NOT_SOURCE = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "outputs", "multirun", "lightning_logs",
                                    ".pytest_cache", ".ruff_cache", ".venv")
CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"  # row 1 of the tables
LOOKUP = f"""import json, lnas
from lnas.hardware import Nb201LatencyTable
from lnas.io import nb201_table
print(json.dumps({{"lnas": lnas.__file__, "table": str(nb201_table("nb201_latency.csv")),
                  "edgegpu_ms": Nb201LatencyTable("edgegpu").latency_ms("{CELL}")}}))"""


def _dependency_dirs() -> list[str]:
    """The running interpreter's import folders outside the standard library and this checkout.

    All of them (site folders inside the standard library's folder too), not only its own site-packages:
    that may hold just a ``.pth`` naming another environment's, and a
    ``.pth`` inside a folder that a ``.pth`` lists is not read.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    dirs = [Path(p).resolve() for p in sys.path if p and Path(p).is_dir()]
    def standard(d: Path) -> bool:  # the standard library, not a site folder inside it (a non-venv Python keeps it there)
        return d.is_relative_to(stdlib) and not {"site-packages", "dist-packages"} & set(d.parts)

    return [str(d) for d in dict.fromkeys(dirs) if not d.is_relative_to(REPO) and not standard(d)]


def _run(command: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_the_wheel_in_a_fresh_environment_finds_its_configs_and_nb201_tables(tmp_path):
    source = shutil.copytree(REPO, tmp_path / "source", ignore=NOT_SOURCE)  # a clean tree: no build/ left over in the checkout
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "wheels", source])
    wheel = next((tmp_path / "wheels").glob("lnas-*.whl"))

    _run([sys.executable, "-m", "venv", tmp_path / "venv"])
    python = tmp_path / "venv" / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "lnas_test_dependencies.pth").write_text("\n".join(_dependency_dirs()) + "\n")
    _run([python, "-m", "pip", "install", "--no-deps", "-q", wheel])

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("LNAS_DATA_DIR", "PYTHONPATH")} | {"HF_HUB_OFFLINE": "1"}
    found = json.loads(_run([python, "-c", LOOKUP], cwd=work, env=env).stdout.splitlines()[-1])
    packaged = read_csv_rows(REPO / "lnas" / "tables" / "nb201" / "nb201_latency.csv.gz")
    assert Path(found["lnas"]).is_relative_to(site) and Path(found["table"]).is_relative_to(site)  # not the checkout's lnas
    assert found["edgegpu_ms"] == float(packaged[1]["edgegpu_ms"])

    overrides = ["+experiment=detection", "+debug=fast", "search.num_candidates=2", "hardware.target_speedup=null"]
    _run([python, "-m", "lnas.train", *overrides, f"hydra.run.dir={tmp_path / 'run'}"], cwd=work, env=env)
    assert (tmp_path / "run" / "report.md").stat().st_size > 0
