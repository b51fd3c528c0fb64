"""The command line: gradcheck report, help, bad arguments."""

import subprocess
import sys

from minimolkv.__main__ import main


def test_gradcheck_command_prints_a_passing_table(capsys):
    assert main(["gradcheck", "--only", "ops", "mole"]) == 0
    out = capsys.readouterr().out
    assert "mole.router" in out and "max rel err" in out
    assert "0 failed" in out


def test_unknown_check_and_bad_argument_exit_2(capsys):
    assert main(["gradcheck", "--only", "nope"]) == 2
    assert "unknown check 'nope'" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "minimolkv", "gradcheck", "--seed", "x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_help_lists_the_commands():
    proc = subprocess.run([sys.executable, "-m", "minimolkv", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "gradcheck" in proc.stdout
