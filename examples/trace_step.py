"""What one training step runs: the functions, calls and modules of the package it enters.

    python examples/trace_step.py            # the default model on Shakespeare
    python examples/trace_step.py --list     # and every function with its call count
    python examples/trace_step.py --variant joint     # a MoLKV variant other than the default

A reader who steps through one training step in a debugger meets every
function listed here. The script trains the default model (model.Config(),
train.Settings()) for three steps and traces, with sys.settrace, the second
step after the first (the first checks its inputs once; every later step is
like the second): every call into a file of the minimolkv package is counted,
from the loop's head to the loop's head again. NumPy's own Python functions
are left out (they are counted apart, as "numpy calls").
"""

import ast
import collections
import inspect
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import minimolkv  # noqa: E402
from minimolkv import model, train  # noqa: E402

PACKAGE = os.path.dirname(os.path.abspath(minimolkv.__file__))


def loop_head(function):
    """The absolute line number of the first `while`/`for` loop in `function`'s body."""
    lines, first = inspect.getsourcelines(function)
    tree = ast.parse("".join(lines))
    for node in ast.walk(tree):
        if isinstance(node, (ast.While, ast.For)):
            return first + node.lineno - 1
    raise ValueError(f"{function.__qualname__} has no loop")


def trace_one_step(loop_function=train.train, data="shakespeare", tokenizer="bpe", **config):
    """Train three steps; count the calls made during the second one (after the first).

    Where train.step exists (the step as one function) the second call of it is
    traced, itself included, and nothing the loop does around it (progress,
    evaluation); in older code, whose step was the body of the training loop, the
    second pass of the loop, from its head to its head again."""
    step = getattr(train, "step", None)
    step_code = step.__code__ if callable(step) else None
    loop_function = inspect.unwrap(loop_function)            # under its decorators
    head = loop_head(loop_function)
    code = loop_function.__code__
    calls, numpy_calls, visits, steps = collections.Counter(), collections.Counter(), [0], [0]

    def local(frame, event, arg):                     # line events of the loop's own frame
        if event == "line" and frame.f_lineno == head:
            visits[0] += 1
        return local

    def leave_step(frame, event, arg):                # the traced step returns: stop counting
        if event == "return":
            steps[0] += 1
        return leave_step

    def tracer(frame, event, arg):
        if frame.f_code is code and step_code is None:
            return local
        if frame.f_code is step_code:
            steps[0] += 1                             # 1: the first step, 3: the second
        counting = steps[0] == 3 if step_code is not None else visits[0] == 2
        if counting:
            path = os.path.abspath(frame.f_code.co_filename)
            if path.startswith(PACKAGE + os.sep):
                module = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                calls[(module, frame.f_code.co_qualname if hasattr(frame.f_code, "co_qualname")
                       else frame.f_code.co_name)] += 1
            elif "numpy" in path:
                numpy_calls[frame.f_code.co_name] += 1
        return leave_step if frame.f_code is step_code else None

    spec = train.DataSpec(data, tokenizer=tokenizer)
    dataset = spec.load()
    config = model.Config(vocab_size=dataset.tokenizer.vocab_size, **config)
    run = train.new_run(config, train.Settings(steps=3), spec, dataset)
    sys.settrace(tracer)
    try:
        train.train(run, dataset, log=lambda line: None)
    finally:
        sys.settrace(None)
    return calls, numpy_calls


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    options = {"variant": argv[argv.index("--variant") + 1]} if "--variant" in argv else {}
    calls, numpy_calls = trace_one_step(**options)
    modules = sorted({m for m, _ in calls})
    what = options.get("variant", "default")
    print(f"one {what} training step after the first: {len(calls)} functions, "
          f"{sum(calls.values())} calls, in {len(modules)} modules ({', '.join(modules)}); "
          f"{sum(numpy_calls.values())} numpy calls")
    if "--list" in argv:
        for (module, name), n in sorted(calls.items()):
            print(f"  {n:4d}  {module}.{name}")


if __name__ == "__main__":
    main()
