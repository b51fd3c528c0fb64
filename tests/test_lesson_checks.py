"""The exercise checks are fair to the student (lessons/solutions/__init__.py, lessons 00, 01, 03).

Each wrong answer a student was seen to write is planted in its exercise cell, in a kernel
that ran only the cells the check needs (fast), and the check cell must reject it with a
message that says what is wrong: "Exercise N failed: ..." naming the argument written in
place, the shape, the dtype or the itemsize, and an exception as "<Type>: <message>" with the
line that raised it -- never a bare traceback. A right answer written by hand passes.
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

LESSONS = Path(__file__).resolve().parent.parent / "lessons"

GELU_IN_PLACE = '''
def my_gelu_backward(dout, cache):
    x, th = cache
    np.multiply(th, th, out=th)                              # th^2, in place: saves an array
    du_dx = ops.GELU_C * (1.0 + 3.0 * ops.GELU_A * x * x)
    return dout * 0.5 * (1.0 + np.tanh(ops.GELU_C * (x + ops.GELU_A * x ** 3)) + x * (1.0 - th) * du_dx)
'''
FFN_HEAD = '''
def ffn_backward(df, cache):
    c_up, c_gelu, c_down = cache
'''
FFN_TRANSPOSED_DW = FFN_HEAD + '''
    da, dW = ops.linear_backward(df, c_down)
    dz = ops.gelu_backward(da, c_gelu)
    dh, dU = ops.linear_backward(dz, c_up)
    return dh, dU, dW.T                                      # transposed
'''
FFN_GELU_FIRST = FFN_HEAD + '''
    dz = ops.gelu_backward(df, c_gelu)                       # GELU's backward before W's
    da, dW = ops.linear_backward(dz, c_down)
    dh, dU = ops.linear_backward(da, c_up)
    return dh, dU, dW
'''
FFN_IN_PLACE = FFN_HEAD + '''
    da, dW = ops.linear_backward(df, c_down)
    dz = ops.gelu_backward(da, c_gelu)
    dh, dU = ops.linear_backward(dz, c_up)
    df *= 0.0                                                # "free" the upstream gradient
    return dh, dU, dW
'''
FFN_RIGHT = FFN_HEAD + '''
    da, dW = ops.linear_backward(df, c_down)
    dz = ops.gelu_backward(da, c_gelu)
    dh, dU = ops.linear_backward(dz, c_up)
    return dh, dU, dW
'''
MOE_FLOAT32 = '''
def mole_bytes_per_token(n_layers, n_experts, d_model, itemsize):
    return n_layers * n_experts * d_model * itemsize

def moe_bytes_per_token(n_layers, top_k, d_model, d_expert, itemsize):
    return n_layers * top_k * 2 * d_model * d_expert * 4     # float32, whatever itemsize says
'''
LOSSES_HEAD = '''
def token_losses(logits, targets):
'''
LOSSES_FLOAT32 = LOSSES_HEAD + '''
    z = logits.astype(np.float32)
    m = z.max(axis=-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(z - m).sum(axis=-1))
    return lse - np.take_along_axis(z, targets[..., None], axis=-1)[..., 0]
'''
LOSSES_IN_PLACE = LOSSES_HEAD + '''
    logits -= logits.max(axis=-1, keepdims=True)             # shift in place: no overflow
    z = logits.astype(np.float64)
    lse = np.log(np.exp(z).sum(axis=-1))
    return lse - np.take_along_axis(z, targets[..., None], axis=-1)[..., 0]
'''
LOSSES_RIGHT = LOSSES_HEAD + '''
    z = logits.astype(np.float64)
    m = z.max(axis=-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(z - m).sum(axis=-1))
    return lse - np.take_along_axis(z, targets[..., None], axis=-1)[..., 0]
'''
# A cell standing in for lesson 03's training: the check of exercise 2 needs one dense run's parameters.
RUNS_03 = ('runs = {"dense": train.new_run(configs["dense"], train.Settings(steps=1), '
           'data.DataSpec("shakespeare"), dataset)}')

# notebook -> (setup: the source of each code cell run first, or a predicate picking the notebook's
# own cells), exercise -> [(planted source, what the check's message must hold -- a string or a tuple
# of them -- or None: the check passes it)]
CASES = {
    "00_manual_backprop.ipynb": ("all before", {
        "Exercise 1": [(GELU_IN_PLACE, "Exercise 1 failed: your my_gelu_backward changed its argument cache.th "
                                       "in place")],
        "Exercise 3": [(FFN_TRANSPOSED_DW, "Exercise 3 failed: dW has shape (4, 6), expected (6, 4), the shape of W"),
                       (FFN_GELU_FIRST, ("Exercise 3 failed: ValueError: operands could not be broadcast together",
                                         "(at `dz = ops.gelu_backward(df, c_gelu)` in your ffn_backward)")),
                       (FFN_IN_PLACE, "Exercise 3 failed: your ffn_backward changed its argument df in place"),
                       (FFN_RIGHT, None)],
    }),
    "01_lookup_experts.ipynb": ("all before", {
        "Exercise 1": [(MOE_FLOAT32, "itemsize=2) = 262,144, not the 131,072 bytes of k experts' weights per "
                                     "token that model.param_shapes lists; that is 2x too many: use `itemsize` "
                                     "bytes per number, not a fixed 4")],
    }),
    "03_train_tiny_model.ipynb": (("import", "base = model.Config(", RUNS_03), {
        "Exercise 2": [(LOSSES_FLOAT32, "Exercise 2 failed: your losses are float32, which keeps about 6 digits; "
                                        "compute them in float64"),
                       (LOSSES_IN_PLACE, "Exercise 2 failed: your token_losses changed its argument logits in place"),
                       (LOSSES_RIGHT, None)],
    }),
}


def run_cell(client, source, index):
    cell = nbformat.v4.new_code_cell(source)
    client.execute_cell(cell, index)
    return cell


def message(cell):
    errors = [o for o in cell.outputs if o.output_type == "error"]
    if errors:
        return f"{errors[0].ename}: {errors[0].evalue}"
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.mark.parametrize("name", CASES)
def test_checks_name_what_is_wrong(name, monkeypatch):
    monkeypatch.setenv("MINIMOLKV_FAST", "1")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    nb = nbformat.read(LESSONS / name, as_version=4)
    setup, exercises = CASES[name]
    stubs = {i for i, c in enumerate(nb.cells) if "wrong" in c.metadata.get("minimolkv", {})}
    checks = {c.metadata["minimolkv"]["check"]: i for i, c in enumerate(nb.cells)
              if "check" in c.metadata.get("minimolkv", {})}
    client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(LESSONS)}})
    with client.setup_kernel():
        if setup != "all before":                                     # the cells the checks need
            for piece in setup:
                found = [c.source for c in nb.cells if c.cell_type == "code" and piece in c.source]
                source = found[0] if found else piece
                assert "error" not in message(run_cell(client, source, 0)).lower()
        done = 0
        for exercise, plants in exercises.items():
            check = checks[exercise]
            if setup == "all before":                                 # every cell up to the stub
                for i in range(done, check - 1):
                    if nb.cells[i].cell_type == "code" and i not in stubs:
                        client.execute_cell(nb.cells[i], i)
                done = check + 1
            assert check - 1 in stubs, f"{name}: the cell before {exercise}'s check is not its stub"
            stub = nb.cells[check - 1].source
            for source, expected in plants:
                first_def = source[source.index("def "):source.index("(")]
                source = stub[:stub.index(first_def)] + source              # what the stub defines before it
                run_cell(client, source, check - 1)
                got = message(run_cell(client, nb.cells[check].source, check))
                if expected is None:
                    assert f"{exercise} passed." in got, f"{name}: a right answer to {exercise} failed: {got}"
                else:
                    expected = (expected,) if isinstance(expected, str) else expected
                    assert got.startswith("AssertionError: ") and all(e in got for e in expected), \
                        f"{name}: {exercise}'s check said {got!r}, expected {expected!r}"
            run_cell(client, nb.cells[check - 1].source, check - 1)     # the stub: the lesson goes on
            run_cell(client, nb.cells[check].source, check)


def test_lesson_03_shows_no_answer_to_exercise_1_before_it():
    """The accounting that prints MoLKV's table numbers comes after the exercise that asks for them."""
    nb = nbformat.read(LESSONS / "03_train_tiny_model.ipynb", as_version=4)
    stub = next(i for i, c in enumerate(nb.cells) if c.metadata.get("minimolkv", {}).get("wrong", "").startswith(
        "def molkv_table_numbers"))
    answers = ("327,680", "2,560", "147,584")                  # lut_numbers, bytes_per_token, replaced
    shown = [(i, a) for i, c in enumerate(nb.cells[:stub]) for a in answers
             if a in c.source or any(a in str(o) for o in c.get("outputs", []))]
    assert not shown, f"cells before exercise 1 show its answers: {shown}"
    after = "".join(str(o) for c in nb.cells[stub + 1:stub + 5] for o in c.get("outputs", []))
    assert all(a in after for a in answers)                     # and the cells right after do show them
