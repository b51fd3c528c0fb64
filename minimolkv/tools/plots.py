"""matplotlib figures used by the lessons and the command line.

Each function draws one picture and returns the Figure; pass `path` to also
save it as a PNG. With no display, matplotlib picks its Agg backend by
itself, so the functions work on a server and in the tests.
"""

import matplotlib.pyplot as plt
import numpy as np


def _finish(fig, path):
    """Lay out; with a path, save the PNG and close the figure (the command line and
    long runs would otherwise keep every figure open); without one, a notebook shows it."""
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def loss_curves(runs, path=None, title="Loss"):
    """runs: {label: list of metric rows ({step, train_loss, val_loss})}.

    Train loss as a thin line, validation loss as a thick one, one colour a run.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (label, rows) in enumerate(runs.items()):
        colour = f"C{i}"
        steps = [r["step"] for r in rows if r.get("train_loss") is not None]
        train = [r["train_loss"] for r in rows if r.get("train_loss") is not None]
        ax.plot(steps, train, color=colour, alpha=0.35, lw=1)
        vsteps = [r["step"] for r in rows if r.get("val_loss") is not None]
        val = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
        ax.plot(vsteps, val, color=colour, lw=2.2, marker="o", ms=3, label=f"{label} (val)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title(title + "  — thin: train, thick: validation")
    ax.grid(alpha=0.3)
    ax.legend()
    return _finish(fig, path)


def token_labels(tokens):
    """Tick labels for tokens: each leading space shown as '␣' (a repr hides it), other
    invisible characters escaped (a newline as \\n)."""
    labels = []
    for t in tokens:
        body = t.lstrip(" ")
        labels.append("␣" * (len(t) - len(body)) + repr(body)[1:-1])
    return labels


def router_weights(s, tokens, path=None, title="MoLE router weights per token", min_scale=0.1):
    """s: {label: (T,N) router softmax of one sequence}, one row of panels per entry
    (e.g. per layer), or a single (T,N) array; tokens: the T token strings.

    Left panel of a row: each expert's average weight over the sentence, the fixed
    preference (0 to 1, printed in the cells). Right panel: s minus that average,
    token by token -- the routing -- on a diverging colour map centred at 0, with one
    symmetric scale shared by every row, at least +-min_scale (so the tiny deviations
    of an untrained router stay pale instead of looking like structure)."""
    layers = {k: np.asarray(v, dtype=float) for k, v in (s.items() if isinstance(s, dict) else [("", s)])}
    T, N = next(iter(layers.values())).shape
    means = {k: a.mean(axis=0) for k, a in layers.items()}                  # (N,) per row
    devs = {k: a - means[k] for k, a in layers.items()}                     # (T,N) per row
    lim = max(min_scale, max(float(np.abs(d).max()) for d in devs.values()))
    fig, axes = plt.subplots(len(layers), 2, squeeze=False, layout="constrained",
                             figsize=(2.2 + max(6, 0.45 * T), 0.6 + 2.3 * len(layers)),
                             gridspec_kw={"width_ratios": [1.2, max(6, T)]})
    experts = [f"expert {n}" for n in range(N)]
    for row, (label, a) in enumerate(layers.items()):
        ax_mean, ax_dev = axes[row]
        ax_mean.imshow(means[label][:, None], aspect="auto", cmap="Greys", vmin=0, vmax=1.6)
        for n in range(N):
            ax_mean.text(0, n, f"{means[label][n]:.2f}", ha="center", va="center", fontsize=8)
        ax_mean.set_xticks([0], ["average"], fontsize=8)
        ax_mean.set_yticks(range(N), experts, fontsize=8)
        ax_mean.set_ylabel(f"{label}: expert n" if label else "expert n")
        im = ax_dev.imshow(devs[label].T, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax_dev.set_xticks(range(T), token_labels(tokens), rotation=60, fontsize=8)
        ax_dev.set_yticks(range(N), experts, fontsize=8)
        ax_dev.set_ylabel("expert n")
    axes[-1][0].set_xlabel("over the\nsentence")
    axes[-1][1].set_xlabel("token of the sentence, in order (␣ = a leading space)")
    axes[0][0].set_title("preference", fontsize=9)
    axes[0][1].set_title("routing: s minus the expert's average over the sentence", fontsize=9)
    fig.colorbar(im, ax=axes[:, 1], fraction=0.03, label="s - average (shared scale)")
    fig.suptitle(title)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def _weight_rows(panels, tokens, width, norm, suptitle, xlabel):
    """One heat map per panel: {label: (title, (t+1,N) weights)}, columns 0..width-1 (NaN: blank),
    rows the N experts, all on `norm`; a colour bar marking each panel's uniform level."""
    N = next(iter(panels.values()))[1].shape[1]
    fig, axes = plt.subplots(len(panels), 1, squeeze=False, layout="constrained", sharex=True,
                             figsize=(max(6.0, 0.26 * width + 2.2), 1.1 + (0.22 * N + 0.6) * len(panels)))
    cmap = plt.get_cmap("magma").with_extremes(bad="white")
    for ax, (label, (panel_title, row)) in zip(axes[:, 0], panels.items()):
        grid = np.full((N, width), np.nan)                                  # (N, width) blank = not visible
        grid[:, : len(row)] = np.maximum(np.asarray(row, dtype=float).T, norm.vmin)   # below vmin: lowest colour
        im = ax.imshow(grid, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
        for j in range(1, width):                                           # thin lines between positions
            ax.axvline(j - 0.5, color="white", lw=0.4)
        ax.set_yticks(range(N), [f"{n}" for n in range(N)], fontsize=7)
        ax.set_ylabel(f"{label}\nexpert n" if label else "expert n", fontsize=8)
        if panel_title:
            ax.set_title(panel_title, fontsize=9, loc="left")
    axes[-1, 0].set_xticks(range(width), token_labels(tokens[:width]), rotation=90, fontsize=7)
    axes[-1, 0].set_xlabel(xlabel)
    cbar = fig.colorbar(im, ax=axes[:, 0], fraction=0.025, pad=0.01)
    cbar.set_label("weight P (log scale)")
    for _, row in panels.values():                                          # a uniform row's level
        cbar.ax.axhline(1.0 / np.asarray(row).size, color="cyan", lw=2)
    fig.suptitle(suptitle + "\n(cyan mark on the colour bar: the weight of a uniform row, 1/((t+1)N))",
                 fontsize=10)
    return fig


def kv_expert_attention(P, tokens, t, path=None, title=None, vmin=1e-4):
    """P (T,T,N), the MoLKV weights of one sequence, or {label: (T,T,N)} (e.g. one per
    layer): query position t's row of each as an (expert n, key position j) heat map
    over the tokens it may see.

    Log colour scale (the weights span orders of magnitude), one scale for every
    panel, fixed from vmin to 1 and not fitted to the data: a near-uniform row (an
    untrained model) stays one flat colour instead of looking structured. Weights
    below vmin take the lowest colour. Token labels show a leading space as '␣'."""
    from matplotlib.colors import LogNorm
    layers = P if isinstance(P, dict) else {"": P}
    panels = {label: ("", np.asarray(P_l)[t, : t + 1]) for label, P_l in layers.items()}
    suptitle = title or f"MoLKV: where the query at position {t} (token '{token_labels([tokens[t]])[0]}') looks"
    fig = _weight_rows(panels, tokens, t + 1, LogNorm(vmin=vmin, vmax=1.0), suptitle,
                       "key position j, its token (␣ = a leading space)")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def bars(values, path=None, title="", ylabel="", log=False):
    """values: {label: number} as a bar chart (e.g. bytes loaded per token)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    labels = list(values)
    ax.bar(labels, [values[k] for k in labels], color=[f"C{i}" for i in range(len(labels))])
    if log:
        ax.set_yscale("log")
    for i, k in enumerate(labels):
        ax.annotate(f"{values[k]:,.0f}", (i, values[k]), ha="center", va="bottom", fontsize=8)
    top = max(values.values())
    ax.set_ylim(top=top * (4.0 if log else 1.12))          # room for the top bar's label under the title
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, path)


def val_curves(curves, path=None, title="Validation loss", references=None):
    """curves: {label: [[(step, val_loss), ...] per seed]} -> mean line, min-max band over seeds;
    references: {label: loss} as dashed horizontal lines (e.g. an ideal predictor)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (label, y) in enumerate((references or {}).items()):
        ax.axhline(y, color="grey", ls=("--", ":")[i % 2], lw=1, label=label)
    for i, (label, runs) in enumerate(curves.items()):
        steps = np.array([s for s, _ in runs[0]])
        losses = np.array([[v for _, v in run] for run in runs])          # (seeds, evals)
        ax.plot(steps, losses.mean(axis=0), color=f"C{i}", lw=2, label=f"{label} ({len(runs)} seeds)")
        if len(runs) > 1:
            ax.fill_between(steps, losses.min(axis=0), losses.max(axis=0), color=f"C{i}", alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel("validation cross-entropy (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _finish(fig, path)


def kv_cache_growth(series, path=None, title="Key-value expert cache while decoding",
                    ylabel="bytes (one sequence, one layer)"):
    """series: {label: [size after step 1, 2, ...]} as one line each (e.g. window None vs 3)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for i, (label, sizes) in enumerate(series.items()):
        ax.plot(range(1, len(sizes) + 1), sizes, color=f"C{i}", marker="o", ms=3, label=label)
    ax.set_xlabel("decoding step (tokens so far)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _finish(fig, path)


def intervals(values, path=None, title="", xlabel="", reference=0.0):
    """values: {label: (mean, half-width of a 95 % interval)} as points with error bars,
    one row each, and a dashed vertical line at `reference` (e.g. no difference)."""
    labels = list(values)
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(labels) + 1.4))
    for i, label in enumerate(labels):
        mean, half = values[label]
        colour = "C2" if mean + half < reference else "C3" if mean - half > reference else "C7"
        ax.errorbar(mean, i, xerr=half, fmt="o", color=colour, capsize=4, lw=2)
        ax.annotate(f"{mean:+.3f} ± {half:.3f}", (mean, i), xytext=(0, 7), textcoords="offset points",
                    ha="center", fontsize=8)
    ax.axvline(reference, color="grey", ls="--", lw=1)
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    ax.set_ylim(len(labels) - 0.4, -0.6)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _finish(fig, path)


def step_size_errors(steps, curves, path=None, title="Finite-difference error against the step h",
                     mark=1e-5):
    """steps: the h values; curves: {label: |numerical - analytic| at each h}, log-log.

    A vertical line marks `mark` (gradcheck's h). Zero errors are drawn at 1e-18."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for i, (label, errors) in enumerate(curves.items()):
        ax.loglog(steps, np.maximum(np.asarray(errors, dtype=float), 1e-18), color=f"C{i}",
                  marker="o", ms=3, label=label)
    if mark is not None:
        ax.axvline(mark, color="grey", ls="--", lw=1)
        mantissa, exponent = f"{mark:.0e}".split("e")                   # 1e-05 -> "1", "-05"
        ax.annotate(f"h = {mantissa}e{int(exponent)}", xy=(mark, 0.96), xycoords=("data", "axes fraction"),
                    xytext=(4, 0), textcoords="offset points", ha="left", va="top", fontsize=8,
                    bbox=dict(boxstyle="square,pad=0.15", facecolor="white", edgecolor="none", alpha=0.8))
    ax.set_xlabel("step h")
    ax.set_ylabel("|numerical - analytic|")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _finish(fig, path)


def error_bars(errors, tol=None, path=None, title="Relative error of the gradient check"):
    """errors: {label: relative error} as horizontal bars on a log axis; `tol` as a red line."""
    labels = list(errors)
    values = np.maximum([float(errors[k]) for k in labels], 1e-18)      # log axis: no zeros
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(labels) + 1.2))
    colours = ["C2" if tol is None or v < tol else "C3" for v in values]
    ax.barh(range(len(labels)), values, color=colours)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    if tol is not None:
        ax.axvline(tol, color="C3", ls="--", lw=1, label=f"tolerance {tol:g}")
        ax.legend(fontsize=8, loc="lower right")
    for i, v in enumerate(values):
        ax.annotate(f"{v:.1e}", (v, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    ax.set_xlabel("max relative error (log scale)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _finish(fig, path)


def category_curves(curves, categories, references=None, path=None, title="", xlabel="step",
                    ylabel="cross-entropy (nats)"):
    """curves: {model label: [(step, [value per category]), ...]}; categories: their names.

    One colour per model, one line style per category (solid, dashed, dotted, ...),
    references {label: y} as thin grey horizontal lines. Two small legends: one for
    the colours (and references), one for the line styles (categories).
    """
    from matplotlib.lines import Line2D
    styles = ("-", "--", ":", "-.")
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (label, rows) in enumerate(curves.items()):
        steps = [s for s, _ in rows]
        for j in range(len(categories)):
            ax.plot(steps, [v[j] for _, v in rows], color=f"C{i}", ls=styles[j % len(styles)],
                    marker="o", ms=2.5, lw=1.8)
    refs = list((references or {}).items())
    for label, y in refs:
        ax.axhline(y, color="grey", lw=1)
    handles = [Line2D([], [], color=f"C{i}", lw=2) for i in range(len(curves))]
    handles += [Line2D([], [], color="grey", lw=1) for _ in refs]
    first = ax.legend(handles, list(curves) + [label for label, _ in refs], fontsize=8, loc="upper right")
    ax.add_artist(first)
    cats = [Line2D([], [], color="black", ls=styles[j % len(styles)], lw=1.5) for j in range(len(categories))]
    ax.legend(cats, list(categories), title="answers", fontsize=8, title_fontsize=8, loc="lower left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def molkv_attention_profiles(found, path=None, title="MoLKV attention"):
    """found: {entry: {"init": profile, "trained": profile}} from tools/explain.py.

    One row per layer. Left: the current token's own weight sum_n P[t,t,n] by
    position t (dashed: at init, solid: trained; MoLE's is 1). Right: the
    weight by distance t - j, trained, on a log scale ("gated": its context
    attention over earlier tokens, with tanh(gate) in the legend)."""
    first = next(iter(found.values()))["trained"]
    L, T = first["own"].shape
    fig, axes = plt.subplots(L, 2, figsize=(11, 3.0 * L), squeeze=False)
    t = np.arange(T)
    for l in range(L):
        ax_own, ax_dist = axes[l]
        ax_own.axhline(1.0, color="grey", ls=":", lw=1, label="MoLE (always 1)")
        for i, (entry, prof) in enumerate(found.items()):
            gate = prof["trained"]["gate"][l]
            if gate is None:
                ax_own.plot(t, prof["init"]["own"][l], color=f"C{i}", ls="--", lw=1, label=f"{entry}, init")
                ax_own.plot(t, prof["trained"]["own"][l], color=f"C{i}", lw=2, label=f"{entry}, trained")
            label = entry if gate is None else f"{entry} context (tanh gate {gate:+.2f})"
            start = 0 if gate is None else 1                      # gated's context never sees distance 0
            dist = np.maximum(prof["trained"]["distance"][l], 1e-6)
            ax_dist.semilogy(t[start:], dist[start:], color=f"C{i}", lw=2, label=label)
        ax_own.set_ylim(0, 1.05)
        ax_own.set_xlabel("position t in the window")
        ax_own.set_ylabel(f"layer {l}: own weight")
        ax_dist.set_xlabel("distance t - j (tokens back)")
        ax_dist.set_ylabel("mean weight (log)")
        for ax in (ax_own, ax_dist):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    axes[0][0].set_title("the current token's own experts: sum_n P[t,t,n]")
    axes[0][1].set_title("weight by distance, trained: mean_t sum_n P[t,t-d,n]")
    fig.suptitle(title)
    return _finish(fig, path)


def paired_differences(panels, verdict, path=None, title="", xlabel="paired difference (nats)", columns=2):
    """panels: {panel title: {label: (mean, half-width of a 95 % interval)}}, one panel each,
    points with error bars against a dashed line at 0: green where verdict(mean, half) says
    "beats" (compare.verdict, the rule of docs/experiments.md: the whole interval below 0),
    red where "loses", grey where "ties"."""
    rows = -(-len(panels) // columns)
    n = max(len(v) for v in panels.values())
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, (0.42 * n + 1.3) * rows), squeeze=False)
    for ax, (name, values) in zip(axes.ravel(), panels.items()):
        for i, (label, (mean, half)) in enumerate(values.items()):
            colour = {"beats": "C2", "loses": "C3", "ties": "C7"}[verdict(mean, half)]
            ax.errorbar(mean, i, xerr=half, fmt="o", color=colour, capsize=4, lw=2)
            digits = 4 if max(abs(mean), half) < 0.01 else 3          # small differences: one more digit
            ax.annotate(f"{mean:+.{digits}f} ± {half:.{digits}f}", (mean, i), xytext=(0, 6), textcoords="offset points",
                        ha="center", fontsize=7)
        ax.axvline(0.0, color="grey", ls="--", lw=1)
        ax.set_yticks(range(len(values)), list(values), fontsize=8)
        ax.set_ylim(len(values) - 0.4, -0.7)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return _finish(fig, path)
