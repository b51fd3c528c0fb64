"""checkpoint.py: a checkpoint is a unit (whatever instant a run is killed at), loading
trusts nothing, and the lookup tables beside it touch nothing they did not make."""

import dataclasses
import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from minimolkv import checkpoint, lut, model, train
from minimolkv.__main__ import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(context_len=16, d_model=16, n_layers=1, n_heads=2, d_ff=32, n_experts=4, d_expert=16, d_key=4)
TINY_ARGS = ["--data", "synthetic", "--vocab", "64", "--context-len", "16", "--d-model", "16", "--n-layers", "1",
             "--n-heads", "2", "--d-ff", "32", "--d-expert", "16", "--d-key", "4"]


@functools.lru_cache(maxsize=1)
def tiny_data():
    """The synthetic task with a short validation chain (the final whole-split evaluation is quick)."""
    spec = train.DataSpec(name="synthetic", vocab_size=64)
    return spec, dataclasses.replace(spec.load(), val=spec.load().val[:1000])


def tiny_run(steps=6, eval_every=2, kind="molkv", **settings):
    spec, dataset = tiny_data()
    config = model.Config(kind=kind, vocab_size=64, **TINY)
    s = train.Settings(steps=steps, batch_size=4, eval_every=eval_every, eval_batches=1, warmup=1, **settings)
    return train.new_run(config, s, spec, dataset), dataset


class Killed(BaseException):
    """A kill, injected: like SIGKILL it is no Exception, so nothing handles it on the way."""


# ----------------------------------------------------------------------------
# a unit: a kill between (or during) the writes leaves the old step or the new one
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("kill_at", range(4))
def test_a_kill_before_any_rename_of_save_leaves_the_old_or_the_new_step(kill_at, tmp_path, monkeypatch):
    run, dataset = tiny_run()
    train.train(run, dataset, out_dir=tmp_path, stop_after=2, log=lambda line: None)
    renames = []
    real_replace = os.replace

    def replace(src, dst):                                  # save renames npz, config.json, metrics.csv
        if len(renames) == kill_at:
            raise Killed
        renames.append(os.path.basename(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Killed):
        train.train(run, dataset, out_dir=tmp_path, stop_after=4, log=lambda line: None)
        raise Killed                                        # kill_at = 3: after every rename
    monkeypatch.undo()
    assert renames == ["checkpoint.npz", "config.json", "metrics.csv"][:kill_at]
    loaded = checkpoint.load(tmp_path)                      # loads, as the old step or the new one
    assert loaded.step == (2 if kill_at == 0 else 4)
    if kill_at:                                             # the new step, whole
        np.testing.assert_array_equal(loaded.params["lm_head"], run.params["lm_head"])
    if kill_at == 1:                                        # config.json is still a step behind: ignored
        assert json.loads((tmp_path / "config.json").read_text())["step"] == 2
    resumed = checkpoint.load(tmp_path)                     # and the run goes on from there
    train.train(resumed, dataset, out_dir=tmp_path, log=lambda line: None)
    assert checkpoint.load(tmp_path).step == 6
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_kill_while_writing_the_checkpoint_leaves_the_old_one_and_its_temporary_is_cleaned(tmp_path, monkeypatch):
    run, dataset = tiny_run()
    train.train(run, dataset, out_dir=tmp_path, stop_after=2, log=lambda line: None)

    def half_written(f, **arrays):                          # the kill comes in the middle of the write
        f.write(b"PK\x03\x04 half a zip")
        raise Killed

    monkeypatch.setattr(checkpoint.np, "savez", half_written)
    monkeypatch.setattr(os, "remove", lambda path: None)    # a kill skips atomic_write's clean-up
    with pytest.raises(Killed):
        train.train(run, dataset, out_dir=tmp_path, stop_after=4, log=lambda line: None)
    monkeypatch.undo()
    left = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert left and left[0].startswith(".checkpoint.npz.")
    assert checkpoint.load(tmp_path).step == 2
    resumed = checkpoint.load(tmp_path)
    train.train(resumed, dataset, out_dir=tmp_path, stop_after=4, log=lambda line: None)
    assert checkpoint.load(tmp_path).step == 4
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]   # the next save cleaned it


