"""Small I/O helpers: atomic file writes and the location of the shared benchmark data."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

DATA_DIR_ENV = "LNAS_DATA_DIR"
CACHE_DIR_ENV = "LNAS_CACHE_DIR"


def data_dir() -> Path:
    """Directory of the shared benchmark data (``$LNAS_DATA_DIR``, default ``../shared/data`` beside the checkout)."""
    if env := os.environ.get(DATA_DIR_ENV):
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def default_cache_dir() -> Path:
    """Where lnas keeps what it can recompute (latency tables, extracted data sets): ``$LNAS_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/lnas``, else ``~/.cache/lnas``."""
    if env := os.environ.get(CACHE_DIR_ENV):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lnas"


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
