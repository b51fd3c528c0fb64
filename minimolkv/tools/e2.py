"""Experiment E2's analysis: does `recency`'s lead over MoLE hold as the model and the
training grow? (protocol and results: docs/experiments.md, section E2)

The grid ran as one `compare` command per (cell, entry), each writing a part folder
<parts>/<cell>-<entry>/runs.csv. This module only reads those, merges them per cell and
applies the rule written before the runs:

    per cell    Δ = loss(recency) − loss(mole), paired per seed: mean ± 95 % t-interval
    a trend     between two cells a, b (independent runs): mean_b − mean_a, with the
                half-width t · sqrt(se_a² + se_b²), t at min(n_a, n_b) − 1 degrees of freedom
                (conservative); "grows" when that interval lies wholly on the side of a
                larger lead (Δ more negative) and the means are ordered along the cells,
                "shrinks" the other way, otherwise "unclear".

    python -m minimolkv.tools.e2 --parts e2/parts --params runs/e2 --out docs/results/e2 [--overwrite]
    python -m minimolkv.tools.e2 --parts docs/results/e2/parts --out DIR    # from the committed runs

writes e2/<cell>/results.md, runs.csv (every run), summary.md (the differences and the
trends) and e2.png (the differences against dense parameters, and the learned slopes).
"""

import argparse
import csv
import math
import os

import numpy as np

from minimolkv import model, ops, train
from minimolkv.params import count_params
from minimolkv.tools import compare
from minimolkv.tools.options import PRESETS

ENTRIES = ("mole", "molkv-recency", "control")
CELLS = ("default-400", "large-400", "xl-400", "large-800")     # <size>-<steps>
PAIRS = {"recency − mole": ("molkv-recency", "mole"), "control − mole": ("control", "mole"),
         "recency − control": ("molkv-recency", "control")}              # label: (entry, against)
SIZE_ORDER = ("default-400", "large-400", "xl-400")              # one token budget, growing size
BUDGET_ORDER = ("large-400", "large-800")                        # one size, growing budget


def base_config(cell, vocab_size=512):
    """The dense-sized Config of a cell ("xl-400" -> the xl sizes)."""
    return model.Config(vocab_size=vocab_size, kind="dense", **PRESETS[cell.split("-")[0]])


def dense_params(cell):
    return count_params(base_config(cell))["train"]


def load_parts(parts):
    """{cell: [run, ...]} from every <parts>/<cell>-<entry>/runs.csv as compare writes it, or
    <parts>/<cell>-<entry>.csv as docs/results/e2/parts/ keeps it (numbers parsed)."""
    cells = {}
    for name in sorted(os.listdir(parts)):
        path = os.path.join(parts, name, "runs.csv") if not name.endswith(".csv") else os.path.join(parts, name)
        if not os.path.exists(path):
            continue
        cell = "-".join(name.removesuffix(".csv").split("-")[:2])
        with open(path) as f:
            for r in csv.DictReader(f):
                cells.setdefault(cell, []).append({
                    "entry": r["entry"], "seed": int(r["seed"]), "final_val_loss": float(r["final_val_loss"]),
                    "final_train_loss": float(r["final_train_loss"]), "tokens_per_s": float(r["tokens_per_s"]),
                    "epochs": float(r["epochs"]), "seconds": float(r["seconds"] or "nan")})
    return cells


def trend(diffs_by_cell, order):
    """The rule of the protocol along `order` -> (change, half-width, word); the change is
    last − first (negative: a larger lead at the last cell)."""
    first, last = diffs_by_cell[order[0]], diffs_by_cell[order[-1]]
    means = [float(np.mean(diffs_by_cell[c])) for c in order]
    se2 = [np.var(d, ddof=1) / len(d) for d in (first, last)]
    t = compare.T95[min(len(first), len(last)) - 2]
    change, half = means[-1] - means[0], t * math.sqrt(sum(se2))
    steps = np.diff(means)
    if change + half < 0 and np.all(steps < 0):
        return change, half, "grows"
    if change - half > 0 and np.all(steps > 0):
        return change, half, "shrinks"
    return change, half, "unclear"


def slopes(params_dir, cell):
    """(seeds, L, N) learned slopes softplus(recency) of the cell's saved recency models, or None."""
    folder = os.path.join(params_dir, cell)
    found = []
    for seed in range(10):
        path = os.path.join(folder, f"molkv-recency-seed{seed}.npz")
        if os.path.exists(path):
            with np.load(path, allow_pickle=False) as f:
                raw = [f[k] for k in sorted((k for k in f.files if k.endswith(".molkv.recency")),
                                            key=lambda k: int(k.split(".")[1]))]
            found.append(np.logaddexp(0.0, np.stack(raw)))            # softplus, (L,N)
    return np.stack(found) if found else None


