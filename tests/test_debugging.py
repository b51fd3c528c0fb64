"""docs/debugging.md's walkthrough, driven through pdb with its commands on stdin: where
each stop lands and what each printed shape is. The document and this test share the
commands (WALK), so they cannot drift apart."""

import os
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)

# (command, what the stop or the printed value must show): the table of docs/debugging.md.
WALK = [
    ("s", r"molkv\.py\(\d+\)forward\(\)\n-> def forward\("),
    ("n", r"-> if check:"),
    ("n", r"-> validate\.block_input\("),
    ("n", r"-> if variant == \"gated\":"),
    ("n", r"-> T = h\.shape\[1\]"),
    ("n", r"-> k, v, a, c_hidden = experts_forward\(params, e\)"),
    ("n", r"-> q, c_query = ops\.linear_forward\(h, params\[\"query\"\]\)"),
    ("p e.shape, a.shape, k.shape, v.shape", r"\(\(1, (?P<T>\d+), 64\), \(1, (?P=T), 4, 128\), \(1, (?P=T), 4, 16\), "
                                             r"\(1, (?P=T), 4, 64\)\)"),
    ("n", r"-> slopes = ops\.softplus"),
    ("n", r"-> offset, distance = ops\.score_offset\("),
    ("n", r"-> y, c_attend = attend_forward\(q, k, v, offset\)"),
    ('p ops.softplus(params["recency"])', r"array\(\[0\.\d+ *, *0\.\d+ *, *0\.\d+ *, *0\.\d+ *\]"),
    ("p offset.shape, distance.shape", r"\(\((?P<T>\d+), (?P=T), 4\), \((?P=T), (?P=T)\)\)"),
    ("s", r"molkv\.py\(\d+\)attend_forward\(\)\n-> def attend_forward\("),
    *[("n", None)] * 10,
    ("n", r"-> y = P_flat @ v_flat"),
    ("p S.shape, P_flat[0, -1].reshape(-1, 4).sum(-1)", r"\(\(1, (?P<T>\d+), \d+\), array\(\["),
    ("p S[0, 0, 4:8], P_flat[0, 0, 4:8]", r"\(array\(\[-inf, -inf, -inf, -inf\].*\), array\(\[0\., 0\., 0\., 0\.\]"),
    ("b attend_backward", r"Breakpoint 1 at .*molkv\.py:\d+"),
    ("c", r"molkv\.py\(\d+\)attend_backward\(\)"),
    *[("n", None)] * 6,
    ("n", r"-> dqs = dS @ k_flat"),
    ("p dS.shape", r"\(1, (?P<T>\d+), \d+\)"),
    ("c", r"gradients: \{'recency': \(4,\), 'query': \(64, 16\)"),
]


def pdb_session(script, args, commands, timeout=600):
    """Run `script` with `commands` on stdin; the output cut at each (Pdb) prompt: one answer per command."""
    env = {**os.environ, "PYTHONPATH": os.path.abspath(ROOT)}
    out = subprocess.run([sys.executable, script, *args], input="\n".join(commands) + "\n", text=True,
                         capture_output=True, cwd=ROOT, env=env, timeout=timeout).stdout
    return out.split("(Pdb) ")


def test_the_walkthrough_of_docs_debugging_md():
    answers = pdb_session(os.path.join("examples", "step_through_molkv.py"), ["--pdb", "--steps", "3"],
                          [command for command, _ in WALK])
    assert "-> y, cache = molkv.forward(" in answers[0]
    assert len(answers) == len(WALK) + 1, f"pdb answered {len(answers) - 1} of {len(WALK)} commands"
    T = None
    for (command, expect), answer in zip(WALK, answers[1:]):
        assert "Error" not in answer and "***" not in answer, f"{command!r} gave {answer!r}"
        if expect is not None:
            found = re.search(expect, answer)
            assert found, f"{command!r}: expected {expect!r}, got {answer!r}"
            if "T" in found.groupdict() and command.startswith("p ") and "S.shape" not in command:
                T = T or int(found["T"])
                assert int(found["T"]) == T
    assert [command for command, _ in WALK] == documented_commands()


def documented_commands():
    """The commands of docs/debugging.md's walkthrough block, `n ×6` spelled out six times."""
    with open(os.path.join(ROOT, "docs", "debugging.md"), encoding="utf-8") as f:
        doc = f.read()
    block = doc.split("<!-- walkthrough -->")[1].split("<!-- /walkthrough -->")[0].strip().strip("`").strip()
    commands = []
    for line in block.splitlines():
        command = re.split(r"\s{2,}#", line)[0].strip()
        repeat = re.fullmatch(r"(.+?) ×(\d+)", command)
        commands += [repeat[1]] * int(repeat[2]) if repeat else [command]
    return commands


STEP = """
import pdb
import numpy as np
from minimolkv import model, train
config = model.Config(vocab_size=50, context_len=8, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                      kind="molkv", variant="recency", n_experts=2, d_expert=8, d_key=4, window=None)
run = train.new_run(config, train.Settings(steps=2, batch_size=2, seed=0), train.DataSpec("synthetic", vocab_size=50),
                    train.DataSpec("synthetic", vocab_size=50).load())
layers = model.layer_params(run.params, config.n_layers)
ids = np.random.default_rng(0).integers(0, 50, (2, 8))
pdb.Pdb(skip=["numpy.*", "minimolkv.validate*"]).set_trace()
loss, _, cache = model.forward(run.params, config, ids[:, :-1], ids[:, 1:], layers=layers, check=False)
"""


def test_s_from_model_forward_stops_first_in_the_math(tmp_path):
    """With the documented skip list, `s` from model.forward (as a training step calls it)
    never stops in validation, and its first stop outside model.py is the math."""
    script = tmp_path / "step.py"
    script.write_text(STEP)
    answers = pdb_session(str(script), [], ["s"] * 40 + ["c"])
    stops = [re.search(r"> (\S+)\(\d+\)(\w+)\(\)", a) for a in answers[1:]]
    files = [os.path.basename(m[1]) for m in stops if m]
    assert files[0] == "model.py" and not any(f.startswith("validate") for f in files)
    first = next(i for i, f in enumerate(files) if f != "model.py")
    assert files[first] == "ops.py" and stops[first][2] == "embedding_forward", files[:first + 1]
