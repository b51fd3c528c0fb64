"""Every lesson notebook runs top to bottom, its committed copy is a clean run, and
its exercise checks reject wrong answers.

Three tests per notebook in lessons/ (found by glob, so a new lesson is covered
as soon as it exists):

* the committed file: kernelspec "python3", code cells executed 1..n in
  order, no error outputs, no per-cell timestamps, one BLAS thread set before
  numpy loads -- it was saved from one clean top-to-bottom run;
* a fresh run with nbclient in fast mode (MINIMOLKV_FAST=1): no cell raises.
  It executes an in-memory copy (the .ipynb is never written) with the
  working directory lessons/, and lessons/ must look the same afterwards:
  a lesson that writes files writes them into a temporary folder;
* a run with a wrong answer planted in every exercise (each exercise cell's
  metadata["minimolkv"]["wrong"]), top to bottom: every check cell
  (metadata["minimolkv"]["check"] = "Exercise N") must fail with "Exercise N failed";
* where an exercise cell carries metadata["minimolkv"]["in_place"], a right answer
  that overwrites the arrays it is given: planted, the notebook run up to its check
  cell, that check must print "Exercise N passed." (a check computes its references
  before calling the student's function, and passes it copies).
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
NOTEBOOKS = sorted(LESSONS.glob("*.ipynb"))
CELL_TIMEOUT = 120          # seconds per cell; a fast-mode lesson takes ~10-20 s in all


def test_there_are_lessons():
    assert NOTEBOOKS, f"no notebooks in {LESSONS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_copy_is_one_clean_run(path):
    nb = nbformat.read(path, as_version=4)
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    assert kernel == "python3", f"{path.name}: kernelspec name is {kernel!r}, must be 'python3'"
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{path.name}: execution counts {counts} are not 1..{len(code)}; regenerate it with one "
        f"clean run (see lessons/README.md)")
    errors = [(counts[i], o.get("ename"), o.get("evalue"))
              for i, c in enumerate(code) for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{path.name}: committed with error outputs (count, name, message): {errors}"
    timed = [counts[i] for i, c in enumerate(code) if "execution" in c.metadata]
    assert not timed, f"{path.name}: cells {timed} carry timestamps (regenerate it: python lessons/regenerate.py)"
    first = code[0].source
    assert 'OPENBLAS_NUM_THREADS' in first and first.index("OPENBLAS_NUM_THREADS") < first.index("import numpy"), \
        f"{path.name}: the first code cell must set OPENBLAS_NUM_THREADS before numpy is imported"


def snapshot(folder):
    """{relative path: (size, mtime)} of everything under folder."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


def run_notebook(nb, allow_errors=False):
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(LESSONS)}})
    client.execute()                                    # raises CellExecutionError at the first failing cell
    return nb


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_runs_top_to_bottom_in_fast_mode(path, monkeypatch):
    monkeypatch.setenv("MINIMOLKV_FAST", "1")           # the kernel inherits this environment
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")  # importing lessons/solutions leaves no __pycache__
    nb = nbformat.read(path, as_version=4)              # an in-memory copy; the file is not written
    nb.cells.append(nbformat.v4.new_code_cell(          # the kernel really ran in fast mode
        "from minimolkv.train import fast_mode\nassert fast_mode(), 'MINIMOLKV_FAST did not reach the kernel'"))
    before = snapshot(LESSONS)
    run_notebook(nb)
    errors = [o.get("ename") for c in nb.cells if c.cell_type == "code"
              for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{path.name}: error outputs {errors}"
    after = snapshot(LESSONS)
    assert after == before, (f"{path.name} changed lessons/ while running "
                             f"(added/changed: {sorted(set(after.items()) - set(before.items()))}); "
                             "write files into tempfile.mkdtemp() instead")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_check_cells_reject_planted_wrong_answers(path, monkeypatch):
    monkeypatch.setenv("MINIMOLKV_FAST", "1")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    nb = nbformat.read(path, as_version=4)
    planted = [c for c in nb.cells if "wrong" in c.metadata.get("minimolkv", {})]
    checks = [c for c in nb.cells if "check" in c.metadata.get("minimolkv", {})]
    assert planted and checks, f"{path.name}: no exercise (a cell with metadata minimolkv.wrong and its check cell)"
    for cell in planted:
        cell.source = cell.metadata["minimolkv"]["wrong"]
    last = max(i for i, c in enumerate(nb.cells) if "check" in c.metadata.get("minimolkv", {}))
    nb.cells = nb.cells[: last + 1]                      # what follows the last check cannot fail one
    run_notebook(nb, allow_errors=True)
    for cell in checks:
        name = cell.metadata["minimolkv"]["check"]
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        assert errors and errors[0].ename == "AssertionError" and f"{name} failed" in errors[0].evalue, (
            f"{path.name}: the check of {name} did not reject the planted wrong answer "
            f"(outputs: {[o.get('text', o.get('evalue', ''))[:200] for o in cell.get('outputs', [])]})")


def in_place_cells(nb):
    """Indices of the exercise cells that carry a right answer computed in place."""
    return [i for i, c in enumerate(nb.cells) if "in_place" in c.metadata.get("minimolkv", {})]


IN_PLACE = [p for p in NOTEBOOKS if in_place_cells(nbformat.read(p, as_version=4))]


def test_some_lesson_plants_an_in_place_answer():
    assert IN_PLACE, "no exercise cell carries metadata minimolkv.in_place: the test below would check nothing"


@pytest.mark.parametrize("path", IN_PLACE, ids=lambda p: p.name)
def test_check_cells_pass_right_answers_computed_in_place(path, monkeypatch):
    monkeypatch.setenv("MINIMOLKV_FAST", "1")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    nb = nbformat.read(path, as_version=4)
    planted = in_place_cells(nb)
    checks = {}                                          # {index of the check cell: "Exercise N"}
    for i in planted:
        nb.cells[i].source = nb.cells[i].metadata["minimolkv"]["in_place"]
        j = next(j for j in range(i + 1, len(nb.cells)) if "check" in nb.cells[j].metadata.get("minimolkv", {}))
        checks[j] = nb.cells[j].metadata["minimolkv"]["check"]
    nb.cells = nb.cells[: max(checks) + 1]               # run only as far as the last of those checks
    run_notebook(nb, allow_errors=True)
    for j, name in checks.items():
        text = "".join(o.get("text", "") + o.get("evalue", "") for o in nb.cells[j].get("outputs", []))
        assert f"{name} passed." in text, (f"{path.name}: the check of {name} rejected a right answer that "
                                           f"changes its inputs in place: {text[:300]!r}")
