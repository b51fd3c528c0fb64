"""lessons/regenerate.py: regenerating a notebook whose outputs did not change leaves it
byte-identical (no random cell ids, no timestamps, no widget state, stream outputs merged)."""

import importlib.util
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("regenerate", ROOT / "lessons" / "regenerate.py")
regenerate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(regenerate)

WIDGET = {"application/vnd.jupyter.widget-view+json": {"model_id": "0a1b", "version_major": 2,
                                                       "version_minor": 0}, "text/plain": "IntSlider(value=3)"}


def tiny_notebook(path):
    """A notebook as Jupyter would save it: random ids, a timestamp, widget state, split streams."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"),
                nbformat.v4.new_code_cell("import sys, time\nprint('one', flush=True)\ntime.sleep(0.3)\n"
                                          "print('two', flush=True)"),
                nbformat.v4.new_code_cell("from IPython.display import display\n"
                                          f"display({WIDGET!r}, raw=True)\n6 * 7")]
    nb.cells[1].metadata["execution"] = {"iopub.execute_input": "2026-12-06T04:00:00.000000Z"}
    nbformat.write(nb, path)


def test_writing_a_notebook_twice_gives_identical_bytes(tmp_path):
    path = tmp_path / "tiny.ipynb"
    tiny_notebook(path)
    regenerate.regenerate(path)
    first = path.read_bytes()
    regenerate.regenerate(path)
    assert path.read_bytes() == first
    nb = nbformat.read(path, as_version=4)
    assert [c.id for c in nb.cells] == ["cell-0", "cell-1", "cell-2"]
    assert "widgets" not in nb.metadata and "execution" not in nb.cells[1].metadata
    assert [(o.output_type, o.get("text")) for o in nb.cells[1].outputs] == [("stream", "one\ntwo\n")]
    shown = [o.data for o in nb.cells[2].outputs]
    assert shown == [{"text/plain": "IntSlider(value=3)"}, {"text/plain": "42"}]     # no widget view
    assert [c.execution_count for c in nb.cells[1:]] == [1, 2]


def test_a_missing_notebook_is_one_line_and_exit_code_2(tmp_path, capsys):
    try:
        regenerate.main([str(tmp_path / "nope.ipynb")])
    except SystemExit as exit_:
        assert exit_.code == 2
    else:
        raise AssertionError("no exit")
    err = capsys.readouterr().err
    assert "no notebook at" in err and "Traceback" not in err


def test_a_notebook_that_raises_is_one_line_exit_1_and_left_as_it_was(tmp_path, capsys):
    path = tmp_path / "broken.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("1 / 0")]
    nbformat.write(nb, path)
    before = path.read_bytes()
    assert regenerate.main([str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "raised ZeroDivisionError: division by zero (not written)" in err and "\n" not in err
    assert path.read_bytes() == before


def test_every_committed_lesson_is_in_the_regenerated_form(tmp_path):
    """A lesson saved any other way (Jupyter's random ids, widget state) would change the file
    at its next regeneration though no output changed: every committed one is in normal form."""
    for path in sorted((ROOT / "lessons").glob("*.ipynb")):
        copy = tmp_path / path.name
        copy.write_bytes(path.read_bytes())
        regenerate.regenerate(copy, run=False)
        assert copy.read_bytes() == path.read_bytes(), (
            f"{path.name} is not as lessons/regenerate.py writes it; run: python lessons/regenerate.py {path}")
