"""One training step (step), the loop around it (train), evaluation.

One step, step():
    x, y   = get_batch(train ids)                    (B,T), (B,T)
    loss   = model.forward(params, config, x, y)
    grads  = model.backward(cache)                   same keys as params
    clip the global gradient norm, then one AdamW step at lr_schedule(step)

Every `eval_every` steps (and at the end) the validation loss is measured on
the same fixed validation batches, a progress line is printed and a
checkpoint is written (checkpoint.py). A non-finite loss, gradient norm,
validation loss or parameter stops the run with a clear message before
anything is saved: the last checkpoint on disk is the last good one. Resuming
restores everything a step depends on, so a run interrupted at step k and
resumed with the same --steps ends bit-identical to one that never stopped.
"""

import math
import os
import time

import numpy as np

from minimolkv import checkpoint, model, validate_run
from minimolkv.data import DataSpec, check_fits, eval_windows, get_batch  # noqa: F401 (train.DataSpec for callers)
from minimolkv.optim import adamw_init, adamw_step, clip_grad_norm, lr_schedule
from minimolkv.run import Run, Settings  # noqa: F401 (train.Settings, train.Run for callers)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the message says where the last good checkpoint is."""


def evaluate(params, config, ids, settings, full=False):
    """Mean loss on validation windows (data.eval_windows: non-overlapping, T+1 tokens).

    full=False: eval_batches * batch_size windows spread evenly over the split,
    the same ones at every call, for every kind and seed (the curves);
    full=True: every window of the split (the final number), 64 per forward --
    in fast mode (MINIMOLKV_FAST=1: tests, lessons) 256 windows spread alike,
    since the numbers of a few-step run mean nothing and the whole split costs seconds.
    """
    windows = eval_windows(ids, config.context_len)                  # (n,T+1)
    k = len(windows) if full and not fast_mode() else 256 if full else settings.eval_batches * settings.batch_size
    if k < len(windows):
        windows = windows[np.linspace(0, len(windows) - 1, k).astype(int)]   # (k,T+1)
    total = 0.0
    for start in range(0, len(windows), 64):
        chunk = windows[start:start + 64]                            # (b,T+1)
        loss, _, _ = model.forward(params, config, chunk[:, :-1], chunk[:, 1:], check=False)
        total += float(loss) * len(chunk)                            # a mean over the chunk's tokens
    return total / len(windows)


def epochs(run, dataset):
    """How many times the training tokens were seen so far (None: an endless stream)."""
    n = dataset.train_tokens
    return None if n is None else run.step * run.settings.batch_size * run.config.context_len / n


# ----------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------

def new_run(config, settings, data_spec, dataset):
    """A fresh run: parameters, optimizer, batch generator at step 0."""
    params = model.init(config, settings.seed, dtype=np.dtype(settings.dtype))
    return Run(params=params, opt=adamw_init(params), step=0, rng=np.random.default_rng(settings.seed),
               config=config, settings=settings, data=data_spec, tokenizer=dataset.tokenizer, metrics=[],
               prompt=default_prompt(dataset))


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


def step(run, layers, train_ids, *, check=False):
    """One training step: batch -> forward -> backward -> clip -> AdamW; run.step += 1.

    layers: model.layer_params(run.params), made once per run (the same arrays).
    Returns (loss, grad_norm, lr). A non-finite loss or gradient norm leaves the
    parameters untouched (and run.step as it was): the loop stops the run.
    check=True checks the inputs of the batch and the optimizer (the loop's first step).
    """
    s, config = run.settings, run.config
    lr = lr_schedule(run.step, s.steps, s.lr, min(s.warmup, s.steps - 1), s.min_lr_ratio, check=check)
    x, y = get_batch(train_ids, s.batch_size, config.context_len, run.rng, check=check)  # (B,T), (B,T)
    loss, _, cache = model.forward(run.params, config, x, y, layers=layers, check=False)  # scalar
    grads = model.backward(cache, check=False)                       # {name: array}, as params
    grad_norm = clip_grad_norm(grads, s.clip, check=check)           # scaled in place to <= s.clip
    if math.isfinite(loss) and math.isfinite(grad_norm):
        adamw_step(run.params, grads, run.opt, lr, weight_decay=s.weight_decay, check=check)
        run.step += 1
    return loss, grad_norm, lr


