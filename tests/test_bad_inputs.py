"""One table of bad inputs, for the command line and the API.

Every row is an input a user (or a damaged file) can give. On the command line
it must end with exit code 2 (130 for Ctrl-C), one line on stderr, no
traceback; through the API, with a ValueError/TypeError/FileNotFoundError.
Either way the message names the argument and says what is allowed: each row
lists the words its message must hold.

Command-line rows run main() in-process (a subprocess per row would cost a
second each); a traceback there is an uncaught exception, which the helper
turns into text holding "Traceback". tests/test_checkpoint.py sends real
signals to real processes.
"""

import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import stat
import sys
import tempfile
import traceback
import zipfile

import numpy as np
import pytest

from minimolkv import (attention, checkpoint, ctxattn, data, ffn, files, generate, lut, memory, model, moe, mole,
                       molkv, ops, train)
from minimolkv.__main__ import main
from minimolkv.tokenizer import BPETokenizer, tokenizer_from_dict

BASE = ["--context-len", "16", "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--d-ff", "32"]  # every kind
TINY = [*BASE, "--d-expert", "16", "--d-key", "4"]                              # MoLKV's sizes too
SYN = ["--data", "synthetic", "--vocab", "64", *TINY]
SYN_DENSE = ["--data", "synthetic", "--vocab", "64", *BASE]                     # for dense-only commands
TRAIN = ["train", *SYN, "--steps", "4", "--eval-every", "2"]
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


@dataclasses.dataclass
class Bad:
    id: str
    run: object            # CLI: a list of strings ({good}: a fresh copy of a trained run, {tmp}: a folder);
                           # API: a function (tmp, good) -> (it must raise)
    says: tuple            # words the message must hold: the argument, what is allowed
    prepare: object = None  # prepare(tmp, good, monkeypatch), before the run
    code: int = 2


# ----------------------------------------------------------------------------
# ways to damage a copy of a good checkpoint
# ----------------------------------------------------------------------------

def rewrite(folder, arrays=None, meta=None, raw=None, text=None):
    """Rewrite folder/checkpoint.npz with arrays(a) / meta(m) / text(json text) applied (or
    the metadata bytes `raw`); config.json, the copy for people, is removed so only the
    change counts."""
    with np.load(folder / "checkpoint.npz") as z:
        a = {k: z[k] for k in z.files}
    m = json.loads(a["config.json"].tobytes())
    if arrays:
        arrays(a)
    if meta:
        meta(m)
    if text:
        raw = text(json.dumps(m)).encode()
    a["config.json"] = np.frombuffer(raw if raw is not None else json.dumps(m).encode(), dtype=np.uint8)
    np.savez(folder / "checkpoint.npz", **a)
    (folder / "config.json").unlink()


def edit_copy(folder, change):
    m = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(change(m)))


def lying_header(folder):
    """An .npy member whose header claims (10**12, 1000) float32s (3.6 TiB) over 16 bytes."""
    with np.load(folder / "checkpoint.npz") as z:
        a = {k: z[k] for k in z.files}
    with zipfile.ZipFile(folder / "checkpoint.npz", "w") as zf:
        for k, v in a.items():
            with zf.open(k + ".npy", "w") as f:
                if k == "params.ln_f":
                    np.lib.format.write_array_header_1_0(
                        f, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 12, 1000)})
                    f.write(b"\0" * 16)
                else:
                    np.lib.format.write_array(f, v)


def compressed(folder):
    with np.load(folder / "checkpoint.npz") as z:
        a = {k: z[k] for k in z.files}
    np.savez_compressed(folder / "checkpoint.npz", **a)


def object_array(a):
    a["params.evil"] = np.array([{"a": 1}], dtype=object)


def set_item(key, value):
    return lambda d: d.__setitem__(key, value)


def luts_in_the_way(folder):
    run = checkpoint.load(folder)
    tables = folder / ("luts-" + lut.fingerprint(run.params))
    shutil.rmtree(tables, ignore_errors=True)                  # (train's sample built them)
    tables.write_text("not a folder")


def nan_in_a_table(folder):
    run = checkpoint.load(folder)
    luts = lut.tables(folder, run.params, run.config)
    path = next(folder.glob("luts-*")) / (next(iter(luts)) + ".npy")
    table = np.load(path)
    table[3, 1, 2] = np.nan
    np.save(path, table)


def read_only_out(tmp, good, monkeypatch):
    folder = tmp / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if ROOT:                                              # root writes anywhere: pretend it cannot
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)


def interrupt_at_batch(k):
    """Ctrl-C during the k-th batch (steps 1..k-1 are done)."""
    def prepare(tmp, good, monkeypatch):
        calls = []
        real = train.get_batch

        def get_batch(*args, **kwargs):
            calls.append(1)
            if len(calls) == k:
                raise KeyboardInterrupt
            return real(*args, **kwargs)
        monkeypatch.setattr(train, "get_batch", get_batch)
    return prepare


def write(name, content):
    def prepare(tmp, good, monkeypatch):
        (tmp / name).write_bytes(content)
    return prepare


def fifo(tmp, good, monkeypatch):
    os.mkfifo(tmp / "fifo")


# ----------------------------------------------------------------------------
# round 3: folders that are not ours, full disks, damaged files, busy folders
# ----------------------------------------------------------------------------

def files_of(names, folder="mine"):
    """The user's own files of these names in tmp/folder (no checkpoint among them)."""
    def prepare(tmp, good, monkeypatch):
        (tmp / folder).mkdir(exist_ok=True)
        for name in names:
            (tmp / folder / name).write_bytes(b"the user's own " + name.encode())
    return prepare


def default_run_in_cwd(tmp, good, monkeypatch):
    """A run in each default folder a row could fall back to (train with no options, and TRAIN's
    synthetic data), under the working directory: an empty --out/--resume must touch neither."""
    from minimolkv.tools.cli_train import default_out
    monkeypatch.chdir(tmp)
    for data_name in ("shakespeare", "synthetic"):
        shutil.copytree(good, tmp / default_out(model.Config(), data_name))


def os_error(number, where="fsync"):
    """Every os.fsync (the last step of each atomic write) fails with errno `number`."""
    def prepare(tmp, good, monkeypatch):
        def fail(*args, **kwargs):
            raise OSError(number, os.strerror(number))
        monkeypatch.setattr(os, where, fail)
    return prepare


