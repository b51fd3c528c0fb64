"""The comparison: dense, MoE, MoLE, the MoLKV variants and a control, on the same
data, seeds and steps (the protocol is in docs/experiments.md).

Entries, with activated parameters per token matched the way the MoLE paper does:
    dense          the dense FFN of hidden size Fd in every layer
    moe            no dense FFN; N routed experts of hidden size Fd/2, top-2 per token
                   (2 · Fd/2 = Fd activated FFN width, like dense)
    mole           the dense FFN + N lookup experts (router in RAM, tables in storage)
    molkv          the dense FFN + N key-value lookup experts, variant "joint"
    molkv-recency  the same, variant "recency" (a learned soft window)
    molkv-gated    the same, variant "gated" (MoLE's term + gated context)
    control        kind "ctxattn": molkv-recency's attention with keys and values from
                   the hidden state instead of lookups; its dense FFN is (Dk + D)/2
                   narrower, so its activated parameters equal MoLKV's (+-N per layer)
MoLE and MoLKV activate only the router/query (and the variants' few numbers)
beyond dense, and load N·D (MoLE) or N·(Dk+D) (MoLKV) numbers per token per
layer from the tables.

`compare` trains every entry for every seed and returns one row per run
(final loss on the whole validation split, epochs, tokens/s, time) and one
summary per entry: mean with a 95 % t-interval over seeds, and the paired
per-seed difference to MoLE with its 95 % t-interval (MoLKV "beats" MoLE when
that interval lies below 0).
"""

import csv
import dataclasses
import math
import os
import time

import numpy as np

from minimolkv import corpora, train
from minimolkv.data import check_fits, eval_windows
from minimolkv.files import format_bytes
from minimolkv.params import count_params

ENTRIES = ("dense", "moe", "mole", "molkv", "molkv-recency", "molkv-gated", "control")
REFERENCE = "mole"          # the paired differences are taken against this entry
# two-sided 95 % critical values of Student's t for 1..30 degrees of freedom (then 1.96)
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
       2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
       2.052, 2.048, 2.045, 2.042)


