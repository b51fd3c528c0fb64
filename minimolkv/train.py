"""Training loop, evaluation and checkpoints.

One step:
    x, y   = get_batch(train ids)                    (B,T), (B,T)
    loss   = model.forward(params, config, x, y)
    grads  = model.backward(cache)                   same keys as params
    clip the global gradient norm, then one AdamW step at lr_schedule(step)

Every `eval_every` steps (and at the end) the validation loss is measured on
the same fixed validation batches, a progress line is printed and a
checkpoint is written. A non-finite loss stops the run with a clear message;
the last checkpoint on disk is the last good one.

A checkpoint is a folder:
    checkpoint.npz   parameters ("params.<name>") and AdamW state ("adamw.*")
    config.json      model config, training settings, data spec, tokenizer,
                     the batch generator's exact state, step, metrics
    metrics.csv      the same metrics, one row per step, for a spreadsheet
Both are written atomically (temporary file + os.replace) and loaded with
allow_pickle=False. Resuming restores everything a step depends on, so a run
interrupted at step k and resumed with the same --steps ends bit-identical to
one that never stopped.
"""

import dataclasses
import json
import math
import os
import time
import zipfile
from dataclasses import dataclass

import numpy as np

from minimolkv import model
from minimolkv.errors import check_positive_int
from minimolkv.lut import atomic_write
from minimolkv.data import get_batch, load_dataset
from minimolkv.optim import adamw_init, adamw_step, clip_grad_norm, lr_schedule, state_from_arrays, \
    state_to_arrays
from minimolkv.tokenizer import tokenizer_from_dict

