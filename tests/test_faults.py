"""Faults a run meets from outside: two processes on one folder, a file-size limit,
damaged caches, long unbroken text, huge sizes. Real processes where the issue is
between processes (the lock, the limit); everything else in-process and tiny.
"""

import os
import random
import resource
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from minimolkv import checkpoint, data, files, model
from minimolkv.__main__ import main
from minimolkv.params import count_params, role
from minimolkv.tokenizer import _CHUNK_RE, MAX_CHUNK, BPETokenizer, chunks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--data", "synthetic", "--vocab", "64", "--context-len", "16", "--d-model", "16", "--n-layers", "1",
        "--n-heads", "2", "--d-ff", "32", "--kind", "dense"]


def _cli(args, preexec_fn=None):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.Popen([sys.executable, "-m", "minimolkv", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=preexec_fn)


def test_two_trains_on_one_folder_one_runs_one_is_refused_and_a_kill_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "run"
    first = _cli(["train", *TINY, "--steps", "100000", "--eval-every", "100000", "--out", str(out)])
    try:
        lock, start = out / files.LOCK, time.time()
        while not (lock.exists() and f"process {first.pid} " in lock.read_text()):   # it holds the folder
            assert first.poll() is None, first.communicate()
            assert time.time() - start < 120
            time.sleep(0.05)
        second = _cli(["train", *TINY, "--steps", "2", "--eval-every", "2", "--out", str(out)])
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2 and len(err.strip().splitlines()) == 1, err
        assert f"--out {str(out)!r} is in use by minimolkv process {first.pid} " in err, err
        assert first.poll() is None                           # the first one goes on
    finally:
        first.kill()                                          # SIGKILL: no clean-up runs
        first.wait()
    third = _cli(["train", *TINY, "--steps", "2", "--eval-every", "2", "--out", str(out)])
    output, err = third.communicate(timeout=120)
    assert third.returncode == 0, err                         # the killed run's lock is not stale
    assert "Final validation loss" in output


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="no file-size limits here")
def test_a_file_size_limit_below_the_checkpoint_is_one_line(tmp_path):
    def limit():                                              # 20 kB: the checkpoint needs ~250 kB
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    process = _cli(["train", *TINY, "--steps", "2", "--eval-every", "2", "--out", str(tmp_path / "o")],
                   preexec_fn=limit)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2 and len(err.strip().splitlines()) == 1, err
    for words in ("checkpoint.npz", "File too large", "ulimit -f", "nothing was saved"):
        assert words in err, err
    assert not list((tmp_path / "o").glob(".*.tmp"))          # no temporary left behind


def test_overwrite_replaces_the_old_run_only_when_the_new_one_first_saves(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--steps", "2", "--eval-every", "2", "--out", str(out)]) == 0
    old = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != files.LOCK}
    assert {"checkpoint.npz", "config.json", "metrics.csv", "loss.png"} <= set(old)
    at_commit, real = [], os.replace

    def replace(src, dst):
        if os.path.basename(dst) == "checkpoint.npz":          # the new run's saves
            at_commit.append({name: (out / name).read_bytes() for name in old if (out / name).exists()})
        return real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    assert main(["train", *TINY, "--steps", "4", "--eval-every", "2", "--lr", "0.01", "--overwrite",
                 "--out", str(out)]) == 0
    assert at_commit[0] == old                                # whole until the first save's commit
    assert checkpoint.load(out).settings.lr == 0.01 and checkpoint.load(out).step == 4
    assert (out / "loss.png").read_bytes() != old["loss.png"]  # the new run's curve


