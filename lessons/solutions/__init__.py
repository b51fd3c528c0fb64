"""The lessons' exercises: the check that runs a student's attempt, and the answers.

A notebook never shows a reference solution. An exercise cell holds a *stub*
that raises NotImplementedError; the cell after it calls `check(...)`:

  * a correct attempt passes the exercise's asserts: "Exercise N passed";
  * the stub untouched: "Exercise N: not attempted -- using the reference
    solution", and the reference (kept in lessons/solutions/lessonNN.py) is
    returned, so the rest of the lesson runs either way;
  * a wrong attempt: AssertionError("Exercise N failed: <what was wrong>").

Each lesson's questions about its pictures are answered here too, out of
sight until asked for: reveal("02-q1") prints one.

The tests run every notebook twice: as committed (every exercise "not
attempted"), and with a wrong answer planted in every exercise cell (the cell's
metadata["minimolkv"]["wrong"]), which each check cell must reject.
"""

import importlib


def check(name, attempt, reference, test):
    """Run test(attempt); return what the lesson goes on with (the attempt, or the
    reference when the stub is untouched). test(f) asserts; it gets the function."""
    try:
        test(attempt)
    except NotImplementedError:
        test(reference)                                  # the reference must pass its own test
        print(f"{name}: not attempted -- using the reference solution. "
              "Replace the stub's `raise NotImplementedError` with your code and run both cells again.")
        return reference
    except AssertionError as err:
        raise AssertionError(f"{name} failed: {err}") from None
    print(f"{name} passed.")
    return attempt


def reveal(key):
    """Print the answer to a lesson's question, e.g. reveal("01-q1")."""
    lesson = importlib.import_module(f"solutions.lesson{key.split('-')[0]}")
    if key not in lesson.ANSWERS:
        raise KeyError(f"no question {key!r}; this lesson has {sorted(lesson.ANSWERS)}")
    print(lesson.ANSWERS[key])


def close(a, b, rtol=1e-8, atol=1e-10):
    """assert that two arrays agree, with a message a student can act on."""
    import numpy as np
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"shape {a.shape}, expected {b.shape}"
    err = float(np.max(np.abs(a - b)) / max(1e-8, float(np.max(np.abs(a) + np.abs(b)))))
    assert np.allclose(a, b, rtol=rtol, atol=atol), f"relative error {err:.1e} against the expected values"
