"""Zip archives of data sets, extracted once into the cache (``$LNAS_CACHE_DIR/datasets``) and then read as folders."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from lnas.io import default_cache_dir


def extracted(archive: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The folder holding ``archive``'s files, extracting it on first use.

    The folder's name carries the archive's size and modification time, so a changed archive is extracted anew; the
    extraction goes to a temporary folder that is renamed when complete, so an interrupted one is never used.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise FileNotFoundError(f"data archive {archive} not found")
    stat = archive.stat()
    digest = hashlib.sha1(f"{archive.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "datasets"
    target = root / f"{archive.stem}-{digest}"
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{archive.stem}-"))
    try:
        with zipfile.ZipFile(archive) as zipped:
            for name in zipped.namelist():
                if Path(name).is_absolute() or ".." in Path(name).parts:
                    raise ValueError(f"{archive}: member {name!r} would be written outside the extraction folder")
            zipped.extractall(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished the same extraction first
            if not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
