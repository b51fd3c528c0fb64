"""Regenerate the committed outputs of lesson notebooks, reproducibly.

    python lessons/regenerate.py                      # every lessons/*.ipynb
    python lessons/regenerate.py lessons/01_lookup_experts.ipynb
    python lessons/regenerate.py --no-run NOTEBOOK    # only the normal form below, no kernel

Each notebook runs top to bottom in a fresh python3 kernel (nbclient), in normal
mode (MINIMOLKV_FAST removed from the kernel's environment), with lessons/ as the
working directory and no __pycache__ written, and is saved over itself in a
normal form, so that a run whose outputs did not change leaves the file
byte-identical:

* cell ids are the cell's index ("cell-0", "cell-1", ...), not nbformat's random ones;
* no per-cell timestamps (cell metadata "execution"), no saved widget state
  (notebook metadata "widgets", widget-view outputs; a widget's text/plain stays);
* consecutive stream outputs of a cell are merged into one (how a kernel splits a
  cell's printing into messages depends on timing, not on the text);
* execution counts 1..n, as tests/test_lessons.py requires.
"""

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from minimolkv.tools.options import Parser

LESSONS = Path(__file__).resolve().parent
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
CELL_TIMEOUT = 600                  # seconds; stops a cell that hangs instead of waiting for ever


def normal_form(nb):
    """The notebook with everything that changes from run to run without its outputs changing removed."""
    nb.metadata.pop("widgets", None)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.outputs:
            if "data" in out:
                out.data.pop(WIDGET_VIEW, None)
                if not out.data:
                    continue
            if (out.output_type == "stream" and outputs and outputs[-1].output_type == "stream"
                    and outputs[-1].name == out.name):
                outputs[-1].text += out.text
                continue
            outputs.append(out)
        cell.outputs = outputs
    return nb


def execute(nb, folder=LESSONS):
    """Run every cell in a fresh python3 kernel, working directory `folder`; stops at an error."""
    env = {k: v for k, v in os.environ.items() if k != "MINIMOLKV_FAST"}   # normal mode, not fast
    env["PYTHONDONTWRITEBYTECODE"] = "1"                 # importing lessons/solutions leaves no __pycache__
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(folder)}}).execute(env=env)
    return nb


def regenerate(path, run=True):
    """Execute the notebook at `path` (run=False: only put it in normal form) and save it over itself."""
    nb = nbformat.read(path, as_version=4)
    if run:
        execute(nb, Path(path).resolve().parent)
    nbformat.write(normal_form(nb), path)


def main(argv=None):
    p = Parser(prog="python lessons/regenerate.py", description=__doc__.split("\n\n")[0])     # errors: one line
    p.add_argument("notebooks", nargs="*", type=Path, help="default: every lessons/*.ipynb")
    p.add_argument("--no-run", action="store_true",
                   help="do not execute: only rewrite ids, timestamps, widget state and streams")
    args = p.parse_args(argv)
    paths = args.notebooks or sorted(LESSONS.glob("*.ipynb"))
    missing = [str(x) for x in paths if not x.is_file()]
    if missing:
        p.error(f"no notebook at {missing[0]}; give paths of .ipynb files")
    for path in paths:
        print(f"{'normalising' if args.no_run else 'running'} {path} ...", flush=True)
        try:
            regenerate(path, run=not args.no_run)
        except CellExecutionError as err:                   # the file is left as it was
            print(f"{p.prog}: error: {path} raised {err.ename}: {err.evalue} (not written); run it in "
                  "Jupyter to see where", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
