"""The tutorial notebooks run top to bottom, within their time budget, without a Jupyter kernel.

Each notebook's code cells are executed in order with ``exec`` in one fresh namespace, from a
temporary working directory and with ``HORSE_CACHE`` pointing at a temporary folder, so a notebook
can neither rely on files in the repository's working directory nor leave anything behind.
IPython magics (``%...``, ``!...`` lines and ``%%`` cells) are skipped: the notebooks must not need them.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

# Wall-clock seconds each notebook may take on the shared 2-core CI machine (each takes about 5-15 s today).
BUDGET_S = {
    "01_model_and_packing.ipynb": 60,
    "02_flow_matching_and_sampling.ipynb": 90,
    "03_data_and_training.ipynb": 90,
}
# Notebooks that take over ~60 s; run with `make test-slow` (none at present).
SLOW: set[str] = set()


def code_cells(path: Path) -> list[str]:
    """The source of every code cell in order, with IPython magics removed."""
    nb = json.loads(path.read_text())
    sources = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        text = "".join(cell["source"])
        if text.lstrip().startswith("%%"):
            continue  # a cell magic owns the whole cell
        lines = [line for line in text.splitlines() if not line.lstrip().startswith(("%", "!"))]
        sources.append("\n".join(lines))
    return sources


def run_notebook(path: Path) -> dict:
    """Execute the code cells of ``path`` in a fresh namespace; a failing cell's number is added to the error."""
    namespace = {"__name__": "__main__"}
    for index, source in enumerate(code_cells(path)):
        code = compile(source, f"{path.name}[code cell {index}]", "exec")
        try:
            exec(code, namespace)
        except Exception as err:
            err.add_note(f"in code cell {index} of {path.name}:\n{source}")
            raise
    return namespace


def test_the_notebooks_exist_and_have_budgets():
    names = {p.name for p in NOTEBOOKS}
    assert names == set(BUDGET_S), f"notebooks {sorted(names)} vs budgets {sorted(BUDGET_S)}: keep them in sync"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    assert nb["nbformat"] == 4
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    dirty = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count") is not None]
    assert not dirty, f"{path.name}: clear the outputs of code cells {dirty} before committing"


def test_magics_are_skipped(tmp_path):
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["x = 1"]},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": ["%matplotlib inline\n", "y = 2\n", "!ls\n"]},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": ["%%timeit\n", "raise RuntimeError\n"]},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": ["z = y + 1"]},
    ]}
    path = tmp_path / "t.ipynb"
    path.write_text(json.dumps(nb))
    assert code_cells(path) == ["y = 2", "z = y + 1"]
    namespace = run_notebook(path)
    assert namespace["z"] == 3 and "x" not in namespace


@pytest.mark.parametrize(
    "path", [pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW else p for p in NOTEBOOKS],
    ids=[p.stem for p in NOTEBOOKS])
@pytest.mark.filterwarnings("ignore:FigureCanvasAgg is non-interactive:UserWarning")
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    import matplotlib
    import torch

    matplotlib.use("Agg", force=True)  # no display in CI; plt.show() becomes a no-op
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HORSE_CACHE", str(tmp_path / "horse-cache"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # the notebooks' tempfile.mkdtemp() folders
    threads, environ = torch.get_num_threads(), dict(os.environ)
    torch.set_num_threads(1)  # the CI machine is shared; one thread keeps the timing predictable
    start = time.perf_counter()
    try:
        run_notebook(path)
    finally:
        import matplotlib.pyplot as plt
        plt.close("all")
        torch.set_num_threads(threads)
        os.environ.clear()  # e.g. Lightning's seed_everything exports PL_GLOBAL_SEED
        os.environ.update(environ)
    elapsed = time.perf_counter() - start
    budget = BUDGET_S[path.name]
    assert elapsed < budget, f"{path.name} took {elapsed:.0f} s, over its {budget} s budget"
    assert not any(work.iterdir()), f"{path.name} wrote into the working directory: {sorted(work.iterdir())}"
