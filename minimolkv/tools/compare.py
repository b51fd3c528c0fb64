"""The comparison: dense vs MoE vs MoLE vs MoLKV on the same data, seeds and steps.

Activated parameters per token are matched the way the MoLE paper does:
    dense   the dense FFN of hidden size Fd in every layer
    moe     no dense FFN; N routed experts of hidden size Fd/2, top-2 per token
            (2 · Fd/2 = Fd activated FFN width, like dense)
    mole    the dense FFN + N lookup experts (router in RAM, tables in storage)
    molkv   the dense FFN + N key-value lookup experts (query in RAM, tables in storage)
so MoLE and MoLKV activate only the router/query beyond dense, and load
N·D (MoLE) or N·(Dk+D) (MoLKV) numbers per token per layer from the tables.

`compare` trains every kind for every seed, and returns one row per kind:
parameter accounting (params.count_params), final validation loss as
mean ± std over seeds, and training tokens/s.
"""

import csv
import dataclasses
import os

import numpy as np

from minimolkv import train
from minimolkv.files import format_bytes
from minimolkv.model import KINDS
from minimolkv.params import count_params


def config_for(kind, base):
    """The config of `kind` with activated parameters matched to `base` (a dense-sized Config)."""
    if kind == "moe":
        return dataclasses.replace(base, kind="moe", d_ff=0, d_expert=base.d_ff // 2, top_k=2)
    return dataclasses.replace(base, kind=kind)


def compare(spec, base, settings, seeds, log=print, kinds=KINDS):
    """Train each kind for each seed; -> (rows, curves).

    rows:   one dict per kind (see the module docstring)
    curves: {kind: [val-loss curve of each seed]}, each a list of (step, val_loss)
    """
    dataset = spec.load()
    base = dataclasses.replace(base, vocab_size=dataset.tokenizer.vocab_size)
    log(dataset.description)
    rows, curves = [], {}
    for kind in kinds:
        config = config_for(kind, base)
        finals, speeds, curves[kind] = [], [], []
        for seed in seeds:
            log(f"-- {kind}, seed {seed}")
            run = train.new_run(config, dataclasses.replace(settings, seed=seed), spec, dataset)
            train.train(run, dataset, log=lambda line: log("   " + line), log_every=10 ** 9)
            evals = [(r["step"], r["val_loss"]) for r in run["metrics"] if r["val_loss"] is not None]
            curves[kind].append(evals)
            finals.append(evals[-1][1])
            speeds.append(run["metrics"][-1]["tokens_per_s"])
        n = count_params(config)
        itemsize = np.dtype(settings.dtype).itemsize
        rows.append({
            "kind": kind,
            "train_params": n["train"],
            "ram_params": n["ram"],
            "lut_bytes": n["lut"] * itemsize,
            "loaded_bytes_per_token": n["loaded"] * itemsize,
            "activated_params": n["activated"],
            "val_loss_mean": float(np.mean(finals)),
            "val_loss_std": float(np.std(finals)),
            "val_losses": finals,
            "tokens_per_s": float(np.mean(speeds)),
        })
    return rows, curves


def markdown_table(rows):
    head = ("| kind | trained params | RAM params (inference) | LUT in storage | loaded / token "
            "| activated params / token | final val loss (mean ± std) | train tokens/s |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['train_params']:,} | {r['ram_params']:,} | "
                     f"{format_bytes(r['lut_bytes'])} | {format_bytes(r['loaded_bytes_per_token'])} | "
                     f"{r['activated_params']:,} | {r['val_loss_mean']:.3f} ± {r['val_loss_std']:.3f} | "
                     f"{r['tokens_per_s']:,.0f} |")
    return "\n".join(lines)


def save(rows, curves, folder, title):
    """results.md, results.csv and val_curves.png in `folder`; returns their paths."""
    from minimolkv.tools import plots
    os.makedirs(folder, exist_ok=True)
    md = os.path.join(folder, "results.md")
    with open(md, "w") as f:
        f.write(f"# {title}\n\n{markdown_table(rows)}\n")
    path_csv = os.path.join(folder, "results.csv")
    with open(path_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "val_losses"] + ["val_losses"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "val_losses": " ".join(f"{v:.4f}" for v in r["val_losses"])})
    png = os.path.join(folder, "val_curves.png")
    plots.val_curves(curves, path=png, title=title)
    return md, path_csv, png
