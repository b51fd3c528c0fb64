"""The command line: gradcheck report, help, bad arguments."""

import subprocess
import sys

import pytest

from minimolkv.__main__ import main


def test_gradcheck_command_prints_a_passing_table(capsys):
    assert main(["gradcheck", "--only", "ops", "mole"]) == 0
    out = capsys.readouterr().out
    assert "mole.router" in out and "max rel err" in out
    assert "0 failed" in out


def test_every_check_of_the_report_passes(capsys):
    """The instructor's report: every CHECKS entry (layers, variants, the control, the
    whole model of every kind), exactly what `python -m minimolkv gradcheck` prints."""
    from minimolkv.gradcheck_layers import CHECKS
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    for name in CHECKS:
        assert f"== {name}  (" in out
    assert " 0 failed" in out and "FAIL" not in out


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


def test_info_counts_any_size_without_allocating(capsys):
    assert main(["info", "--d-model", "100000000", "--n-heads", "1", "--vocab-size", "100000"]) == 0
    out = capsys.readouterr().out
    assert "D=100000000" in out and "trained parameters" in out


def test_info_names_the_molkv_variant_recency_by_default(capsys):
    assert main(["info"]) == 0 and main(["info", "--variant", "joint"]) == 0
    recency, joint = capsys.readouterr().out.split("kind=")[1:]
    assert recency.startswith("molkv (recency)") and joint.startswith("molkv (joint)")
    assert "resident in RAM at inference         170,312" in recency     # the query and 2 x 4 slopes
    assert "resident in RAM at inference         170,304" in joint


def test_memory_estimate_is_close_to_a_measured_train_step():
    """memory.activation_bytes against tracemalloc's peak of one forward + backward."""
    import tracemalloc

    import numpy as np

    from minimolkv import memory, model
    for kind in ("dense", "molkv"):
        config = model.Config(kind=kind, vocab_size=128, context_len=32, d_model=32, n_heads=2, d_ff=64,
                              d_expert=32)
        params = model.init(config)
        ids = np.random.default_rng(0).integers(0, 128, (8, 32))
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        _, _, cache = model.forward(params, config, ids, ids)
        grads = model.backward(cache)
        del cache, grads
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        estimate = sum(memory.activation_bytes(config, 8, 4).values())
        assert 0.9 < estimate / peak < 1.6, (kind, estimate, peak)
    assert memory.ram_bytes() is None or memory.ram_bytes() > 2 ** 26


def test_d_ff_zero_means_no_dense_ffn(tmp_path, capsys):
    args = ["train", "--kind", "mole", "--d-ff", "0", "--data", "synthetic", "--vocab", "64", "--steps", "2",
            "--eval-every", "2", "--context-len", "8", "--d-model", "16", "--n-layers", "1", "--n-heads", "2",
            "--d-expert", "16", "--out", str(tmp_path)]
    assert main(args) == 0
    assert "d_ff=0" in capsys.readouterr().out
    from minimolkv import checkpoint
    names = checkpoint.load(tmp_path).params
    assert not any(".ffn." in k for k in names) and any(".mole." in k for k in names)   # no dense FFN built


def test_presets_name_the_experiments_sizes_and_a_typed_size_wins(capsys):
    """--preset large is E1's large size; a size typed as well overrides the preset's."""
    assert main(["info", "--kind", "dense", "--preset", "large"]) == 0
    out = capsys.readouterr().out
    assert "D=128 L=4" in out and "926,848" in out
    assert main(["info", "--kind", "dense", "--preset", "xl", "--n-layers", "2"]) == 0
    out = capsys.readouterr().out
    assert "D=224 L=2" in out and "d_ff=896" in out
    with pytest.raises(SystemExit) as stop:
        main(["info", "--preset", "huge"])
    assert stop.value.code == 2 and "--preset" in capsys.readouterr().err
