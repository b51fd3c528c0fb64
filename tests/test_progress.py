"""The main command's progress (minimolkv/tools/progress.py): one line rewritten in place in a
terminal, each validation's line kept; anywhere else every line as it comes."""

import io
import sys

from minimolkv.tools.progress import Progress
from minimolkv.tools.cli import main

TINY = ["--data", "synthetic", "--vocab", "64", "--context-len", "16", "--d-model", "16", "--n-layers", "1",
        "--n-heads", "2", "--d-ff", "32", "--d-expert", "16", "--d-key", "4"]


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def screen(text):
    """What a terminal shows after `text`: "\\r" moves back to the start of the line."""
    lines = []
    for row in text.split("\n"):
        shown = ""
        for piece in row.split("\r"):
            shown = piece + shown[len(piece):]            # overwrite from the start of the line
        lines.append(shown.rstrip())
    return lines


def test_not_a_terminal_prints_every_line_as_it_comes():
    out = io.StringIO()
    p = Progress(out)
    p.update("step 10 moving")
    p.keep("step 12 kept")
    p.update("step 20 moving")
    p.close()                                             # nothing to end: no moving line
    assert not p.tty and out.getvalue() == "step 10 moving\nstep 12 kept\nstep 20 moving\n"


def test_a_terminal_rewrites_one_line_and_keeps_the_validations():
    out = FakeTerminal()
    p = Progress(out)
    p.update("step 10 | a longer moving line")
    p.update("step 11 | shorter")
    assert "\n" not in out.getvalue()                     # still one line on screen
    assert screen(out.getvalue()) == ["step 11 | shorter"]          # the longer one padded away
    p.keep("step 12 | val 3.1")
    p.update("step 20 | moving")
    p.close()
    assert screen(out.getvalue()) == ["step 12 | val 3.1", "step 20 | moving", ""]


def test_train_in_a_terminal_shows_one_moving_line_and_one_line_per_validation(tmp_path, monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(["train", *TINY, "--steps", "24", "--eval-every", "12", "--out", str(tmp_path / "run")]) == 0
    raw = terminal.getvalue()
    steps = [line for line in screen(raw) if line.startswith("step")]
    assert [line[:13] for line in steps] == ["step    12/24", "step    24/24"]      # the validations
    assert all("| val " in line and "val   -" not in line for line in steps)      # with their val loss
    assert "\rstep    10/24" in raw and "\rstep    20/24" in raw       # moving lines, rewritten
    assert "step    10/24" not in "".join(screen(raw))


def test_train_into_a_log_keeps_one_line_per_10_steps(tmp_path, capsys):
    assert main(["train", *TINY, "--steps", "24", "--eval-every", "12", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "\r" not in out
    steps = [line[:13] for line in out.splitlines() if line.startswith("step")]
    assert steps == ["step    10/24", "step    12/24", "step    20/24", "step    24/24"]
