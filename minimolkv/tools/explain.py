"""Where MoLKV's attention goes: the picture that explains experiment E1 (docs/experiments.md).

For a trained MoLKV model and validation windows, per layer:

    own weight at position t     sum_n P[t, t, n]         how much of the mixture is the
                                                          current token's own experts
    weight at distance d         mean_t sum_n P[t, t-d, n]   how far back it looks

MoLE gives the current token's experts weight 1 by construction. `joint` at
initialisation gives them about 1/(t+1). `recency` lets a learned slope
decide; `gated` keeps MoLE's term whole and adds tanh(gate) times an
attention over the earlier tokens (its P covers those only, so its own
weight is 0 and its gate is reported instead).

    python -m minimolkv.tools.explain --params runs/e1/shakespeare-default \
        --out docs/results/e1-explain.png

reads molkv-seed0.npz, molkv-recency-seed0.npz and molkv-gated-seed0.npz (saved by
`compare --save-params`) and draws the figure, untrained (init, seed 0) against trained.

    python -m minimolkv.tools.explain --summary docs/results/e1-* --out docs/results/e1-summary.png

draws the paired per-seed differences of every entry to MoLE, and of the MoLKV
variants to the control, one panel per results folder (from their runs.csv), and
writes the same numbers as a table (e1-summary.md).
"""

import argparse
import csv
import dataclasses
import os

import numpy as np

from minimolkv import model
from minimolkv.data import DataSpec, eval_windows

VARIANTS = {"molkv": "joint", "molkv-recency": "recency", "molkv-gated": "gated"}


def attention_profile(params, config, windows):
    """windows (B,T+1) -> {"own": (L,T) own weight by position, "distance": (L,T) weight by
    distance t - j, "gate": (L,) tanh(gate) or None} of a MoLKV model."""
    _, _, cache = model.forward(params, config, windows[:, :-1], windows[:, 1:])
    own, by_distance, gates = [], [], []
    T = windows.shape[1] - 1
    for l, layer in enumerate(cache.layers):
        P = layer.experts.attend.P.sum(axis=-1)                  # (B,T,T) over the N experts
        own.append(np.einsum("btt->t", P) / len(P))                       # (T,) sum_n P[t,t,n], batch mean
        by_distance.append([np.mean(np.diagonal(P, offset=-d, axis1=1, axis2=2)) for d in range(T)])
        gate = params.get(f"layers.{l}.molkv.gate")
        gates.append(None if gate is None else float(np.tanh(gate[0])))
    return {"own": np.array(own), "distance": np.array(by_distance), "gate": gates}


def profiles(folder, base, windows, seed=0):
    """{entry: {"init": profile, "trained": profile}} for the MoLKV entries found in `folder`."""
    out = {}
    for entry, variant in VARIANTS.items():
        path = os.path.join(folder, f"{entry}-seed{seed}.npz")
        if not os.path.exists(path):
            continue
        config = dataclasses.replace(base, kind="molkv", variant=variant)
        with np.load(path, allow_pickle=False) as f:
            trained = {k: f[k] for k in f.files}
        out[entry] = {"init": attention_profile(model.init(config, seed), config, windows),
                      "trained": attention_profile(trained, config, windows)}
    return out


def paired(folder, against):
    """{entry: (mean, 95 % half-width)} of loss(entry) - loss(against), seed by seed, from folder/runs.csv."""
    from minimolkv.tools.compare import mean_interval, paired as per_seed
    with open(os.path.join(folder, "runs.csv")) as f:
        runs = [{"entry": r["entry"], "seed": int(r["seed"]), "final_val_loss": float(r["final_val_loss"])}
                for r in csv.DictReader(f)]
    entries = dict.fromkeys(r["entry"] for r in runs)                  # in the order of the file
    return {entry: mean_interval(per_seed(runs, entry, against)) for entry in entries if entry != against}