def summary_lines(cells):
    """The Markdown of the differences per cell and the trends (and the numbers behind the figure)."""
    diffs = {c: {label: compare.paired(runs, *pair) for label, pair in PAIRS.items()} for c, runs in cells.items()}
    lines = ["| cell | dense params | epochs | recency − mole | verdict | control − mole | verdict "
             "| recency − control | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for c in CELLS:
        if c not in cells:
            continue
        row = [c, f"{dense_params(c):,}", f"{np.mean([r['epochs'] for r in cells[c]]):.2f}"]
        for d in diffs[c].values():
            if len(d) < 2:                                   # an entry not run (yet): no interval
                row += ["– (not run)" if not d else f"{d[0]:+.4f} (n=1)", ""]
                continue
            mean, half = compare.mean_interval(d)
            row += [f"{mean:+.4f} ± {half:.4f} (n={len(d)})", compare.verdict(mean, half)]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| trend | Δ | last − first | word |", "|---|---|---|---|"]
    for name, order in (("size (400 steps)", SIZE_ORDER), ("training (large)", BUDGET_ORDER)):
        for label in ("recency − mole", "recency − control"):
            if not all(len(diffs.get(c, {}).get(label, [])) >= 2 for c in order):
                lines.append(f"| {name} | {label} | – | not every cell has run |")
                continue
            by_cell = {c: diffs[c][label] for c in order}
            change, half, word = trend(by_cell, order)
            lines.append(f"| {name} | {label} | {change:+.4f} ± {half:.4f} | {word} |")
    return lines, diffs


def figure(diffs, slope_sets, path, title):
    """Left: paired differences to MoLE (and recency − control) against dense parameters on
    a log axis, mean ± 95 % interval; the 800-step cell as open markers. Right: the learned
    slopes per layer and expert, mean over seeds, one line per size."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    for k, (label, colour) in enumerate(zip(PAIRS, ("C0", "C1", "C2"))):
        nudge = 1 + 0.05 * (k - 1)                        # side by side, so the intervals do not hide each other
        xs, ms, hs = [], [], []
        for c in SIZE_ORDER:
            if len(diffs.get(c, {}).get(label, [])) >= 2:
                mean, half = compare.mean_interval(diffs[c][label])
                xs.append(dense_params(c) * nudge), ms.append(mean), hs.append(half)
        if xs:
            ax.errorbar(xs, ms, yerr=hs, color=colour, marker="o", capsize=4, label=label + " (400 steps)")
        if len(diffs.get("large-800", {}).get(label, [])) >= 2:
            mean, half = compare.mean_interval(diffs["large-800"][label])
            ax.errorbar([dense_params("large-800") * nudge * 1.25], [mean], yerr=[half], color=colour, marker="o",
                        mfc="white", capsize=4, ls="none", label=label + " (large, 800 steps)")
    ax.axhline(0, color="k", lw=0.8)
    if ax.get_legend_handles_labels()[0]:                # (a grid with no pair run yet draws none)
        ax.set_xscale("log")
        ax.set_xticks([dense_params(c) for c in SIZE_ORDER], [f"{c.split('-')[0]}\n{dense_params(c) / 1e6:.2f} M"
                                                              for c in SIZE_ORDER])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=7)
    ax.set_xlabel("size: the dense model's trained parameters (log axis)")
    ax.set_ylabel("paired difference of final val loss (nats)\nbelow 0: the first entry is better")
    for i, (cell, s) in enumerate(slope_sets.items()):
        if s is None:
            continue
        mean = s.mean(axis=0)                                            # (L,N)
        for l in range(mean.shape[0]):
            ax2.plot(np.arange(mean.shape[1]) + 0.1 * i, mean[l], marker="o", color=f"C{i}", alpha=0.4 + 0.6 *
                     (l + 1) / mean.shape[0], label=f"{cell}" if l == 0 else None)
    n = np.arange(4)
    ax2.plot(n, ops.RECENCY_INIT * 0.5 ** n, "k--", lw=1, label="at initialisation")
    ax2.axhline(0, color="k", lw=0.5)
    ax2.set_xticks(n)
    ax2.set_xlabel("expert n (one line per layer; darker: deeper)")
    ax2.set_ylabel("learned slope m = softplus(recency)")
    ax2.set_title("recency's slopes after training (mean over seeds)", fontsize=9)
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_cells(cells, out):
    """Per cell: results.md (compare's table) and runs.csv (every run) under out/<cell>/."""
    settings = train.Settings()
    for cell, runs in cells.items():
        folder = os.path.join(out, cell)
        os.makedirs(folder, exist_ok=True)
        entries = [e for e in ENTRIES if any(r["entry"] == e for r in runs)]
        rows = compare.summarise(runs, base_config(cell), settings, entries)
        size, steps = cell.split("-")
        with open(os.path.join(folder, "results.md"), "w") as f:
            f.write(f"# E2, shakespeare, {size} size, {steps} steps\n\n{compare.markdown_table(rows)}\n")
        with open(os.path.join(folder, "runs.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(runs[0]))
            writer.writeheader()
            writer.writerows(sorted(runs, key=lambda r: (ENTRIES.index(r["entry"]), r["seed"])))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minimolkv.tools.e2", description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", required=True, metavar="DIR", help="the folder holding <cell>-<entry>/runs.csv")
    p.add_argument("--params", metavar="DIR", help="compare --save-params folders, <DIR>/<cell>/ (for the slopes)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    args = p.parse_args(argv)
    theirs = [n for n in ("summary.md", "e2.png", *CELLS) if os.path.lexists(os.path.join(args.out, n))]
    if theirs and not args.overwrite:                  # nothing the user has is replaced unasked
        p.error(f"--out {args.out} holds {', '.join(theirs)}; add --overwrite to replace them")
    cells = load_parts(args.parts)
    if not cells:
        p.error(f"no <cell>-<entry>/runs.csv or <cell>-<entry>.csv under {args.parts}")
    write_cells(cells, args.out)
    lines, diffs = summary_lines(cells)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write("E2: paired per-seed differences of the final validation loss (nats), mean ± 95 % "
                "t-interval, and the trends by the rule of docs/experiments.md.\n\n" + "\n".join(lines) + "\n")
    slope_sets = {c: slopes(args.params, c) for c in SIZE_ORDER} if args.params else {}
    figure(diffs, slope_sets, os.path.join(args.out, "e2.png"),
           "E2 on Shakespeare: paired differences (mean ± 95% interval) as the model grows")
    print("\n".join(lines))
    print(f"saved {args.out}/summary.md, {args.out}/e2.png and a folder per cell")


if __name__ == "__main__":
    main()
