"""Small I/O helpers: atomic file writes, the NAS-Bench-201 tables shipped with lnas, and the shared benchmark data."""

from __future__ import annotations

import csv
import gzip
import io
import os
import tempfile
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

DATA_DIR_ENV = "LNAS_DATA_DIR"
CACHE_DIR_ENV = "LNAS_CACHE_DIR"
NB201_TABLES = ("nb201_cifar10.csv", "nb201_latency.csv")


def data_dir() -> Path:
    """Directory of the shared benchmark data that lnas does not ship, such as the CIFAR-10 images
    (``$LNAS_DATA_DIR``, default ``../shared/data`` beside the checkout)."""
    if env := os.environ.get(DATA_DIR_ENV):
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def default_cache_dir() -> Path:
    """Where lnas keeps what it can recompute (latency tables, extracted data sets): ``$LNAS_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/lnas``, else ``~/.cache/lnas``."""
    if env := os.environ.get(CACHE_DIR_ENV):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lnas"


def nb201_table(name: str, directory: str | Path | None = None) -> Path | Traversable:
    """Where the NAS-Bench-201 table ``name`` (one of :data:`NB201_TABLES`) is read from.

    ``directory/<name>`` when ``directory`` is given, else ``$LNAS_DATA_DIR/nb201/<name>`` when ``LNAS_DATA_DIR`` is set,
    else the gzipped copy shipped with lnas (``lnas/tables/nb201/<name>.gz``). Read it with :func:`read_csv_rows`.
    """
    if name not in NB201_TABLES:
        raise ValueError(f"unknown NAS-Bench-201 table {name!r}; allowed: {list(NB201_TABLES)}")
    if directory is not None:
        path = Path(directory) / name
        if not path.is_file():
            raise FileNotFoundError(f"NAS-Bench-201 table {path} not found: the folder given must hold {list(NB201_TABLES)}; "
                                    f"leave it unset to read ${DATA_DIR_ENV}/nb201 or the tables shipped with lnas")
        return path
    if env := os.environ.get(DATA_DIR_ENV):
        path = Path(env) / "nb201" / name
        if not path.is_file():
            raise FileNotFoundError(f"NAS-Bench-201 table {path} not found: ${DATA_DIR_ENV}={env} replaces the tables shipped with lnas; "
                                    f"point it at a folder holding nb201/{name} or unset it")
        return path
    return files("lnas") / "tables" / "nb201" / f"{name}.gz"


def read_csv_rows(source: Path | Traversable) -> list[dict[str, str]]:
    """The rows of the CSV file ``source`` (gzip-compressed when its name ends in ``.gz``), as :class:`csv.DictReader` gives them."""
    data = source.read_bytes()
    if source.name.endswith(".gz"):
        data = gzip.decompress(data)
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the finished file onto ``path`` in one step.

    An interrupted run therefore leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))