def config_for(entry, base):
    """The config of an entry with activated parameters matched to `base` (a dense-sized Config)."""
    if entry == "moe":
        return dataclasses.replace(base, kind="moe", d_ff=0, d_expert=base.d_ff // 2, top_k=2)
    if entry.startswith("molkv"):
        variant = entry.partition("-")[2] or "joint"
        return dataclasses.replace(base, kind="molkv", variant=variant)
    if entry == "control":
        return dataclasses.replace(base, kind="ctxattn", d_ff=base.d_ff - (base.d_key + base.d_model) // 2)
    return dataclasses.replace(base, kind=entry)


def mean_interval(values):
    """(mean, half-width of the 95 % t-interval) of a list of numbers (half-width nan for one)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return float(x.mean()), math.nan
    t = T95[len(x) - 2] if len(x) - 1 <= len(T95) else 1.96
    return float(x.mean()), float(t * x.std(ddof=1) / math.sqrt(len(x)))


def paired(runs, entry, against):
    """Per-seed differences loss(entry) − loss(against), over the seeds both have, seed order."""
    loss = {(r["entry"], r["seed"]): r["final_val_loss"] for r in runs}
    seeds = sorted(s for e, s in loss if e == entry and (against, s) in loss)
    return [loss[entry, s] - loss[against, s] for s in seeds]


def verdict(mean, half):
    """The rule of docs/experiments.md for a difference (mean, 95 % half-width), below 0
    better: "beats" when the whole interval is below 0, "loses" when above, else "ties"."""
    return "beats" if mean + half < 0 else "loses" if mean - half > 0 else "ties"


def compare(spec, base, settings, seeds, log=print, entries=ENTRIES, save_params=None):
    """Train each entry for each seed; -> (runs, summary, curves, references).

    runs:    one dict per (entry, seed): final loss on the whole validation split, epochs, ...
    summary: one dict per entry (see the module docstring)
    curves:  {entry: [validation curve of each seed]}, each a list of (step, val_loss)
    references: for the synthetic task, the loss of two ideal predictors on the same
             validation windows ({} for text)
    save_params: a folder: each run's final parameters go there as <entry>-seed<k>.npz
    """
    dataset = spec.load()
    check_fits(dataset, base.context_len)
    base = dataclasses.replace(base, vocab_size=dataset.tokenizer.vocab_size)
    log(dataset.description)
    references = reference_losses(spec, dataset, base.context_len)
    if references:
        log("ideal predictors on the same windows: " + ", ".join(f"{k} {v:.3f}" for k, v in references.items()))
    runs, curves = [], {}
    for entry in entries:
        config = config_for(entry, base)
        curves[entry] = []
        for seed in seeds:
            log(f"-- {entry}, seed {seed}")
            start = time.perf_counter()
            run = train.new_run(config, dataclasses.replace(settings, seed=seed), spec, dataset)
            try:
                train.train(run, dataset, log=lambda line: log("   " + line), log_every=10 ** 9)
            except train.TrainingDiverged as err:
                raise train.TrainingDiverged(f"{entry}, seed {seed}: {err}") from None
            final = run.metrics[-1]
            curves[entry].append([(r["step"], r["val_loss"]) for r in run.metrics if r["val_loss"] is not None])
            runs.append({"entry": entry, "seed": seed, "final_val_loss": final["full_val_loss"],
                         "final_train_loss": final["train_loss"], "epochs": train.epochs(run, dataset),
                         "tokens_per_s": final["tokens_per_s"], "seconds": time.perf_counter() - start})
            log(f"   whole validation split: {final['full_val_loss']:.4f}")
            if save_params is not None:
                os.makedirs(save_params, exist_ok=True)
                np.savez(os.path.join(save_params, f"{entry}-seed{seed}.npz"), **run.params)
    return runs, summarise(runs, base, settings, entries), curves, references


def reference_losses(spec, dataset, context_len):
    """The synthetic task's ideal and previous-token losses on the validation windows."""
    if spec.name != "synthetic":
        return {}
    windows = eval_windows(dataset.val, context_len)                 # (n,T+1)
    per_window = [corpora.synthetic_reference_losses(w, spec.vocab_size, spec.seed) for w in windows]
    return {k: float(np.mean([r[k] for r in per_window])) for k in ("optimal", "previous_token")}


def summarise(runs, base, settings, entries):
    """One row per entry: parameter counts, mean ± 95 % interval, paired difference to MoLE."""
    by_entry = {e: {r["seed"]: r for r in runs if r["entry"] == e} for e in entries}
    itemsize = np.dtype(settings.dtype).itemsize
    rows = []
    for entry in entries:
        n = count_params(config_for(entry, base))
        losses = [r["final_val_loss"] for r in by_entry[entry].values()]
        mean, half = mean_interval(losses)
        to_reference = paired(runs, entry, REFERENCE)
        diff, diff_half = (mean_interval(to_reference) if to_reference and entry != REFERENCE
                           else (math.nan, math.nan))
        epochs = [r["epochs"] for r in by_entry[entry].values()]
        rows.append({
            "entry": entry, "train_params": n["train"], "ram_params": n["ram"],
            "lut_bytes": n["lut"] * itemsize, "loaded_bytes_per_token": n["loaded"] * itemsize,
            "activated_params": n["activated"], "seeds": len(losses),
            "val_loss_mean": mean, "val_loss_ci95": half,
            "diff_to_mole": diff, "diff_to_mole_ci95": diff_half,
            "epochs": None if None in epochs else float(np.mean(epochs)),
            "tokens_per_s": float(np.mean([r["tokens_per_s"] for r in by_entry[entry].values()])),
            "val_losses": losses,
        })
    return rows


def _pm(mean, half, digits=3):
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def markdown_table(rows):
    head = ("| entry | trained params | RAM params (inference) | LUT in storage | loaded / token "
            "| activated params / token | epochs | final val loss (mean ± 95% CI) "
            f"| paired difference to {REFERENCE} | train tokens/s |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        epochs = "fresh (stream)" if r["epochs"] is None else f"{r['epochs']:.2f}"
        diff = "–" if math.isnan(r["diff_to_mole"]) else _pm(r["diff_to_mole"], r["diff_to_mole_ci95"])
        lines.append(f"| {r['entry']} | {r['train_params']:,} | {r['ram_params']:,} | "
                     f"{format_bytes(r['lut_bytes'])} | {format_bytes(r['loaded_bytes_per_token'])} | "
                     f"{r['activated_params']:,} | {epochs} | {_pm(r['val_loss_mean'], r['val_loss_ci95'])} | "
                     f"{diff} | {r['tokens_per_s']:,.0f} |")
    return "\n".join(lines)


FILES = ("results.md", "results.csv", "runs.csv", "val_curves.png")     # what save writes


def save(runs, rows, curves, references, folder, title, command):
    """results.md, results.csv (one row per entry), runs.csv (one row per run) and
    val_curves.png in `folder`; returns their paths."""
    from minimolkv.tools import plots
    os.makedirs(folder, exist_ok=True)
    md = os.path.join(folder, "results.md")
    refs = ("\n\nIdeal predictors on the same validation windows: "
            + ", ".join(f"{k} {v:.3f}" for k, v in references.items())) if references else ""
    with open(md, "w") as f:
        f.write(f"# {title}\n\nReproduce: `{command}`{refs}\n\n{markdown_table(rows)}\n")
    path_rows = os.path.join(folder, "results.csv")
    with open(path_rows, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "val_losses"] + ["val_losses"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "val_losses": " ".join(f"{v:.4f}" for v in r["val_losses"])})
    path_runs = os.path.join(folder, "runs.csv")
    with open(path_runs, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(runs[0]))
        writer.writeheader()
        writer.writerows(runs)
    png = os.path.join(folder, "val_curves.png")
    plots.val_curves(curves, path=png, title=title, references=references)
    return md, path_rows, path_runs, png
