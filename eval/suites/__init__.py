"""Evaluation suites: one module per suite here, plus ``configs/eval/suite/<name>.yaml`` whose ``name`` is the
module's name. Adding a suite is that module and that file; ``python eval.py suite=<name> checkpoint=DIR`` runs it.

A suite module defines::

    def run(cfg, context: SuiteContext) -> dict

``cfg`` is the composed config (``cfg.suite``: the suite's YAML, ``cfg.size``: the size group). It returns::

    {"settings": {...},                          # what was run: sampler, steps, clip count, data... (stated)
     "groups": {GROUP: {"n": int, "scores": {SCORE: {"value", "ci": [lo, hi], "n", "kind", "keys",
                                                    "higher_is_better", "description",
                                                    "chance", "ceiling", "ceiling_ci"}}}},
     "clips": [{"id", "group", "prompt", "video": path relative to the output folder, "reference": path or None,
                "scores": {per-clip key: value or None}, "detected": {...}}],
     "timings": {...}}

``kind``/``keys`` are those of ``horse.metrics.stats.ScoreSpec``: the comparison of two runs recomputes each score
from the clips' per-clip values. ``chance`` / ``ceiling`` may be None where a suite has none. Optionally a suite
defines ``plots(results) -> list[(title, png_bytes)]`` for its report.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType


@dataclass
class SuiteContext:
    checkpoint: Path  # the checkpoint folder under evaluation
    out_dir: Path  # where the suite writes its clips (results.json and the report go beside them)
    device: str = "cpu"
    progress: bool = True  # tqdm bars during generation and scoring


def available_suites() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load_suite(name: str) -> ModuleType:
    """The suite module ``eval.suites.<name>`` (ValueError naming the known suites when absent or malformed)."""
    if name not in available_suites():
        raise ValueError(f"unknown eval suite {name!r}; known suites: {available_suites()} "
                         f"(a suite is a module in eval/suites/ plus configs/eval/suite/<name>.yaml)")
    module = importlib.import_module(f"{__name__}.{name}")
    if not callable(getattr(module, "run", None)):
        raise ValueError(f"eval suite module {module.__name__} has no run(cfg, context) function")
    return module
