"""What one training step enters (examples/trace_step.py, the measure of docs/design.md):
a bound on functions, calls and modules, and no validation or dict-walking inside a step."""

import importlib.util
import os

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "trace_step.py")


@pytest.fixture(scope="module")
def trace_step():
    spec = importlib.util.spec_from_file_location("trace_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_default_step_is_short_and_checks_nothing(trace_step):
    calls, _ = trace_step.trace_one_step(tokenizer="byte")          # the default model; byte: no BPE to train
    modules = {m for m, _ in calls}
    assert 0 < len(calls) <= 38 and sum(calls.values()) <= 170 and len(modules) <= 8, calls
    assert ("minimolkv.train", "step") in calls and ("minimolkv.molkv", "attend_forward") in calls
    assert not any(m.startswith("minimolkv.validate") for m in modules)
    assert not {"_leaves", "_named", "options", "layer_blocks", "layer_params"} & {f for _, f in calls}