def test_a_kill_right_after_the_overwriting_commit_leaves_a_folder_that_loads(tmp_path, monkeypatch, capsys):
    """Between the new checkpoint's commit and its new config.json, the old run's config.json
    (at the same step, of another config) must not stand beside it."""
    out = tmp_path / "run"
    assert main(["train", *TINY, "--steps", "2", "--eval-every", "2", "--out", str(out)]) == 0
    real = os.replace

    def replace(src, dst):
        if os.path.basename(dst) == "config.json":
            raise KeyboardInterrupt                               # as a kill would stop it here
        return real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    assert main(["train", *TINY, "--steps", "2", "--eval-every", "2", "--d-ff", "16", "--overwrite",
                 "--out", str(out)]) == 130
    monkeypatch.undo()
    assert checkpoint.load(out).config.d_ff == 16             # the new run, and it loads


def test_lookup_tables_are_built_with_the_usual_permissions(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY[:-1], "mole", "--d-expert", "16", "--steps", "2", "--eval-every", "2",
                 "--out", str(out)]) == 0                     # its closing sample builds the tables
    tables = next(out.glob("luts-*"))
    umask = files.current_umask()
    assert stat.S_IMODE(tables.stat().st_mode) == 0o777 & ~umask                 # 0755, not mkdtemp's 0700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask for p in tables.iterdir())


# ----------------------------------------------------------------------------
# no hang: sizes are arithmetic, BPE's work is bounded
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", model.KINDS)
def test_parameter_counts_are_arithmetic_at_any_size(kind):
    """Counting 10**12 layers must take as long as counting one; the counts must be those
    of the shapes themselves (checked at 3 layers) and grow linearly in the layers."""
    config = model.Config(kind=kind, variant="joint", n_layers=3)
    shapes = model.param_shapes(config)
    assert count_params(config)["train"] == sum(int(np.prod(s)) for s in shapes.values())
    assert count_params(config)["lut"] == sum(int(np.prod(s)) for s in model.lut_shapes(config).values())
    assert count_params(config)["ram"] == sum(int(np.prod(s)) for k, s in shapes.items() if role(k) != "lut")
    one, two = (count_params(model.Config(kind=kind, variant="joint", n_layers=n)) for n in (1, 2))
    huge = count_params(model.Config(kind=kind, variant="joint", n_layers=10 ** 12))
    assert huge == {k: one[k] + (10 ** 12 - 1) * (two[k] - one[k]) for k in one}


def test_bpe_cuts_long_runs_and_bounds_its_work(monkeypatch):
    rng = random.Random(0)
    dna = "".join(rng.choice("ACGT") for _ in range(20_000))  # one unbroken run: every chunk new
    assert "".join(chunks(dna)) == dna and max(map(len, chunks(dna))) == MAX_CHUNK
    words = "the quick brown fox jumps over the lazy dog, 1234 times!\n\n  end"
    assert list(chunks(words)) == _CHUNK_RE.findall(words)   # real words are never cut
    monkeypatch.setattr(BPETokenizer, "MAX_WORK", 50_000)
    tok = BPETokenizer.train(dna, 400)
    assert 256 < tok.vocab_size < 300                          # stopped by the work bound, not by the text
    assert tok.decode(tok.encode(dna)) == dna
    assert BPETokenizer.train(words * 20, 300).vocab_size > 256     # real text is not cut short


def test_a_damaged_bpe_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMOLKV_CACHE", str(tmp_path / "cache"))
    (tmp_path / "t.txt").write_text("the cat sat on the mat and the dog sat on the rug. " * 30)
    first = data.load_dataset(str(tmp_path / "t.txt"), vocab_size=300)
    cache = next((tmp_path / "cache").glob("bpe-*.npz"))
    good = cache.read_bytes()
    raw = bytearray(good)
    for magic, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):     # a member flagged "encrypted"
        raw[raw.index(magic) + offset] |= 1
    at = good.index(b"{'descr'")
    for damaged in (bytes(raw), good[:at + 1] + b'"' + good[at + 2:], good[:len(good) // 2]):
        cache.write_bytes(damaged)
        again = data.load_dataset(str(tmp_path / "t.txt"), vocab_size=300)
        assert np.array_equal(again.train, first.train) and np.array_equal(again.val, first.val)
        assert cache.read_bytes() != damaged                   # rewritten whole