FORMAT = 1                                   # checkpoint layout version


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the message says where the last good checkpoint is."""


@dataclass(frozen=True)
class Settings:
    """How to train (the model's sizes are in model.Config)."""
    steps: int = 1500
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 30
    weight_decay: float = 0.1
    clip: float = 1.0
    eval_every: int = 50
    eval_batches: int = 8
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "eval_batches"):
            check_positive_int(getattr(self, name), name)
        for name in ("lr", "clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.min_lr_ratio <= 1 or self.weight_decay < 0 or self.warmup < 0:
            raise ValueError("min_lr_ratio must be in [0, 1], weight_decay and warmup >= 0")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")


@dataclass(frozen=True)
class DataSpec:
    """Which data, so a resumed run rebuilds exactly the same token stream."""
    name: str = "stdlib"                     # "stdlib" | "synthetic" | a path
    tokenizer: str = "bpe"                   # "bpe" | "byte" (ignored by synthetic)
    vocab_size: int = 512
    seed: int = 0

    def load(self):
        return load_dataset(self.name, tokenizer=self.tokenizer, vocab_size=self.vocab_size,
                            seed=self.seed)


def evaluate(params, config, ids, settings):
    """Mean loss over `eval_batches` fixed batches (the same every call)."""
    rng = np.random.default_rng(settings.seed + 99991)                # not the training generator
    losses = []
    for _ in range(settings.eval_batches):
        x, y = get_batch(ids, settings.batch_size, config.context_len, rng)   # (B,T), (B,T)
        loss, _, _ = model.forward(params, config, x, y)
        losses.append(float(loss))
    return float(np.mean(losses))


# ----------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------

def save_checkpoint(folder, run):
    """Write run (params, opt, rng, step, config, settings, data, tokenizer, metrics) to `folder`."""
    os.makedirs(folder, exist_ok=True)
    arrays = {"params." + k: v for k, v in run["params"].items()}
    arrays.update(state_to_arrays(run["opt"]))
    arrays["step"] = np.array(run["step"], dtype=np.int64)
    atomic_write(os.path.join(folder, "checkpoint.npz"), lambda f: np.savez(f, **arrays))
    meta = {
        "format": FORMAT,
        "step": run["step"],
        "model": run["config"].to_dict(),
        "settings": dataclasses.asdict(run["settings"]),
        "data": dataclasses.asdict(run["data"]),
        "tokenizer": run["tokenizer"].to_dict(),
        "rng": run["rng"].bit_generator.state,            # exact generator state (big ints are fine in JSON)
        "metrics": run["metrics"],
        "prompt": run["prompt"],
    }
    text = json.dumps(meta, indent=1).encode()
    atomic_write(os.path.join(folder, "config.json"), lambda f: f.write(text))
    atomic_write(os.path.join(folder, "metrics.csv"), lambda f: f.write(metrics_csv(run["metrics"])))


def metrics_csv(rows):
    """The metric rows as CSV bytes (a spreadsheet- or pandas-friendly copy of config.json's)."""
    fields = ["step", "lr", "train_loss", "val_loss", "grad_norm", "tokens_per_s", "elapsed_s"]
    lines = [",".join(fields)]
    for r in rows:
        lines.append(",".join("" if r.get(k) is None else f"{r[k]:.6g}" for k in fields))
    return ("\n".join(lines) + "\n").encode()


def load_checkpoint(folder):
    """The run dict saved by save_checkpoint. Damaged or foreign files raise ValueError."""
    npz_path = os.path.join(folder, "checkpoint.npz")
    json_path = os.path.join(folder, "config.json")
    for path in (npz_path, json_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder!r} is not a checkpoint folder: {os.path.basename(path)} is missing")
    try:
        with open(json_path) as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT:
            raise ValueError(f"unknown checkpoint format {meta.get('format')!r}")
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as err:
        if "allow_pickle" in str(err) or "Object arrays" in str(err):
            raise ValueError(f"{npz_path!r} holds an object array; checkpoints hold numbers only "
                             "and are never unpickled") from None
        raise ValueError(f"{folder!r} holds a damaged checkpoint: {err}") from None
    except (zipfile.BadZipFile, EOFError, OSError, json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{folder!r} holds a damaged or truncated checkpoint ({type(err).__name__}: {err})") from None
    if int(arrays.get("step", -1)) != meta.get("step"):
        raise ValueError(f"{folder!r}: checkpoint.npz is at step {arrays.get('step')} but config.json "
                         f"at step {meta.get('step')}; they do not belong together")
    try:
        config = model.Config.from_dict(meta["model"])
        params = {k[len("params."):]: v for k, v in arrays.items() if k.startswith("params.")}
        model.check_params_fit(params, config)
        rng = np.random.default_rng()
        rng.bit_generator.state = meta["rng"]
        return {
            "params": params, "opt": state_from_arrays(arrays), "step": meta["step"], "rng": rng,
            "config": config, "settings": Settings(**meta["settings"]), "data": DataSpec(**meta["data"]),
            "tokenizer": tokenizer_from_dict(meta["tokenizer"]), "metrics": meta["metrics"],
            "prompt": meta["prompt"],
        }
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{folder!r} holds a checkpoint that does not fit this version of minimolkv "
                         f"({type(err).__name__}: {err})") from None


def check_same_tokenizer(run, dataset):
    """Resuming re-reads the data; its tokenizer must be the one the run was trained with
    (the stdlib corpus differs a little between Python versions, and so would BPE)."""
    if dataset.tokenizer.to_dict() != run["tokenizer"].to_dict():
        raise ValueError(f"the data {run['data'].name!r} now tokenizes differently from when this run "
                         "was trained (another Python version's docstrings, or a changed file); "
                         "resuming would scramble the token ids")


# ----------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------

def new_run(config, settings, data_spec, dataset):
    """A fresh run: parameters, optimizer, batch generator at step 0."""
    params = model.init(config, settings.seed, dtype=np.dtype(settings.dtype))
    return {"params": params, "opt": adamw_init(params), "step": 0,
            "rng": np.random.default_rng(settings.seed), "config": config, "settings": settings,
            "data": data_spec, "tokenizer": dataset.tokenizer, "metrics": [],
            "prompt": default_prompt(dataset)}


def default_prompt(dataset):
    """A prompt for `sample`: the start of a paragraph of the validation text
    (or its first 8 tokens when it has no paragraphs, e.g. synthetic data)."""
    text = dataset.tokenizer.decode(dataset.val[:200])
    paragraphs = [p for p in text.split("\n\n")[1:-1] if len(p.strip()) > 20]
    if not paragraphs:
        return dataset.tokenizer.decode(dataset.val[:8])
    return " ".join(paragraphs[0].split()[:3])


def progress_line(step, total, loss, val, tok_per_s, eta_s):
    val_text = f"val {val:.3f}" if val is not None else "val   -  "
    eta = f"{int(eta_s // 60)}m{int(eta_s % 60):02d}s"
    return (f"step {step:>5}/{total} | loss {loss:.3f} | {val_text} | "
            f"{tok_per_s:>7,.0f} tok/s | ETA {eta}")


def train(run, dataset, out_dir=None, stop_after=None, log=print, log_every=10):
    """Train `run` (from new_run or load_checkpoint) up to run["settings"].steps.

    out_dir: where checkpoints go (None: keep nothing on disk).
    stop_after: stop (with a checkpoint) after this many total steps — an
    interruption on purpose, e.g. to show that resuming is exact.
    Returns the run, updated in place.
    """
    params, opt, rng = run["params"], run["opt"], run["rng"]
    config, s = run["config"], run["settings"]
    end = s.steps if stop_after is None else min(s.steps, stop_after)
    tokens_per_step = s.batch_size * config.context_len
    start_time, start_step = time.perf_counter(), run["step"]
    while run["step"] < end:
        step = run["step"]
        lr = lr_schedule(step, s.steps, s.lr, min(s.warmup, s.steps - 1), s.min_lr_ratio)
        x, y = get_batch(dataset.train, s.batch_size, config.context_len, rng)   # (B,T), (B,T)
        loss, _, cache = model.forward(params, config, x, y)
        if not math.isfinite(loss):
            where = f"the last good checkpoint is in {out_dir!r}" if out_dir else "no checkpoint was kept"
            raise TrainingDiverged(f"loss became {loss} at step {step + 1}: training stopped; {where}. "
                                   f"Try a lower learning rate (now {s.lr}).")
        grads = model.backward(cache)
        grad_norm = clip_grad_norm(grads, s.clip)
        if not math.isfinite(grad_norm):
            raise TrainingDiverged(f"the gradient norm became {grad_norm} at step {step + 1}: training "
                                   f"stopped before the update; the last checkpoint is the last good one. "
                                   f"Try a lower learning rate (now {s.lr}).")
        adamw_step(params, grads, opt, lr, weight_decay=s.weight_decay)
        run["step"] = step + 1

        done = run["step"]
        elapsed = time.perf_counter() - start_time
        tok_per_s = (done - start_step) * tokens_per_step / max(elapsed, 1e-9)
        eta = (end - done) * elapsed / max(done - start_step, 1)
        row = {"step": done, "lr": lr, "train_loss": float(loss), "grad_norm": grad_norm,
               "val_loss": None, "tokens_per_s": tok_per_s, "elapsed_s": elapsed}
        if done % s.eval_every == 0 or done == end:
            row["val_loss"] = evaluate(params, config, dataset.val, s)
            run["metrics"].append(row)
            if out_dir is not None:
                save_checkpoint(out_dir, run)
            log(progress_line(done, s.steps, float(loss), row["val_loss"], tok_per_s, eta))
        else:
            run["metrics"].append(row)
            if done % log_every == 0:
                log(progress_line(done, s.steps, float(loss), None, tok_per_s, eta))
    return run


def fast_mode():
    """MINIMOLKV_FAST=1 (the tests set it): lessons and demos train for a few steps only."""
    return os.environ.get("MINIMOLKV_FAST", "") not in ("", "0")
