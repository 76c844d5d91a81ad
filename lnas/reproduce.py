"""Recipe runner: ``python -m lnas.reproduce <name> [hydra overrides]``.

Runs ``recipes/<name>.yaml`` (shipped as package data ``lnas.recipes``): calls the recipe's ``run`` target with the
config, writes ``results.json`` into the Hydra run dir (``hydra.run.dir=`` sets it), prints a markdown table of
measured vs expected values last, and exits 1 when any value misses its tolerance.

Each entry of a recipe's ``expected`` map names a dotted key of the results and gives either
``value`` + ``tolerance`` (|measured - value| <= tolerance) or ``min`` and/or ``max`` bounds, and its ``source``.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lnas.io import atomic_write_text

RECIPES_PACKAGE = "lnas.recipes"


@dataclass
class Check:
    """One expected value and how the measured one compares."""

    key: str
    measured: float | None
    expected: str
    source: str
    passed: bool


def lookup(results: dict, dotted: str) -> float | None:
    """``results["a"]["b"]`` for ``"a.b"``; None when absent."""
    node = results
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) else None


def check_expected(results: dict, expected: dict) -> list[Check]:
    """Compare every expected entry with the measured results."""
    checks = []
    for key, spec in expected.items():
        measured = lookup(results, key)
        ok = measured is not None and math.isfinite(measured)
        if "value" in spec:
            text = f"{spec['value']} ± {spec['tolerance']}"
            ok = ok and abs(measured - spec["value"]) <= spec["tolerance"]
        else:
            bounds = []
            if "min" in spec:
                bounds.append(f">= {spec['min']}")
                ok = ok and measured >= spec["min"]
            if "max" in spec:
                bounds.append(f"<= {spec['max']}")
                ok = ok and measured <= spec["max"]
            text = " and ".join(bounds)
        checks.append(Check(key, measured, text, str(spec.get("source", "")), bool(ok)))
    return checks


def render_table(checks: list[Check]) -> str:
    lines = ["| value | measured | expected | source | ok |", "|---|---|---|---|---|"]
    for c in checks:
        measured = "missing" if c.measured is None else f"{c.measured:.4g}"
        lines.append(f"| {c.key} | {measured} | {c.expected} | {c.source} | {'yes' if c.passed else 'MISS'} |")
    return "\n".join(lines)


def run_recipe(cfg: DictConfig, out_dir: Path) -> int:
    """Run one recipe config; write ``results.json``; print the table; return the exit status (0 = all expected values met)."""
    from hydra.utils import call

    results = call(cfg.run, cfg=cfg, out_dir=out_dir, _recursive_=False)
    expected = OmegaConf.to_container(cfg.get("expected", {}), resolve=True)
    checks = check_expected(results, expected)
    record = {"recipe": cfg.get("name"), "results": results,
              "checks": [c.__dict__ for c in checks], "passed": all(c.passed for c in checks)}
    atomic_write_text(out_dir / "results.json", json.dumps(record, indent=2, default=str))
    print(f"\nresults: {out_dir / 'results.json'}\n")
    print(render_table(checks))
    return 0 if record["passed"] else 1


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith(("-", "+")) or "=" in sys.argv[1]:
        from importlib.resources import files

        names = sorted(p.name[:-5] for p in files(RECIPES_PACKAGE).iterdir() if p.name.endswith(".yaml"))
        sys.exit(f"usage: python -m lnas.reproduce <recipe> [hydra overrides]; recipes: {names}")
    name = sys.argv.pop(1)

    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(config_path=f"pkg://{RECIPES_PACKAGE}", config_name=name, version_base="1.3")
    def _run(cfg: DictConfig) -> None:
        sys.exit(run_recipe(cfg, Path(HydraConfig.get().runtime.output_dir)))

    _run()


if __name__ == "__main__":
    main()