def full_disk_at_the_plot(tmp, good, monkeypatch):
    from minimolkv.tools import plots

    def val_curves(curves, path, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    monkeypatch.setattr(plots, "val_curves", val_curves)
    (tmp / "t.txt").write_text("the cat sat on the mat. " * 40)


def unreadable(tmp, good, monkeypatch):
    (tmp / "t.txt").write_text("some text " * 100)
    (tmp / "t.txt").chmod(0)
    if ROOT:                                              # root reads anything: pretend it cannot
        real = pathlib.Path.read_bytes
        monkeypatch.setattr(pathlib.Path, "read_bytes", lambda p: (_ for _ in ()).throw(
            PermissionError(13, "Permission denied")) if p.name == "t.txt" else real(p))


def data_larger_than_ram(tmp, good, monkeypatch):
    from minimolkv.tools import cli_train
    (tmp / "huge.txt").write_text("some text " * 100)                  # as if each byte needed 1 GB
    monkeypatch.setattr(cli_train, "DATA_BYTES_PER_BYTE", 2 ** 30)


def out_of_memory_reading(tmp, good, monkeypatch):
    (tmp / "big.txt").write_text("some text " * 100)
    real = pathlib.Path.read_bytes
    monkeypatch.setattr(pathlib.Path, "read_bytes", lambda p: (_ for _ in ()).throw(MemoryError())
                        if p.name == "big.txt" else real(p))


def flag_encrypted(folder):
    """Set the 'encrypted' flag of checkpoint.npz's first member (local and central headers)."""
    path = folder / "checkpoint.npz"
    data = bytearray(path.read_bytes())
    for magic, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(magic) + offset
        data[at] |= 1
    path.write_bytes(bytes(data))


def damaged_npy_header(old, new):
    """One byte of the first member's .npy header changed: its dict no longer parses (numpy's
    own error: a ValueError for a stray quote, a tokenize.TokenError for an open bracket)."""
    def damage(folder):
        path = folder / "checkpoint.npz"
        data = path.read_bytes()
        at = data.index(old, data.index(b"{'descr'"))
        path.write_bytes(data[:at] + new + data[at + 1:])
    return damage


def other_tables(scale=None, manifest=None):
    """This run's tables folder made to hold another model's tables: the tables scaled, or
    tables.json naming other parameters."""
    def damage(folder):
        tables = next(folder.glob("luts-*"))
        if scale:
            for path in tables.glob("*.npy"):
                np.save(path, np.load(path) * scale)
        if manifest:
            (tables / "tables.json").write_text(json.dumps({"params": manifest, "tables": {}}))
    return damage


def mole_checkpoint_dropped_in(tmp, good, monkeypatch):
    assert main(["train", "--data", "synthetic", "--vocab", "64", *BASE, "--d-expert", "16", "--steps", "4",
                 "--eval-every", "2", "--kind", "mole", "--out", str(tmp / "mole")]) == 0
    shutil.copy(tmp / "mole" / "checkpoint.npz", good / "checkpoint.npz")


def byte_run_then_new_text(tmp, good, monkeypatch):
    (tmp / "t.txt").write_text("the cat sat on the mat. " * 40)
    assert main(["train", "--data", str(tmp / "t.txt"), "--tokenizer", "byte", *BASE, "--steps", "2",
                 "--eval-every", "2", "--batch-size", "2", "--kind", "dense", "--out", str(tmp / "r")]) == 0
    (tmp / "t.txt").write_text("the dog sat on the rug. " * 40)     # same length, other text


def busy(folder_of):
    """Another holder of the folder's lock (as a running train would be)."""
    def prepare(tmp, good, monkeypatch):
        folder = folder_of(tmp, good)
        folder.mkdir(exist_ok=True)
        held = open(folder / ".minimolkv.lock", "w")
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("minimolkv process 4242 on a-host, since 2026-01-01 00:00:00")
        held.flush()
        monkeypatch.setattr(sys.modules[__name__], "_held_lock", held, raising=False)   # held to the test's end
    return prepare


def api(fn):
    return fn


def tiny(name):
    """A tiny block's (params, forward's output y, its cache, a decode state after 2 tokens)
    for the API rows; attention's state is its KVCache."""
    rng, D = np.random.default_rng(0), 8
    h, e = rng.standard_normal((2, 3, D)), rng.standard_normal((2, 3, D))
    if name == "attention":
        p = attention.init(rng, D, 2)
        y, cache = attention.forward(p, h, 2)
        kv = attention.decode_step(p, h[:, 1], 2, attention.decode_step(p, h[:, 0], 2)[1])[1]
        return p, y, cache, kv
    module = {"ffn": ffn, "moe": moe, "mole": mole, "molkv": molkv, "ctxattn": ctxattn}[name]
    sizes = {"ffn": (D, 8), "moe": (D, 8, 2), "mole": (D, 8, 2), "molkv": (D, 8, 2, 4), "ctxattn": (D, 4)}[name]
    p = module.init(rng, *sizes)
    y, cache = module.forward(p, h, e) if name in ("mole", "molkv") else module.forward(p, h)
    luts, state = module.build_lut(p, rng.standard_normal((5, D))), None
    for t in range(2):
        state = module.decode_step(p, h[:, t], np.array([1, 2]), luts, state)[1]
    return p, y, cache, state


def step_with(name, change, **options):
    """decode_step of block `name` (molkv, ctxattn, attention) from its state after 2 tokens, changed."""
    p, _, _, state = tiny(name)
    h_t = np.zeros((2, 8))
    if name == "attention":
        return attention.decode_step(p, h_t, 2, change(state))
    luts = molkv.build_lut(p, np.zeros((5, 8))) if name == "molkv" else {}
    return {"molkv": molkv, "ctxattn": ctxattn}[name].decode_step(p, h_t, np.array([1, 2]), luts, change(state))


def model_cache(kind="dense"):
    """A tiny model's training-mode forward: (its cache, the model's Config)."""
    config = model.Config(kind=kind, vocab_size=8, d_model=8, n_heads=2, context_len=4, d_ff=8, d_expert=8, d_key=4)
    ids = np.array([[1, 2, 3]])
    return model.forward(model.init(config, dtype=np.float64), config, ids, ids)[2], config


def experts_cut():
    """A MoLKV model's cache whose layers' expert caches lack their attention."""
    cache = model_cache("molkv")[0]
    layers = [layer._replace(experts=layer.experts._replace(attend=None)) for layer in cache.layers]
    return cache._replace(layers=layers)


def dense(**change):
    return model.Config(kind="dense", vocab_size=8, d_model=8, n_heads=2, context_len=4, d_ff=8, **change)


CASES = [
    # --- train: data ---------------------------------------------------------------------------
    Bad("data shorter than the context", ["train", "--data", "{tmp}/three.txt", "--tokenizer", "byte", *TINY,
                                          "--out", "{tmp}/o"],
        ("training part", "2 tokens", "context_len + 1 = 17", "--context-len"), write("three.txt", b"abc")),
    Bad("validation part shorter than the context", ["train", "--data", "{tmp}/t.txt", "--tokenizer", "byte", *TINY,
                                                     "--out", "{tmp}/o"],
        ("validation part", "context_len + 1 = 17", "--context-len"), write("t.txt", b"x" * 100)),
    Bad("data a missing file", ["train", *TINY, "--data", "{tmp}/missing.txt", "--out", "{tmp}/o"],
        ("--data", "no file", "'shakespeare', 'stdlib', 'synthetic'")),
    Bad("data a FIFO", ["train", *TINY, "--data", "{tmp}/fifo", "--out", "{tmp}/o"],
        ("--data", "not a regular file", "UTF-8 text file"), fifo),
    Bad("data not UTF-8", ["train", *TINY, "--data", "{tmp}/l.txt", "--out", "{tmp}/o"],
        ("--data", "not UTF-8", "convert the file to UTF-8"), write("l.txt", "caf\xe9 " .encode("latin-1") * 50)),
    Bad("data an empty name", ["train", *TINY, "--data", "", "--out", "{tmp}/o"],
        ("--data", "'shakespeare', 'stdlib', 'synthetic' or a path")),
    Bad("vocab below the synthetic task's", ["train", "--data", "synthetic", "--vocab", "10", *TINY, "--out", "{tmp}/o"],
        ("--data", "vocab_size must be >= 21")),
    # --- train: options ------------------------------------------------------------------------
    Bad("lr zero", [*TRAIN, "--lr", "0", "--out", "{tmp}/o"], ("--lr", "> 0 and finite")),
    Bad("lr infinite", [*TRAIN, "--lr", "inf", "--out", "{tmp}/o"], ("--lr", "> 0 and finite", "got inf")),
    Bad("lr NaN", [*TRAIN, "--lr", "nan", "--out", "{tmp}/o"], ("--lr", "finite")),
    Bad("steps zero", [*TRAIN, "--steps", "0", "--out", "{tmp}/o"], ("--steps", ">= 1")),
    Bad("d-ff negative", [*TRAIN, "--d-ff", "-1", "--out", "{tmp}/o"], ("--d-ff", ">= 0")),
    Bad("heads not dividing d_model", [*TRAIN, "--n-heads", "3", "--out", "{tmp}/o"], ("n_heads=3", "divide d_model")),
    Bad("lr so large the run diverges", [*TRAIN, "--lr", "1e300", "--out", "{tmp}/o"],
        ("became", "no checkpoint was written", "lower learning rate")),
    # --- train: memory -------------------------------------------------------------------------
    Bad("batch too large for memory", [*TRAIN, "--vocab", "100000", "--batch-size", "1000000000", "--out", "{tmp}/o"],
        ("batch_size=1000000000", "of memory", "of RAM", "smaller sizes")),
    Bad("context too large for memory", [*TRAIN, "--context-len", "50000", "--out", "{tmp}/o"],
        ("context_len=50000", "(B,T,T,N) MoLKV scores", "of RAM")),
    Bad("d_model too large for memory", [*TRAIN, "--d-model", "100000000", "--n-heads", "1", "--out", "{tmp}/o"],
        ("d_model=100000000", "of RAM")),
    # --- train: --out --------------------------------------------------------------------------
    Bad("out a regular file", [*TRAIN, "--out", "{tmp}/f"], ("--out", "is a file", "give a folder"),
        write("f", b"x")),
    Bad("out inside a regular file", [*TRAIN, "--out", "{tmp}/f/sub"], ("--out", "cannot be written", "Not a directory"),
        write("f", b"x")),
    Bad("out read-only", [*TRAIN, "--out", "{tmp}/ro"], ("--out", "cannot be written", "Permission denied"),
        read_only_out),
    Bad("out holds another run", [*TRAIN, "--out", "{good}"], ("--out", "already holds a run (step 4)", "--resume",
                                                               "--overwrite")),
    # --- train --resume ------------------------------------------------------------------------
    Bad("resume with an explicit default kind", ["train", "--resume", "{good}", "--kind", "molkv"],
        ("drop --kind", "only --steps, --out and --overwrite")),
    Bad("resume with the default data named", ["train", "--resume", "{good}", "--data", "shakespeare"],
        ("drop --data", "only --steps")),
    Bad("resume with an option typed as 0", ["train", "--resume", "{good}", "--d-ff", "0"],
        ("drop --d-ff", "only --steps")),
    Bad("resume with seed 0 typed", ["train", "--resume", "{good}", "--seed", "0"], ("drop --seed", "only --steps")),
    Bad("resume with steps behind it", ["train", "--resume", "{good}", "--steps", "2"],
        ("--steps 2 is behind the checkpoint (step 4)", ">= 4")),
    Bad("resume from nowhere", ["train", "--resume", "{tmp}/nowhere"], ("not a checkpoint folder", "does not exist")),
    Bad("resume into another run", ["train", "--resume", "{good}", "--out", "{tmp}/other", "--steps", "6"],
        ("--out", "already holds a run", "--overwrite"),
        lambda tmp, good, mp: shutil.copytree(good, tmp / "other")),
    # --- Ctrl-C ----------------------------------------------------------------------------------
    Bad("ctrl-c after a checkpoint", [*TRAIN, "--out", "{tmp}/o"],
        ("interrupted at step 3", "the last checkpoint (step 2)", "continue with: python -m minimolkv train --resume"),
        interrupt_at_batch(4), code=130),
    Bad("ctrl-c before any checkpoint", [*TRAIN, "--out", "{tmp}/o"],
        ("interrupted at step 0", "first checkpoint (due at step 2)", "nothing was saved"),
        interrupt_at_batch(1), code=130),
    Bad("ctrl-c in a resumed run going further", ["train", "--resume", "{good}", "--steps", "10"],
        ("interrupted at step 4", "(step 4) is in", "--resume", "--steps 10"), interrupt_at_batch(1), code=130),
    Bad("ctrl-c in a run resumed elsewhere", ["train", "--resume", "{good}", "--steps", "10", "--out", "{tmp}/b"],
        ("(step 4) is in", "--steps 10 --out"), interrupt_at_batch(1), code=130),
    # --- sample ----------------------------------------------------------------------------------
    Bad("tokens beyond the limit", ["sample", "--checkpoint", "{good}", "--tokens", "10000000000000"],
        ("--tokens", "at most 1,000,000")),
    Bad("temperature negative", ["sample", "--checkpoint", "{good}", "--temperature", "-1"],
        ("--temperature", ">= 0")),
    Bad("prompt empty", ["sample", "--checkpoint", "{good}", "--prompt", "  "], ("--prompt", "empty")),
    Bad("prompt not in the vocabulary", ["sample", "--checkpoint", "{good}", "--prompt", "hello"],
        ("--prompt", "'hello'", "not a token name")),
    Bad("checkpoint missing", ["sample", "--checkpoint", "{tmp}"], ("not a checkpoint folder", "no checkpoint.npz")),
    Bad("lookup-table folder in the way", ["sample", "--checkpoint", "{good}"], ("luts-", "in the way", "move it"),
        lambda tmp, good, mp: luts_in_the_way(good)),
    Bad("NaN in a lookup table", ["sample", "--checkpoint", "{good}"], (".npy", "NaN", "delete", "rebuilt"),
        lambda tmp, good, mp: nan_in_a_table(good)),
    # --- damaged, edited or hostile checkpoints (sample loads them like train --resume) -----------
    *[Bad(f"checkpoint: {name}", ["sample", "--checkpoint", "{good}", "--tokens", "2"], says,
          (lambda damage: lambda tmp, good, mp: damage(good))(damage)) for name, damage, says in [
        ("truncated", lambda g: (g / "checkpoint.npz").write_bytes((g / "checkpoint.npz").read_bytes()[:999]),
         ("checkpoint.npz is damaged or truncated",)),
        ("an object array", lambda g: rewrite(g, arrays=object_array),
         ("object array", "never unpickled")),
        ("a header claiming 3.6 TiB", lying_header, ("params.ln_f", "header promises shape (1000000000000, 1000)")),
        ("compressed", compressed, ("uncompressed .npy",)),
        ("NaN parameters", lambda g: rewrite(g, arrays=lambda a: a["params.lm_head"].__setitem__((0, 0), np.nan)),
         ("lm_head", "NaN or infinite", "finite numbers only")),
        ("inf in the optimizer", lambda g: rewrite(g, arrays=lambda a: a["adamw.m.ln_f"].__setitem__(0, np.inf)),
         ("adamw.m.ln_f", "NaN or infinite")),
        ("optimizer dtype",
         lambda g: rewrite(g, arrays=lambda a: a.__setitem__("adamw.v.ln_f", a["adamw.v.ln_f"].astype(np.float64))),
         ("adamw.v.ln_f", "dtype float64", "must match params.ln_f")),
        ("optimizer shape", lambda g: rewrite(g, arrays=lambda a: a.__setitem__("adamw.m.ln_f", a["adamw.m.ln_f"][:3])),
         ("adamw.m.ln_f", "shape (3,)", "must match")),
        ("optimizer key missing", lambda g: rewrite(g, arrays=lambda a: (a.pop("adamw.m.ln_f"), a.pop("adamw.v.ln_f"))),
         ("does not fit the parameters: adamw.m lacks ['ln_f']",)),
        ("optimizer step a vector", lambda g: rewrite(g, arrays=lambda a: a.__setitem__("adamw.t", np.array([4, 4]))),
         ("adamw.t", "one integer")),
        ("optimizer second moment negative",
         lambda g: rewrite(g, arrays=lambda a: a["adamw.v.ln_f"].__setitem__(0, -1.0)),
         ("adamw.v.ln_f", "negative", ">= 0")),
        ("an unexpected array", lambda g: rewrite(g, arrays=lambda a: a.__setitem__("extra", np.ones(2))),
         ("unexpected arrays ['extra']",)),
        ("metrics not a list", lambda g: rewrite(g, meta=set_item("metrics", {"a": 1})),
         ("metrics must be a JSON list",)),
        ("a metric a string", lambda g: rewrite(g, meta=lambda m: m["metrics"][0].__setitem__("lr", "x")),
         ("metrics[0]", "numbers")),
        ("prompt a number", lambda g: rewrite(g, meta=set_item("prompt", 7)), ("prompt must be a JSON str",)),
        ("step a vector", lambda g: rewrite(g, meta=set_item("step", [4, 4])), ("step must be an integer >= 0",)),
        ("step not the optimizer's", lambda g: rewrite(g, meta=set_item("step", 3)), ("adamw.t = 4", "step 3")),
        ("metadata a JSON list", lambda g: rewrite(g, raw=b"[1, 2]"), ("must be a JSON object", "list")),
        ("metadata nested 100,000 deep", lambda g: rewrite(g, raw=b"[" * 100_000 + b"]" * 100_000),
         ("nests deeper than",)),
        ("metadata with NaN", lambda g: rewrite(g, raw=b'{"step": NaN}'), ("NaN is not allowed", "finite")),
        ("metadata missing keys", lambda g: rewrite(g, meta=lambda m: m.pop("rng")), ("lacks ['rng']",)),
        ("format unknown", lambda g: rewrite(g, meta=set_item("format", 99)), ("format 99", "reads 1 and 2")),
        ("model config unknown field", lambda g: rewrite(g, meta=lambda m: m["model"].__setitem__("depth", 3)),
         ("model has unknown fields ['depth']", "vocab_size")),
        ("settings lr infinite", lambda g: rewrite(g, text=lambda t: t.replace('"lr": 0.003', '"lr": 1e999')),
         ("1e999", "finite")),
        ("settings missing the learning rate", lambda g: rewrite(g, meta=lambda m: m["settings"].pop("lr")),
         ("settings has no ['lr']", "fields of Settings")),
        ("generator state out of range",
         lambda g: rewrite(g, meta=lambda m: m["rng"]["state"].__setitem__("state", 2 ** 200)),
         ("rng must be the state of numpy's PCG64 generator", "OverflowError")),
        ("generator of another kind",
         lambda g: rewrite(g, meta=lambda m: m["rng"].__setitem__("bit_generator", "MT19937")),
         ("rng must be the state", "PCG64")),
        ("tokenizer missing its names", lambda g: rewrite(g, meta=lambda m: m["tokenizer"].pop("names")),
         ("'ids' tokenizer dict needs 'names'",)),
        ("tokenizer of another vocabulary", lambda g: rewrite(
            g, meta=lambda m: m["tokenizer"].__setitem__("names", m["tokenizer"]["names"][:-1])),
         ("63 token ids", "vocab_size=64")),
        ("config.json a JSON list", lambda g: (g / "config.json").write_text("[]"),
         ("config.json holds a JSON list", "delete it")),
        ("config.json edited: window", lambda g: edit_copy(g, lambda m: {**m, "model": {**m["model"], "window": 2}}),
         ("config.json does not match checkpoint.npz", "model.window: 2 in config.json, None in checkpoint.npz",
          "cannot be changed", "delete it")),
    ]],
    # --- compare ---------------------------------------------------------------------------------
    Bad("compare diverging", ["compare", *SYN_DENSE, "--context-len", "64", "--steps", "2", "--eval-every", "2",
                              "--seeds", "1",
                              "--entries", "dense", "--lr", "1e300", "--out", "{tmp}/c"],
        ("dense, seed 0", "became", "lower learning rate")),
    Bad("compare with no dense FFN", ["compare", *SYN, "--d-ff", "0", "--out", "{tmp}/c"],
        ("entry 'moe'", "d_expert must be >= 1")),
    Bad("compare out a file", ["compare", *SYN, "--out", "{tmp}/f"], ("--out", "is a file"), write("f", b"x")),
    Bad("compare save-params in a file", ["compare", *SYN, "--out", "{tmp}/c", "--save-params", "{tmp}/f/p"],
        ("--save-params", "cannot be written"), write("f", b"x")),
    Bad("info heads not dividing", ["info", "--n-heads", "3"], ("n_heads=3", "divide")),
    Bad("gradcheck unknown check", ["gradcheck", "--only", "nope"], ("unknown check 'nope'", "choose from")),
    # --- round 3: nothing lost -------------------------------------------------------------------
    Bad("resume empty (an unset variable) with --overwrite", ["train", "--resume", "", "--overwrite"],
        ("--resume is empty", "give a folder"), default_run_in_cwd),
    Bad("out empty", [*TRAIN, "--out", ""], ("--out is empty",), default_run_in_cwd),
    Bad("sample checkpoint empty", ["sample", "--checkpoint", ""], ("--checkpoint is empty",)),
    Bad("compare save-params empty", ["compare", *SYN, "--out", "{tmp}/c", "--save-params", ""],
        ("--save-params is empty",)),
    Bad("out holds the user's config.json, metrics.csv, loss.png", [*TRAIN, "--out", "{tmp}/mine"],
        ("--out", "config.json, metrics.csv, loss.png", "would be overwritten", "--overwrite"),
        files_of(["config.json", "metrics.csv", "loss.png", "notes.txt"])),
    Bad("out holds the user's metrics.csv only", [*TRAIN, "--out", "{tmp}/mine"], ("metrics.csv", "--overwrite"),
        files_of(["metrics.csv"])),
    Bad("resume elsewhere into the user's loss.png",
        ["train", "--resume", "{good}", "--steps", "6", "--out", "{tmp}/mine"], ("loss.png", "--overwrite"),
        files_of(["loss.png"])),
    Bad("compare out holds results",
        ["compare", *SYN_DENSE, "--entries", "dense", "--seeds", "1", "--out", "{tmp}/mine"],
        ("results.md", "results.csv", "would be overwritten", "--overwrite"),
        files_of(["results.md", "results.csv"])),
    Bad("compare save-params holds parameters", ["compare", *SYN_DENSE, "--entries", "dense", "--seeds", "1", "--out",
                                                 "{tmp}/c", "--save-params", "{tmp}/mine"],
        ("dense-seed0.npz", "--overwrite"), files_of(["dense-seed0.npz"])),
    Bad("overwrite a run, diverging before the first save", [*TRAIN, "--lr", "1e300", "--out", "{good}", "--overwrite"],
        ("became", "no checkpoint was written", "is unchanged")),
    Bad("overwrite a run, Ctrl-C before the first save", [*TRAIN, "--out", "{good}", "--overwrite"],
        ("interrupted at step 0", "the run already in", "is unchanged"), interrupt_at_batch(1), code=130),
    # --- round 3: one writer per folder ----------------------------------------------------------
    Bad("resume a run another process is training", ["train", "--resume", "{good}", "--steps", "6"],
        ("--out", "is in use by minimolkv process 4242", "wait for it"), busy(lambda tmp, good: good)),
    Bad("out in use by another process", [*TRAIN, "--out", "{tmp}/busy"], ("--out", "process 4242", "another --out"),
        busy(lambda tmp, good: tmp / "busy")),
    Bad("compare out in use", ["compare", *SYN, "--out", "{tmp}/busy"], ("--out", "process 4242"),
        busy(lambda tmp, good: tmp / "busy")),
    Bad("the lock file a link to the user's file", [*TRAIN, "--out", "{tmp}/o"], ("lock file", "a link"),
        lambda tmp, good, mp: ((tmp / "mine.txt").write_text("mine"), (tmp / "o").mkdir(),
                               (tmp / "o" / files.LOCK).symlink_to(tmp / "mine.txt"))),
    # --- round 3: options that mean nothing ------------------------------------------------------
    Bad("variant for a MoLE model", ["train", "--data", "synthetic", "--vocab", "64", *BASE, "--kind", "mole",
                                     "--variant", "recency", "--out", "{tmp}/o"],
        ("--variant means nothing for --kind mole", "only molkv", "drop it")),
    Bad("top-k for a MoLKV model",
        [*TRAIN, "--kind", "molkv", "--variant", "joint", "--top-k", "1", "--out", "{tmp}/o"],
        ("--top-k means nothing for --kind molkv", "only moe")),
    Bad("experts for a dense model", ["train", "--data", "synthetic", *BASE, "--kind", "dense", "--n-experts", "8",
                                      "--out", "{tmp}/o"],
        ("--n-experts means nothing for --kind dense",)),
    Bad("window for MoE in info", ["info", "--kind", "moe", "--window", "4"], ("--window", "only molkv, ctxattn")),
    Bad("d-key for MoLE in info", ["info", "--kind", "mole", "--d-key", "8"], ("--d-key", "--kind mole")),
    Bad("compare top-k (its moe entry keeps 2)", ["compare", *SYN, "--top-k", "1", "--out", "{tmp}/c"],
        ("--top-k means nothing for the entries", "drop it")),
    Bad("compare window without an entry reading it",
        ["compare", *SYN_DENSE, "--entries", "dense", "moe", "--window", "4", "--out", "{tmp}/c"],
        ("--window means nothing for the entries dense moe", "only molkv, ctxattn")),
    Bad("bench d-key for dense", ["bench", "--quick", "--kinds", "dense", "--d-key", "8"],
        ("--d-key means nothing for the kinds dense",)),
    Bad("vocab below the byte ids with BPE", ["train", "--data", "{tmp}/t.txt", "--vocab", "100", *TINY, "--out",
                                              "{tmp}/o"], ("--vocab 100", "--vocab >= 256", "--tokenizer byte"),
        write("t.txt", b"some text " * 50)),
    Bad("overwrite a run resumed in its own folder", ["train", "--resume", "{good}", "--steps", "6", "--overwrite"],
        ("--overwrite means nothing", "its own folder")),
    Bad("sample top-k with greedy decoding", ["sample", "--checkpoint", "{good}", "--temperature", "0", "--top-k", "3"],
        ("--top-k 3 means nothing", "--temperature 0")),
    Bad("sample top-k past the vocabulary", ["sample", "--checkpoint", "{good}", "--top-k", "1000"],
        ("--top-k 1000 means nothing", "64 token ids")),
    Bad("vocab with the byte tokenizer", ["train", "--data", "{tmp}/t.txt", "--tokenizer", "byte", "--vocab", "300",
                                          *TINY, "--out", "{tmp}/o"], ("--vocab means nothing", "byte", "256")),
    Bad("tokenizer with synthetic data", [*TRAIN, "--tokenizer", "byte", "--out", "{tmp}/o"],
        ("--tokenizer means nothing for --data synthetic",)),
    Bad("resume after the data file was replaced", ["train", "--resume", "{tmp}/r", "--steps", "4"],
        ("not the text this run was trained on", "restore it"), byte_run_then_new_text),
    Bad("resume a float32 run labelled float64", ["train", "--resume", "{good}", "--steps", "6"],
        ("settings.dtype is 'float64'", "float32"),
        lambda tmp, good, mp: rewrite(good, meta=lambda m: m["settings"].__setitem__("dtype", "float64"))),
    # --- round 3: no hang ------------------------------------------------------------------------
    Bad("two million layers", [*TRAIN, "--n-layers", "2000000", "--out", "{tmp}/o"], ("n_layers=2000000", "of RAM")),
    Bad("bench at sizes that cannot fit", ["bench", "--kinds", "dense", "--d-model", "100000000", "--n-heads", "1"],
        ("d_model=100000000", "of RAM", "smaller sizes")),
    # --- round 3: OS errors ----------------------------------------------------------------------
    Bad("data without read permission", ["train", "--data", "{tmp}/t.txt", "--tokenizer", "byte", *TINY,
                                         "--out", "{tmp}/o"], ("--data", "t.txt", "cannot be read", "permissions"),
        unreadable),
    Bad("data larger than the machine's RAM", ["train", "--data", "{tmp}/huge.txt", "--tokenizer", "byte", *TINY,
                                               "--out", "{tmp}/o"], ("--data", "huge.txt", "of RAM", "smaller text file"),
        data_larger_than_ram),
    Bad("data too large for memory", ["train", "--data", "{tmp}/big.txt", "--tokenizer", "byte", *TINY,
                                      "--out", "{tmp}/o"], ("--data", "big.txt", "out of memory", "smaller text file"),
        out_of_memory_reading),
    Bad("disk full at a fresh run's first save", [*TRAIN, "--out", "{tmp}/o"],
        ("cannot write", "checkpoint.npz", "No space left on device", "free some disk space", "nothing was saved"),
        os_error(errno.ENOSPC)),
    Bad("disk full while a resumed run saves", ["train", "--resume", "{good}", "--steps", "6"],
        ("checkpoint.npz", "No space left on device", "the last checkpoint (step 4)", "is intact"),
        os_error(errno.ENOSPC)),
    Bad("file-size limit below the checkpoint", ["train", "--resume", "{good}", "--steps", "6"],
        ("File too large", "ulimit -f", "(step 4)", "is intact"), os_error(errno.EFBIG)),
    Bad("disk full while overwriting a run", [*TRAIN, "--out", "{good}", "--overwrite"],
        ("No space left on device", "the run already in", "is unchanged"), os_error(errno.ENOSPC)),
    Bad("disk full while compare saves",
        ["compare", "--data", "{tmp}/t.txt", "--tokenizer", "byte", *BASE, "--entries", "dense", "--seeds", "1",
         "--steps", "2", "--eval-every", "2", "--out", "{tmp}/c"],
        ("val_curves.png", "No space left on device", "free disk space"), full_disk_at_the_plot),
    *[Bad(f"checkpoint: {name}", ["sample", "--checkpoint", "{good}", "--tokens", "2"], says,
          (lambda damage: lambda tmp, good, mp: damage(good))(damage)) for name, damage, says in [
        ("a member flagged encrypted", flag_encrypted, ("checkpoint.npz is damaged", "encrypted", "restore a copy")),
        ("a quote of an .npy header changed", damaged_npy_header(b"'", b'"'), ("damaged .npy header", "checkpoint.npz")),
        ("a bracket of an .npy header changed", damaged_npy_header(b"}", b"("),
         ("damaged .npy header (TokenError)", "checkpoint.npz")),
        ("3,000 unexpected arrays", lambda g: rewrite(g, arrays=lambda a: a.update(
            {f"x{i}": np.zeros(1, np.uint8) for i in range(3_000)})), ("unexpected arrays", "and 2,997 more")),
        ("tables of other parameters", other_tables(scale=2.0), ("does not hold these parameters' table", "delete",
                                                                 "rebuilt")),
        ("tables.json naming other parameters", other_tables(manifest="0123456789ab"),
         ("tables.json", "another model", "delete", "rebuilt")),
    ]],
    Bad("a MoLE checkpoint.npz dropped into a MoLKV folder", ["sample", "--checkpoint", "{good}"],
        ("config.json does not match checkpoint.npz", "model.kind: 'molkv' in config.json, 'mole' in checkpoint.npz"),
        mole_checkpoint_dropped_in),
    # --- the API ---------------------------------------------------------------------------------
    Bad("Settings(lr=inf)", api(lambda tmp, good: train.Settings(lr=float("inf"))), ("lr", "finite number > 0")),
    Bad("Settings(clip=nan)", api(lambda tmp, good: train.Settings(clip=float("nan"))), ("clip", "finite")),
    Bad("Settings(warmup=-1)", api(lambda tmp, good: train.Settings(warmup=-1)), ("warmup", "integer >= 0")),
    Bad("Settings(min_lr_ratio=2)", api(lambda tmp, good: train.Settings(min_lr_ratio=2)), ("min_lr_ratio", "[0, 1]")),
    Bad("DataSpec(tokenizer='x')", api(lambda tmp, good: data.DataSpec(tokenizer="x")), ("tokenizer", "'bpe', 'byte'")),
    Bad("tokenizer_from_dict without merges", api(lambda tmp, good: tokenizer_from_dict({"kind": "bpe"})),
        ("'merges'", "list of [id, id] pairs")),
    Bad("tokenizer_from_dict without names", api(lambda tmp, good: tokenizer_from_dict({"kind": "ids"})),
        ("'names'", "list of strings")),
    Bad("BPE merges that double", api(lambda tmp, good: BPETokenizer([(0, 0)] + [(256 + k, 256 + k) for k in range(60)])),
        ("merges", "bytes in all")),
    Bad("cross-entropy target -1", api(lambda tmp, good: ops.cross_entropy_forward(np.zeros((2, 3)), np.array([0, -1]))),
        ("targets", "-1", "[0, 3)")),
    Bad("cross-entropy target out of range", api(lambda tmp, good: ops.cross_entropy_forward(np.zeros((2, 3)),
                                                                                              np.array([0, 3]))),
        ("targets", "3", "[0, 3)")),
    Bad("generate n_tokens -1", api(lambda tmp, good: generate.generate(
        model.init(model.Config(kind="dense", vocab_size=8, d_model=8, n_heads=2, context_len=4, d_ff=8)),
        model.Config(kind="dense", vocab_size=8, d_model=8, n_heads=2, context_len=4, d_ff=8), np.array([1]), -1)),
        ("n_tokens", ">= 0")),
    Bad("memory check", api(lambda tmp, good: memory.check_fits(model.Config(), 16, ram=2 ** 20)),
        ("this model needs about", "this machine has 1.0 MiB of RAM")),
    Bad("train on data shorter than the context", api(lambda tmp, good: train.train(
        *_short_run(), log=lambda line: None)), ("validation part", "context_len + 1 = 33")),
    Bad("load a checkpoint with a lying header", api(lambda tmp, good: checkpoint.load(good)),
        ("header promises",), lambda tmp, good, mp: lying_header(good)),
    # a backward's cache: of its block's forward, whole
    Bad("molkv.backward(dy, None)", api(lambda tmp, good: molkv.backward(tiny("molkv")[1], None)),
        ("cache must be the MolkvCache or GatedCache returned by molkv.forward", "got NoneType")),
    Bad("molkv.backward with a MoLE cache", api(lambda tmp, good: molkv.backward(tiny("molkv")[1], tiny("mole")[2])),
        ("cache must be the MolkvCache", "got MoleCache")),
    Bad("molkv.backward with a cut cache", api(lambda tmp, good: molkv.backward(tiny("molkv")[1],
                                                                                tiny("molkv")[2][:4])),
        ("cache must be the MolkvCache", "got tuple")),
    Bad("molkv.backward with a cache lacking P", api(lambda tmp, good: molkv.backward(
        tiny("molkv")[1], tiny("molkv")[2]._replace(attend=tiny("molkv")[2].attend._replace(P=None)))),
        ("cache.attend.P must be ndarray", "got NoneType")),
    Bad("mole.backward with a MoLKV cache", api(lambda tmp, good: mole.backward(tiny("mole")[1], tiny("molkv")[2])),
        ("cache must be the MoleCache returned by mole.forward", "got MolkvCache")),
    Bad("moe.backward(dy, None)", api(lambda tmp, good: moe.backward(tiny("moe")[1], None)),
        ("cache must be the MoeCache returned by moe.forward", "got NoneType")),
    Bad("ffn.backward with a cut cache", api(lambda tmp, good: ffn.backward(tiny("ffn")[1], tiny("ffn")[2][:2])),
        ("cache must be the FfnCache returned by ffn.forward", "got tuple")),
    Bad("ffn.backward with a cache lacking its gelu", api(lambda tmp, good: ffn.backward(
        tiny("ffn")[1], tiny("ffn")[2]._replace(gelu=None))), ("cache.gelu must be GeluCache", "got NoneType")),
    Bad("attention.backward with an FFN cache", api(lambda tmp, good: attention.backward(tiny("attention")[1],
                                                                                       tiny("ffn")[2])),
        ("cache must be the AttentionCache returned by attention.forward", "got FfnCache")),
    Bad("ctxattn.backward(dy, None)", api(lambda tmp, good: ctxattn.backward(tiny("ctxattn")[1], None)),
        ("cache must be the CtxattnCache returned by ctxattn.forward", "got NoneType")),
    Bad("model.backward(None)", api(lambda tmp, good: model.backward(None)),
        ("cache must be the ModelCache of a training-mode model.forward", "got NoneType")),
    Bad("model.backward with a cut cache", api(lambda tmp, good: model.backward(model_cache()[0][:4])),
        ("cache must be the ModelCache", "got tuple")),
    Bad("model.backward with a layer cut", api(lambda tmp, good: model.backward(
        model_cache()[0]._replace(layers=model_cache()[0].layers[:0]))), ("cache.layers", "the 2 layers' caches")),
    Bad("model.backward with a layer's cache lacking attn", api(lambda tmp, good: model.backward(
        model_cache()[0]._replace(layers=[model_cache()[0].layers[0]._replace(attn=None)] * 2))),
        ("cache.layers[0].attn must be AttentionCache", "got NoneType")),
    Bad("model.backward with a layer's MoLKV cache cut", api(lambda tmp, good: model.backward(experts_cut())),
        ("cache.layers[0].experts.attend must be AttendCache", "got NoneType")),
    Bad("model.backward dloss nan", api(lambda tmp, good: model.backward(model_cache()[0], float("nan"))),
        ("dloss must be a finite number", "nan")),
    # a decode state: its length within its buffers
    Bad("molkv.decode_step state length -1", api(lambda tmp, good: step_with("molkv", lambda s: s._replace(length=-1))),
        ("state.length must be an integer in [0, 16]", "got -1")),
    Bad("molkv.decode_step state length past the buffer", api(lambda tmp, good: step_with(
        "molkv", lambda s: s._replace(length=17))), ("state.length must be an integer in [0, 16]", "got 17")),
    Bad("molkv.decode_step state without buffers", api(lambda tmp, good: step_with(
        "molkv", lambda s: s._replace(k_buffer=None))), ("state.k_buffer must be a numpy array", "NoneType")),
    Bad("ctxattn.decode_step state length -3", api(lambda tmp, good: step_with(
        "ctxattn", lambda s: s._replace(length=-3))), ("state.length must be an integer in [0, 16]", "got -3")),
    Bad("ctxattn.decode_step state length 2.0", api(lambda tmp, good: step_with(
        "ctxattn", lambda s: s._replace(length=2.0))), ("state.length must be an integer", "got 2.0")),
    Bad("attention.decode_step kv length past the buffer", api(lambda tmp, good: step_with(
        "attention", lambda kv: kv._replace(length=40))), ("kv.length must be an integer in [0, 16]", "got 40")),
    Bad("attention.decode_step kv without its values", api(lambda tmp, good: step_with(
        "attention", lambda kv: kv._replace(v_buffer=None))), ("kv.v_buffer must be a numpy array", "NoneType")),
    # model.init: a float dtype and a seed >= 0
    Bad("model.init dtype int32", api(lambda tmp, good: model.init(dense(), dtype=np.int32)),
        ("dtype must be float32 or float64", "got int32")),
    Bad("model.init dtype bool", api(lambda tmp, good: model.init(dense(), dtype=bool)), ("dtype", "got bool")),
    Bad("model.init seed -1", api(lambda tmp, good: model.init(dense(), seed=-1)), ("seed must be an integer >= 0",
                                                                                    "got -1")),
    Bad("model.init seed 1.5", api(lambda tmp, good: model.init(dense(), seed=1.5)), ("seed", "got 1.5")),
    # zero-size batches
    Bad("cross-entropy on zero tokens", api(lambda tmp, good: ops.cross_entropy_forward(np.zeros((0, 3)),
                                                                                         np.zeros(0, int))),
        ("logits must be (..., V): at least one token", "(0, 3)")),
    Bad("generate 0 prompts", api(lambda tmp, good: generate.generate(model.init(dense()), dense(),
                                                                       np.zeros((0, 2), int), 3)),
        ("prompt_ids", "B >= 1", "(0, 2)")),
    Bad("model.forward on 0 sequences", api(lambda tmp, good: model.forward(model.init(dense()), dense(),
                                                                             np.zeros((0, 2), int))),
        ("ids must be a (B,T) array", "B >= 1", "(0, 2)")),
    Bad("molkv.forward on 0 sequences", api(lambda tmp, good: molkv.forward(tiny("molkv")[0], np.zeros((0, 3, 8)),
                                                                             np.zeros((0, 3, 8)))),
        ("h must not be empty", "(0, 3, 8)")),
    Bad("molkv.decode_step on 0 sequences", api(lambda tmp, good: molkv.decode_step(
        tiny("molkv")[0], np.zeros((0, 8)), np.zeros(0, int), {"k": np.zeros((5, 2, 4)), "v": np.zeros((5, 2, 8))},
        None)),
        ("h_t must not be empty", "(0, 8)")),
]


def _short_run():
    spec = data.DataSpec(name="synthetic", vocab_size=64)
    dataset = spec.load()
    dataset = dataclasses.replace(dataset, val=dataset.val[:20])
    config = model.Config(kind="dense", vocab_size=64, context_len=32, d_model=16, n_heads=2, d_ff=16)
    return train.new_run(config, train.Settings(steps=2, batch_size=2), spec, dataset), dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny MoLKV run on the synthetic task, 4 steps (checkpoints at 2 and 4)."""
    folder = tmp_path_factory.mktemp("good") / "run"
    assert main([*TRAIN, "--variant", "joint", "--out", str(folder)]) == 0
    return folder


def run_cli(argv, capsys):
    """main(argv) in-process -> (exit code, stdout, stderr); an uncaught exception becomes
    its traceback in stderr, as `python -m minimolkv` would print it."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    except BaseException:                                   # noqa: B036 -- what a user would see
        captured = capsys.readouterr()
        return 1, captured.out, captured.err + traceback.format_exc()
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_is_one_clear_line(case, trained, tmp_path, capsys, monkeypatch):
    good = tmp_path / "good"
    shutil.copytree(trained, good)
    if case.prepare:
        case.prepare(tmp_path, good, monkeypatch)
    owned = hashes(tmp_path)                                 # what the user has before the command
    if callable(case.run):
        with pytest.raises((ValueError, TypeError, FileNotFoundError)) as info:
            case.run(tmp_path, good)
        message = str(info.value)
        assert "\n" not in message
    else:
        argv = [a.format(tmp=tmp_path, good=good) for a in case.run]
        code, out, err = run_cli(argv, capsys)
        assert "Traceback" not in out + err, err
        lines = err.strip().splitlines()
        assert code == case.code, err
        assert len(lines) == 1, err
        message = lines[0]
    for words in case.says:
        assert words in message, message
    assert len(message) <= 700, message                      # one line of bounded length
    monkeypatch.undo()                                       # (reading the files back needs the real os)
    after = hashes(tmp_path)
    changed = sorted(str(p.relative_to(tmp_path)) for p in owned if after.get(p) != owned[p])
    assert not changed, f"files the user had were changed or removed: {changed}"


def hashes(folder):
    """{path: sha1} of every readable regular file under folder (a FIFO is never opened),
    but for the lock files, which name the last process that held them."""
    def sha1(path):
        with open(path, "rb") as f:                          # (not Path.read_bytes: some rows patch it)
            return hashlib.sha1(f.read()).hexdigest()
    return {p: sha1(p) for p in folder.rglob("*")
            if p.is_file() and not p.is_symlink() and os.access(p, os.R_OK) and p.name != files.LOCK}


def test_the_table_is_large_and_covers_every_command():
    cli = [c for c in CASES if not callable(c.run)]
    assert len(CASES) >= 80 and {c.run[0] for c in cli} >= {"train", "sample", "compare", "info", "gradcheck"}