@np.errstate(over="ignore", invalid="ignore", divide="ignore")   # the checks below say it once
def train(run, dataset, out_dir=None, stop_after=None, log=print, log_every=10, status=None):
    """Train `run` (from new_run or checkpoint.load) up to run.settings.steps: the loop
    around step() -- evaluation, progress, divergence and checkpoints.

    out_dir: where checkpoints go (None: keep nothing on disk).
    stop_after: stop (with a checkpoint) after this many total steps — an
    interruption on purpose, e.g. to show that resuming is exact.
    Returns the run, updated in place; run.last_checkpoint names the last
    checkpoint written (or loaded), {"folder", "step", "steps"}, or None.
    log gets each validation's progress line, status (default: log) the ones every
    log_every steps between them (tools/progress.py rewrites those in place in a terminal).

    A NaN or infinite loss, gradient norm, validation loss or parameter stops
    the run with TrainingDiverged before anything non-finite is saved; the
    floating-point warnings on the way there are silenced, since these checks
    report the problem once and clearly.
    """
    s, config = run.settings, run.config
    validate_run.model_params(run.params, config, model.param_shapes(config))   # once: the steps run unchecked
    check_fits(dataset, config.context_len)
    layers = model.layer_params(run.params, config.n_layers)   # the per-layer view, made once
    end = s.steps if stop_after is None else min(s.steps, stop_after)
    start_time, start_step = time.perf_counter(), run.step
    while run.step < end:
        loss, grad_norm, lr = step(run, layers, dataset.train, check=run.step == start_step)
        if not math.isfinite(loss):
            raise TrainingDiverged(diverged(run, f"the loss became {loss} at step {run.step + 1}", out_dir))
        if not math.isfinite(grad_norm):
            raise TrainingDiverged(diverged(run, f"the gradient norm became {grad_norm} at step {run.step + 1}",
                                            out_dir))
        elapsed = time.perf_counter() - start_time
        row = {"step": run.step, "lr": lr, "train_loss": float(loss), "grad_norm": grad_norm, "val_loss": None,
               "tokens_per_s": (run.step - start_step) * s.batch_size * config.context_len / max(elapsed, 1e-9),
               "elapsed_s": elapsed}
        run.metrics.append(row)
        if run.step % s.eval_every == 0 or run.step == end:
            evaluate_and_save(run, dataset, row, out_dir)
        if row["val_loss"] is not None or run.step % log_every == 0:
            eta = (end - run.step) * elapsed / max(run.step - start_step, 1)
            line = progress_line(run.step, s.steps, float(loss), row["val_loss"], row["tokens_per_s"], eta)
            (log if row["val_loss"] is not None else status or log)(line)     # status: a line that moves
    return run


def evaluate_and_save(run, dataset, row, out_dir):
    """At an evaluation step: the validation loss into `row` (and at the end the whole
    split's); a non-finite one or a non-finite parameter stops the run before the
    checkpoint, which is written to out_dir (if given)."""
    row["val_loss"] = evaluate(run.params, run.config, dataset.val, run.settings)
    if run.step == run.settings.steps:                               # the end: the whole split
        row["full_val_loss"] = evaluate(run.params, run.config, dataset.val, run.settings, full=True)
    bad = [k for k in ("val_loss", "full_val_loss") if k in row and not math.isfinite(row[k])]
    bad += [k for k, p in run.params.items() if not np.isfinite(p).all()][:1]
    if bad:                                                          # never checkpoint a diverged run
        run.metrics.pop()
        raise TrainingDiverged(diverged(run, f"{bad[0]} became non-finite at step {run.step}", out_dir))
    if out_dir is not None:
        checkpoint.save(out_dir, run)


def diverged(run, what, out_dir):
    """The divergence message: what happened, where the last good checkpoint is (if any)."""
    last = run.last_checkpoint
    where = (f"; the last good checkpoint (step {last['step']}) is in {last['folder']!r}" if last
             else "; no checkpoint was written before it" if out_dir is not None else "")
    return f"{what}: training stopped{where}. Try a lower learning rate (now {run.settings.lr})."


def fast_mode():
    """MINIMOLKV_FAST=1 (the tests set it): lessons and demos train for a few steps only."""
    return os.environ.get("MINIMOLKV_FAST", "") not in ("", "0")
