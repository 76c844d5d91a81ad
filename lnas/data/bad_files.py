"""What a data module does with a bad file or entry: stop with an error naming it (``on_bad="error"``), or skip and
count it (``on_bad="skip"``)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("lnas.data")
ON_BAD = ("error", "skip")


class BadDataError(ValueError):
    """A data file or entry that cannot be used: names the file, the entry and what is wrong."""


class BadFiles:
    """Applies the ``on_bad`` policy and keeps what was skipped, per split."""

    def __init__(self, on_bad: str = "error") -> None:
        if on_bad not in ON_BAD:
            raise ValueError(f"data.on_bad must be one of {list(ON_BAD)}, got {on_bad!r}")
        self.on_bad = on_bad
        self.skipped: dict[str, list[str]] = {}

    def report(self, split: str, path: str | Path, problem: str, entry: str = "") -> None:
        """Raise :class:`BadDataError`, or (``skip``) record the problem."""
        where = f"{path}" + (f" ({entry})" if entry else "")
        if self.on_bad == "error":
            raise BadDataError(f"bad {split} data: {where}: {problem}. Fix or remove it, or set data.on_bad=skip to skip bad entries")
        self.skipped.setdefault(split, []).append(f"{where}: {problem}")

    def summarise(self, split: str) -> int:
        """Log how many entries of ``split`` were skipped (with the first few reasons); returns the count."""
        skipped = self.skipped.get(split, [])
        if skipped:
            log.warning("skipped %d bad %s entries (data.on_bad=skip), e.g. %s", len(skipped), split, "; ".join(skipped[:3]))
        return len(skipped)
