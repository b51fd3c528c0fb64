"""The lessons' exercises: the check that runs a student's attempt, and the answers.

A notebook never shows a reference solution. An exercise cell holds a *stub*
that raises NotImplementedError; the cell after it calls `check(...)`:

  * a correct attempt passes the exercise's asserts: "Exercise N passed";
  * the stub untouched: "Exercise N: not attempted -- using the reference
    solution", and the reference (kept in lessons/solutions/lessonNN.py) is
    returned, so the rest of the lesson runs either way;
  * a wrong attempt: AssertionError("Exercise N failed: <what was wrong>"); an
    exception on the way reads "Exercise N failed: <ExceptionType>: <message>"
    (with the line of the student's function that raised it), never a bare
    traceback from deep inside NumPy.

The attempt is fair-tested: every call gets copies of its array arguments (so
the check's own arrays, and the references it computed first, stay intact),
and an attempt that writes into its arguments fails, naming the argument --
except an upstream gradient a backward may consume (check's may_change).

Each lesson's questions about its pictures are answered here too, out of
sight until asked for: reveal("02-q1") prints one.

The tests run every notebook as committed (every exercise "not attempted"),
with a wrong answer planted in every exercise cell (the cell's
metadata["minimolkv"]["wrong"]), which each check cell must reject, and, where
an exercise carries one, with a right answer computed in place
(metadata["minimolkv"]["in_place"]), which its check must pass.
"""

import functools
import importlib
import inspect
import traceback

import numpy as np


class StudentError(AssertionError):
    """An exception raised inside the student's function, as one readable line."""


def check(name, attempt, reference, test, *, may_change=()):
    """Run test(attempt); return what the lesson goes on with (the attempt, or the
    reference when the stub is untouched). test(f) asserts; it gets the function
    (or the tuple of functions), guarded: see guarded(). may_change names the
    reference's arguments the function may overwrite: an upstream gradient a
    backward consumes (dP -= ...; dP *= P is a right answer), never a forward input."""
    free = _positions(reference, may_change)
    try:
        test(guarded(attempt, free))
    except NotImplementedError:
        test(guarded(reference, free))                   # the reference must pass its own test
        print(f"{name}: not attempted -- using the reference solution. "
              "Replace the stub's `raise NotImplementedError` with your code and run both cells again.")
        return reference
    except AssertionError as err:
        raise AssertionError(f"{name} failed: {err}") from None
    except Exception as err:                             # raised by the check, e.g. on a wrong shape
        raise AssertionError(f"{name} failed: {type(err).__name__}: {err}") from None
    print(f"{name} passed.")
    return attempt


def _positions(reference, names):
    """The positions of the named parameters of `reference` (a function)."""
    if not names:
        return frozenset()
    params = list(inspect.signature(reference).parameters)
    return frozenset(params.index(n) for n in names)


def guarded(attempt, free=frozenset()):
    """The attempt (a function, or a tuple of them), called on copies of its arguments:
    an argument changed in place fails the check by name (except the positions in
    `free`), and an exception it raises becomes a StudentError naming its type, its
    message and the line that raised it."""
    if isinstance(attempt, tuple):
        return tuple(guarded(f, free) for f in attempt)
    try:
        names = list(inspect.signature(attempt).parameters)
    except (TypeError, ValueError):
        names = []

    @functools.wraps(attempt)
    def call(*args, **kwargs):
        copies, kw_copies = [_copy(a) for a in args], {k: _copy(v) for k, v in kwargs.items()}
        try:
            out = attempt(*copies, **kw_copies)
        except (NotImplementedError, AssertionError):
            raise
        except Exception as err:
            raise StudentError(f"{type(err).__name__}: {err}{_where(err, attempt)}") from None
        given = [(names[i] if i < len(names) else f"argument {i + 1}", a, c)
                 for i, (a, c) in enumerate(zip(args, copies)) if i not in free]
        for label, before, after in given + [(k, kwargs[k], kw_copies[k]) for k in kwargs]:
            changed = _changed(before, after, label)
            if changed:
                raise AssertionError(f"your {attempt.__name__} changed its argument {changed} in place; "
                                     "leave the inputs as they are and compute into new arrays")
        return out
    return call


def _copy(value):
    """A deep copy of arrays, inside tuples (NamedTuple caches too), lists and dicts."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, tuple):
        items = [_copy(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def _changed(before, after, label):
    """The label of the first array in `after` that differs from `before` (None: none)."""
    if isinstance(before, np.ndarray):
        nan = before.dtype.kind in "fc"
        same = before.shape == np.shape(after) and np.array_equal(before, after, equal_nan=nan)
        return None if same else label
    if isinstance(before, (tuple, list)):
        fields = getattr(before, "_fields", None) or [f"[{i}]" for i in range(len(before))]
        parts = [_changed(b, a, label + (f".{f}" if not f.startswith("[") else f))
                 for f, b, a in zip(fields, before, after)]
        return next((p for p in parts if p), None)
    if isinstance(before, dict):
        return next((c for k in before if (c := _changed(before[k], after.get(k), f"{label}[{k!r}]"))), None)
    return None


def _where(err, fn):
    """' (at `<line>` in your <fn>)' for the deepest line of the student's code that raised err."""
    code = getattr(fn, "__code__", None)
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if code is not None and f.filename == code.co_filename]
    line = frames[-1].line.split("#")[0].strip() if frames and frames[-1].line else ""   # without a comment
    return f" (at `{line}` in your {fn.__name__})" if line else ""


def reveal(key):
    """Print the answer to a lesson's question, e.g. reveal("01-q1")."""
    lesson = importlib.import_module(f"solutions.lesson{key.split('-')[0]}")
    if key not in lesson.ANSWERS:
        raise KeyError(f"no question {key!r}; this lesson has {sorted(lesson.ANSWERS)}")
    print(lesson.ANSWERS[key])


def close(a, b, rtol=1e-8, atol=1e-10):
    """assert that two arrays agree, with a message a student can act on (naming the
    dtype when a lower precision is what differs)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"shape {a.shape}, expected {b.shape}"
    err = float(np.max(np.abs(a - b)) / max(1e-8, float(np.max(np.abs(a) + np.abs(b)))))
    precision = (f"; your result is {a.dtype}, the expected {b.dtype}: compute in {b.dtype}"
                 if a.dtype != b.dtype and a.dtype.kind == b.dtype.kind == "f" else "")
    assert np.allclose(a, b, rtol=rtol, atol=atol), \
        f"relative error {err:.1e} against the expected values{precision}"
