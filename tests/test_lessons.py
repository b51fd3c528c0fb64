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

The runs execute two at a time (the fixture `runs`): each kernel is a process of its
own, so on two cores the lessons take about half the time they would one by one.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

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
    """Execute nb in place in a fresh python3 kernel in fast mode, working directory lessons/."""
    env = dict(os.environ, MINIMOLKV_FAST="1",            # the kernel inherits this environment
               PYTHONDONTWRITEBYTECODE="1")              # importing lessons/solutions leaves no __pycache__
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(LESSONS)}})
    client.execute(env=env)                             # raises CellExecutionError at the first failing cell
    return nb


def fast_copy(path):
    """The notebook as committed, plus a last cell asserting the kernel ran in fast mode."""
    nb = nbformat.read(path, as_version=4)              # an in-memory copy; the file is not written
    nb.cells.append(nbformat.v4.new_code_cell(
        "from minimolkv.train import fast_mode\nassert fast_mode(), 'MINIMOLKV_FAST did not reach the kernel'"))
    return nb, False


def planted_copy(path):
    """A wrong answer in every exercise cell, run as far as the last check cell."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if "wrong" in cell.metadata.get("minimolkv", {}):
            cell.source = cell.metadata["minimolkv"]["wrong"]
    checks = [i for i, c in enumerate(nb.cells) if "check" in c.metadata.get("minimolkv", {})]
    nb.cells = nb.cells[: max(checks, default=-1) + 1]  # what follows the last check cannot fail one
    return nb, True


def in_place_cells(nb):
    """Indices of the exercise cells that carry a right answer computed in place."""
    return [i for i, c in enumerate(nb.cells) if "in_place" in c.metadata.get("minimolkv", {})]


def in_place_copy(path):
    """A right answer computed in place in each exercise that has one, run as far as its check."""
    nb = nbformat.read(path, as_version=4)
    checks = []
    for i in in_place_cells(nb):
        nb.cells[i].source = nb.cells[i].metadata["minimolkv"]["in_place"]
        checks.append(next(j for j in range(i + 1, len(nb.cells))
                           if "check" in nb.cells[j].metadata.get("minimolkv", {})))
    nb.cells = nb.cells[: max(checks) + 1]
    return nb, True


IN_PLACE = [p for p in NOTEBOOKS if in_place_cells(nbformat.read(p, as_version=4))]
RUNS = {"fast": (fast_copy, NOTEBOOKS), "planted": (planted_copy, NOTEBOOKS), "in_place": (in_place_copy, IN_PLACE)}


@pytest.fixture(scope="module")
def runs():
    """Every run of every notebook, two at a time (each kernel is a process of its own, so the
    2-core machine runs two notebooks in about the time of one): {(kind, name): (nb, error)},
    and lessons/'s snapshots before and after all of them."""
    def execute(job):
        nb, allow_errors = job
        try:
            return run_notebook(nb, allow_errors), None
        except CellExecutionError as err:
            return nb, str(err)[-2000:]
    jobs = {(kind, path.name): prepare(path) for kind, (prepare, paths) in RUNS.items() for path in paths}
    before = snapshot(LESSONS)
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(jobs, pool.map(execute, jobs.values())))
    return done, before, snapshot(LESSONS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_runs_top_to_bottom_in_fast_mode(path, runs):
    done, before, after = runs
    nb, error = done["fast", path.name]
    assert error is None, f"{path.name} raised in fast mode: {error}"
    errors = [o.get("ename") for c in nb.cells if c.cell_type == "code"
              for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{path.name}: error outputs {errors}"
    assert after == before, ("a lesson changed lessons/ while running "
                             f"(added/changed: {sorted(set(after.items()) - set(before.items()))}); "
                             "write files into tempfile.mkdtemp() instead")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_check_cells_reject_planted_wrong_answers(path, runs):
    nb, error = runs[0]["planted", path.name]
    assert error is None, error
    checks = [c for c in nb.cells if "check" in c.metadata.get("minimolkv", {})]
    planted = [c for c in nbformat.read(path, as_version=4).cells if "wrong" in c.metadata.get("minimolkv", {})]
    assert planted and checks, f"{path.name}: no exercise (a cell with metadata minimolkv.wrong and its check cell)"
    for cell in checks:
        name = cell.metadata["minimolkv"]["check"]
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        assert errors and errors[0].ename == "AssertionError" and f"{name} failed" in errors[0].evalue, (
            f"{path.name}: the check of {name} did not reject the planted wrong answer "
            f"(outputs: {[o.get('text', o.get('evalue', ''))[:200] for o in cell.get('outputs', [])]})")


def test_some_lesson_plants_an_in_place_answer():
    assert IN_PLACE, "no exercise cell carries metadata minimolkv.in_place: the test below would check nothing"


@pytest.mark.parametrize("path", IN_PLACE, ids=lambda p: p.name)
def test_check_cells_pass_right_answers_computed_in_place(path, runs):
    nb, error = runs[0]["in_place", path.name]
    assert error is None, error
    original = nbformat.read(path, as_version=4)
    for i in in_place_cells(original):
        j = next(j for j in range(i + 1, len(original.cells))
                 if "check" in original.cells[j].metadata.get("minimolkv", {}))
        name = original.cells[j].metadata["minimolkv"]["check"]
        text = "".join(o.get("text", "") + o.get("evalue", "") for o in nb.cells[j].get("outputs", []))
        assert f"{name} passed." in text, (f"{path.name}: the check of {name} rejected a right answer that "
                                           f"changes its inputs in place: {text[:300]!r}")