def summary(folders, out):
    """The figure of E1's answer: paired differences to MoLE, and of the MoLKV variants to the
    control; the same numbers as a Markdown table beside it (out with .md)."""
    from minimolkv.tools import plots
    from minimolkv.tools.compare import verdict
    panels = {}
    lines = ["| results | entry | − mole | verdict | − control | verdict |", "|---|---|---|---|---|---|"]
    for folder in folders:
        name = os.path.basename(os.path.normpath(folder)).removeprefix("e1-")
        to_mole = paired(folder, "mole")
        to_control = {f"{k} - control": v for k, v in paired(folder, "control").items() if k.startswith("molkv")}
        panels[f"{name}: entry - mole  /  molkv variant - control"] = {**to_mole, **to_control}
        for entry, (mean, half) in to_mole.items():
            c_mean, c_half = to_control.get(f"{entry} - control", (None, None))
            against_control = ("–", "") if c_mean is None else (f"{c_mean:+.4f} ± {c_half:.4f}",
                                                                 verdict(c_mean, c_half))
            lines.append(f"| {name} | {entry} | {mean:+.4f} ± {half:.4f} | {verdict(mean, half)} | "
                         f"{against_control[0]} | {against_control[1]} |")
    plots.paired_differences(panels, verdict, path=out, title="E1: paired per-seed differences of the final validation "
                             "loss, mean ± 95% interval (below 0: better)")
    table = os.path.splitext(out)[0] + ".md"
    with open(table, "w") as f:
        f.write("Paired per-seed differences of the final validation loss (nats), mean ± 95 % t-interval; "
                "verdicts by the rule of docs/experiments.md (beats: the whole interval below 0).\n\n"
                + "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"saved {out} and {table}")


def main(argv=None):
    from minimolkv.tools import plots
    p = argparse.ArgumentParser(prog="python -m minimolkv.tools.explain", description=__doc__.split("\n\n")[0])
    p.add_argument("--summary", nargs="+", metavar="DIR", help="results folders of compare: draw the summary")
    p.add_argument("--params", metavar="DIR", help="a folder written by compare --save-params")
    p.add_argument("--data", default="shakespeare", help="the data the models were trained on (default shakespeare)")
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--windows", type=int, default=64, help="validation windows to average over (default 64)")
    p.add_argument("--out", required=True, metavar="PNG")
    p.add_argument("--sizes", default="", help="Config overrides as k=v,k=v (e.g. d_model=128,n_layers=4)")
    args = p.parse_args(argv)
    if args.summary:
        return summary(args.summary, args.out)
    if not args.params:
        p.error("give --params DIR (the attention picture) or --summary DIR ... (the differences)")
    dataset = DataSpec(name=args.data, vocab_size=args.vocab).load()
    sizes = {k: int(v) for k, v in (kv.split("=") for kv in args.sizes.split(",") if kv)}
    base = model.Config(vocab_size=dataset.tokenizer.vocab_size, **sizes)
    all_windows = eval_windows(dataset.val, base.context_len)
    windows = all_windows[np.linspace(0, len(all_windows) - 1, args.windows).astype(int)]   # spread evenly
    found = profiles(args.params, base, windows)
    if not found:
        p.error(f"no molkv*-seed0.npz in {args.params}")
    sized = f", {args.sizes}" if args.sizes else ""
    plots.molkv_attention_profiles(found, path=args.out, title=f"MoLKV attention on {args.data} "
                                   f"({args.windows} validation windows, seed 0{sized})")
    for entry, prof in found.items():
        for when in ("init", "trained"):
            own = prof[when]["own"]
            print(f"{entry:14s} {when:7s} own weight at t=0/15/63 by layer: " + "  ".join(
                f"[{o[0]:.2f} {o[15]:.2f} {o[-1]:.2f}]" for o in own)
                  + ("" if prof[when]["gate"][0] is None else f"  tanh(gate) {prof[when]['gate']}"))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