def _cli(args, **kwargs):
    """python -m minimolkv args as a process of this checkout, with Ctrl-C delivered as usual
    (a shell that started us in the background may have set SIGINT to be ignored)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.Popen([sys.executable, "-m", "minimolkv", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs)


def _wait_for(path, process, timeout=60):
    start = time.time()
    while not os.path.exists(path):
        assert process.poll() is None, process.communicate()
        assert time.time() - start < timeout
        time.sleep(0.02)


def test_real_kills_at_random_moments_always_leave_a_loadable_folder(tmp_path):
    """SIGKILL a real run that checkpoints every step, three times at random moments
    (mid-step or mid-save); every time the folder loads, and the run goes on from it."""
    out = tmp_path / "run"
    rng = random.Random(0)
    steps = [0]
    for k in range(3):
        args = (["train", "--resume", str(out), "--steps", "100000"] if k else
                ["train", *TINY_ARGS, "--steps", "100000", "--eval-every", "1", "--out", str(out)])
        p = _cli(args)
        start = time.time()
        while (checkpoint.holds_run(out) or 0) in ("?", steps[-1]):   # until this process saved a step
            assert p.poll() is None, p.communicate()
            assert time.time() - start < 60
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))
        p.kill()
        p.communicate()
        steps.append(checkpoint.load(out).step)          # always loads
    assert steps == sorted(steps) and steps[-1] > steps[1] > 0


def test_ctrl_c_in_a_real_run_is_one_line_and_exit_130(tmp_path):
    out = tmp_path / "run"
    p = _cli(["train", *TINY_ARGS, "--steps", "100000", "--eval-every", "5", "--out", str(out)])
    _wait_for(out / "checkpoint.npz", p)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130
    assert "Traceback" not in stdout + stderr and len(stderr.strip().splitlines()) == 1
    step = checkpoint.load(out).step
    assert f"the last checkpoint (step {step}) is in {out}" in stderr
    assert stderr.strip().endswith(f"continue with: python -m minimolkv train --resume {out}")


# ----------------------------------------------------------------------------
# nothing non-finite is ever saved, and the messages name the real last checkpoint
# ----------------------------------------------------------------------------

def test_a_diverging_run_never_checkpoints_nan_and_warns_nothing(tmp_path):
    run, dataset = tiny_run(steps=40, eval_every=2, lr=1e3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # no RuntimeWarning on the way either
        with pytest.raises(train.TrainingDiverged, match=r"last good checkpoint \(step \d+\) is in"):
            train.train(run, dataset, out_dir=tmp_path, log=lambda line: None)
    saved = checkpoint.load(tmp_path)                       # finite, or load would refuse it
    json.loads((tmp_path / "config.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert all(np.isfinite(r["val_loss"]) for r in saved.metrics if r["val_loss"] is not None)


def test_the_divergence_message_names_the_checkpoint_that_exists(tmp_path):
    run, dataset = tiny_run(steps=8)
    with pytest.raises(train.TrainingDiverged, match="no checkpoint was written before it"):
        train.train(tiny_run(lr=1e300)[0], dataset, out_dir=tmp_path / "fresh", log=lambda line: None)
    train.train(run, dataset, out_dir=tmp_path / "a", stop_after=4, log=lambda line: None)
    resumed = checkpoint.load(tmp_path / "a")               # resumed into another folder ...
    resumed.params["lm_head"][:] = np.inf
    with pytest.raises(train.TrainingDiverged, match=f"checkpoint \\(step 4\\) is in '{tmp_path / 'a'}'"):
        train.train(resumed, dataset, out_dir=tmp_path / "b", log=lambda line: None)
    assert not (tmp_path / "b" / "checkpoint.npz").exists()   # ... names the one that exists


# ----------------------------------------------------------------------------
# formats and files
# ----------------------------------------------------------------------------

def test_one_file_holds_everything_and_files_get_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    try:
        run, dataset = tiny_run(steps=2)
        train.train(run, dataset, out_dir=tmp_path, log=lambda line: None)
    finally:
        os.umask(old)
    for name in checkpoint.FILES:
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    (tmp_path / "config.json").unlink()                     # a copy for people: not needed to load
    (tmp_path / "metrics.csv").unlink()
    assert checkpoint.load(tmp_path).step == 2


def test_format_1_checkpoints_still_load_and_a_mismatched_pair_is_refused(tmp_path):
    run, dataset = tiny_run(steps=2)
    train.train(run, dataset, out_dir=tmp_path, log=lambda line: None)
    with np.load(tmp_path / "checkpoint.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("config.json").tobytes())
    meta["format"] = 1
    arrays["step"] = np.array(2)
    np.savez(tmp_path / "checkpoint.npz", **arrays)         # the old layout: the metadata only in JSON
    (tmp_path / "config.json").write_text(json.dumps(meta))
    back = checkpoint.load(tmp_path)
    assert back.step == 2 and back.config == run.config
    meta["step"] = 1
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not belong together"):
        checkpoint.load(tmp_path)


def test_loading_a_lying_header_allocates_nothing(tmp_path):
    """An .npy header may claim any shape; reading allocates by the bytes the file holds."""
    import tracemalloc
    import zipfile
    run, dataset = tiny_run(steps=2)
    train.train(run, dataset, out_dir=tmp_path, log=lambda line: None)
    (tmp_path / "config.json").unlink()
    with np.load(tmp_path / "checkpoint.npz") as z:
        arrays = {k: z[k] for k in z.files}
    with zipfile.ZipFile(tmp_path / "checkpoint.npz", "w") as zf:
        for k, v in arrays.items():
            with zf.open(k + ".npy", "w") as f:
                if k == "params.tok_emb":                   # claims 2**40 float32s (4 TiB)
                    np.lib.format.write_array_header_2_0(f, {"descr": "<f4", "fortran_order": False,
                                                             "shape": (2 ** 20, 2 ** 20)})
                    f.write(b"\0" * 64)
                else:
                    np.lib.format.write_array(f, v)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="header promises shape"):
            checkpoint.load(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * (tmp_path / "checkpoint.npz").stat().st_size + 2 ** 20


def test_holds_run(tmp_path):
    assert checkpoint.holds_run(tmp_path) is None
    (tmp_path / "checkpoint.npz").write_bytes(b"junk")
    assert checkpoint.holds_run(tmp_path) == "?"            # a damaged run still counts as a run


# ----------------------------------------------------------------------------
# the lookup tables beside a checkpoint
# ----------------------------------------------------------------------------

def test_tables_leave_alone_what_they_did_not_make(tmp_path):
    run, dataset = tiny_run(steps=2)
    mine = tmp_path / "luts-mydata"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    lookalike = tmp_path / "luts-0123456789ab"              # our name pattern, but not our folder
    lookalike.mkdir()
    (lookalike / "k.npy").write_bytes(b"")
    os.symlink(tmp_path / "gone", tmp_path / "luts-stale")  # a dangling symlink
    (tmp_path / "luts-file").write_text("a file")
    young = tmp_path / ".luts-aaaaaaaaaaaa.x.tmp"           # half-built by a process still running
    young.mkdir()
    old = tmp_path / ".luts-bbbbbbbbbbbb.y.tmp"             # half-built by a process killed long ago
    old.mkdir()
    os.utime(old, (time.time() - 2 * lut.STALE_SECONDS,) * 2)

    luts = lut.tables(tmp_path, run.params, run.config)
    first = [p.name for p in tmp_path.iterdir() if lut.TABLES_DIR.fullmatch(p.name) and p != lookalike]
    assert len(first) == 1 and set(luts) == set(model.lut_shapes(run.config))
    assert mine.is_dir() and lookalike.is_dir() and os.path.islink(tmp_path / "luts-stale")
    assert (tmp_path / "luts-file").is_file() and young.is_dir() and not old.exists()

    train.train(run, dataset, log=lambda line: None)        # new parameters: new tables, the old ones go
    lut.tables(tmp_path, run.params, run.config)
    second = [p.name for p in tmp_path.iterdir() if lut.TABLES_DIR.fullmatch(p.name) and p != lookalike]
    assert len(second) == 1 and second != first
    assert mine.is_dir() and lookalike.is_dir() and (tmp_path / "luts-file").is_file()


def test_tables_of_a_read_only_folder_are_built_in_memory(tmp_path, monkeypatch, capsys):
    run, dataset = tiny_run(steps=2)
    train.train(run, dataset, out_dir=tmp_path, log=lambda line: None)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(lut.tempfile, "mkdtemp", read_only)
    notes = []
    luts = lut.tables(tmp_path, run.params, run.config, log=notes.append)
    assert luts and not any(t.on_disk for t in luts.values())
    assert "cannot save lookup tables" in notes[0] and "Permission denied" in notes[0]
    assert main(["sample", "--checkpoint", str(tmp_path), "--tokens", "3"]) == 0
    captured = capsys.readouterr()
    assert "in memory" in captured.out and "note: cannot save lookup tables" in captured.err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("luts-", ".luts-"))]


def test_sample_streams_the_text_it_returns(tmp_path, capsys):
    from minimolkv.tools.cli_train import sample_text
    run, dataset = tiny_run(steps=2)
    pieces = []
    text, _ = sample_text(run, "K1 w20 ?", 30, 0.8, tmp_path, seed=3, on_text=pieces.append)
    assert len(pieces) >= 31 and "".join(pieces) == text                  # prompt, a piece per token, end
    train.train(run, dataset, out_dir=tmp_path / "ck", log=lambda line: None)
    assert main(["sample", "--checkpoint", str(tmp_path / "ck"), "--tokens", "30", "--seed", "3",
                 "--prompt", "K1 w20 ?"]) == 0
    streamed = capsys.readouterr().out.splitlines()[0]
    assert streamed == sample_text(checkpoint.load(tmp_path / "ck"), "K1 w20 ?", 30, 0.8, tmp_path / "ck",
                                   seed=3)[0]


def test_only_a_molkv_run_records_a_variant_and_both_load(tmp_path):
    """A MoLE run's saved config does not say variant='recency' (the Config default no block
    of it reads); a MoLKV run's names its variant. Both load back to the config they saved."""
    for kind, variant in (("mole", None), ("molkv", "recency")):
        run, _ = tiny_run(steps=2, kind=kind)
        checkpoint.save(tmp_path / kind, run)
        saved = json.loads((tmp_path / kind / "config.json").read_text())["model"]
        assert saved.get("variant") == variant
        assert checkpoint.load(tmp_path / kind).config.to_dict() == run.config.to_dict()
