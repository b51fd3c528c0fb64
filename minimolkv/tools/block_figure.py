"""The picture of one MoLKV layer and its data flow (docs/block.png, lesson 02).

Where the two inputs enter: e, the raw token embedding, feeds only the expert
FFNs, so their keys and values are functions of the token id and become the
lookup tables; h, the normalized hidden state, feeds the dense FFN and the
query. Decoding keeps two caches per layer: the attention layer's KV cache
(one key and one value of width D per earlier token, computed from x) and
the key-value expert cache (the N keys and N values looked up for every
earlier token).

    python -m minimolkv.tools.block_figure --out docs/block.png
"""

import argparse

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

RESIDUAL, TOKEN, HIDDEN, CACHE = "#e6e6e6", "#fdd9a8", "#c6dcf5", "#cdeccd"   # box colours by what feeds them


def _box(ax, x, y, w, h, text, colour, size=8.5, bold=False):
    """A rounded box with its lower-left corner at (x, y); -> its centre."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                facecolor=colour, edgecolor="#444444", lw=1.0))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size,
            fontweight="bold" if bold else "normal")
    return x + w / 2, y + h / 2


def _arrow(ax, start, end, text=None, colour="#333333", offset=(0.0, 0.0), style="-|>", ls="-"):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=11, color=colour, lw=1.3,
                                 linestyle=ls, shrinkA=0, shrinkB=0))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text,
                fontsize=8, ha="center", va="center", color=colour)


def draw(path=None):
    """Draw the block; with a path, save the PNG and close the figure. -> the Figure."""
    fig, ax = plt.subplots(figsize=(11.5, 6.6))
    ax.set_xlim(0, 17)
    ax.set_ylim(0, 10)
    ax.axis("off")

    # the residual stream, bottom to top
    _box(ax, 0.2, 0.3, 2.4, 0.8, "token id $i_t$", TOKEN, bold=True)
    _box(ax, 0.2, 1.7, 2.4, 0.9, "embedding\n$e_t = E[i_t]$  (D,)", TOKEN)
    _arrow(ax, (1.4, 1.1), (1.4, 1.7))
    _box(ax, 0.2, 3.2, 2.4, 0.8, "$x$ (layer 0:\n$e_t$ + pos$_t$)", RESIDUAL)
    _arrow(ax, (1.4, 2.6), (1.4, 3.2))
    ax.plot([1.4, 1.4], [4.0, 9.3], color="#888888", lw=3, zorder=0)                 # the residual stream x
    ax.text(1.25, 9.55, "residual stream x (to the next layer)", fontsize=8, color="#555555")
    _arrow(ax, (1.4, 9.0), (1.4, 9.45), colour="#888888")

    # attention, with its KV cache
    _box(ax, 2.6, 4.4, 2.6, 0.9, "rmsnorm, then causal\nself-attention (H heads)", RESIDUAL)
    _arrow(ax, (1.4, 4.85), (2.6, 4.85), colour="#888888")
    _arrow(ax, (5.2, 4.85), (5.6, 4.85), colour="#888888", style="-")
    ax.plot([5.6, 5.6, 1.6], [4.85, 5.55, 5.55], color="#888888", lw=1.3)
    ax.text(1.55, 5.55, "+", fontsize=13, ha="center", va="center")
    _box(ax, 3.0, 3.0, 3.3, 1.0, "attention KV cache (decoding)\nk, v of positions ≤ t, from x:\n2D numbers per token",
         CACHE, size=7.5)
    _arrow(ax, (3.9, 4.0), (3.9, 4.4), colour="#2e7d32", style="<|-|>")

    # h, the dense FFN, the query
    _box(ax, 2.6, 6.0, 1.9, 0.8, "rmsnorm → $h_t$", HIDDEN, bold=True)
    _arrow(ax, (1.4, 6.4), (2.6, 6.4), colour="#888888")
    _box(ax, 5.2, 7.9, 2.2, 0.8, "dense FFN(h)", HIDDEN)
    _arrow(ax, (3.55, 6.8), (3.55, 8.3))
    _arrow(ax, (3.55, 8.3), (5.2, 8.3))
    _arrow(ax, (5.2, 8.5), (1.6, 8.5), text="+", offset=(-1.6, 0.2))
    _box(ax, 5.2, 6.0, 2.2, 0.8, "query\n$q_t = h_t W^Q$  ($D_k$,)", HIDDEN)
    _arrow(ax, (4.5, 6.4), (5.2, 6.4))

    # the attention over (position, expert)
    _box(ax, 8.3, 5.7, 5.0, 1.45,
         "attention over (position, expert)\n"
         "$S_{t,j,n} = q_t\\cdot k_{j,n}/\\sqrt{D_k} - m_n\\,(t-j)$  (recency)\n"
         "$P$ = one softmax over all $(j, n)$,  $j \\leq t$\n"
         "$y_t = \\sum_{j,n} P_{t,j,n}\\, v_{j,n}$  (D,)", "#e8ddf5", size=8)
    _arrow(ax, (7.4, 6.4), (8.3, 6.4), text="$q_t$", offset=(0, 0.2))
    ax.plot([10.8, 10.8, 1.6], [7.15, 9.05, 9.05], color="#333333", lw=1.3)
    _arrow(ax, (2.2, 9.05), (1.6, 9.05))
    ax.text(6.5, 9.25, "$x \\leftarrow x + \\mathrm{ffn}(h) + y$  (the MoLKV block's output $y_t$)", fontsize=8.5)

    # e feeds the experts: training runs the FFNs, inference looks their outputs up
    _box(ax, 4.0, 1.4, 4.2, 1.5, "N expert FFNs on $e$ (training)\n"
         "$a_n = \\mathrm{gelu}(\\mathrm{rmsnorm}(e)\\,U_n)$\n"
         "key $k_{t,n} = a_n W^K_n$ ($D_k$,)\nvalue $v_{t,n} = a_n W^V_n$ (D,)", TOKEN, size=8)
    _arrow(ax, (2.6, 2.15), (4.0, 2.15), text="e only", offset=(0, 0.2), colour="#b35900")
    _box(ax, 4.0, 0.1, 4.2, 1.0, "or, after training, lookup tables (disk)\n"
         "row $i_t$ of  k (V,N,$D_k$)  and  v (V,N,D)", TOKEN, size=8)
    _arrow(ax, (2.6, 0.7), (4.0, 0.7), text="id only", offset=(0, 0.2), colour="#b35900")

    # the key-value expert cache
    _box(ax, 9.3, 1.0, 4.6, 2.4, "", CACHE)
    ax.text(11.6, 3.05, "key-value expert cache (decoding)", ha="center", fontsize=8.5, fontweight="bold")
    ax.text(11.6, 1.4, "N keys + N values per token, N($D_k$+D) numbers;\n"
            "positions $j \\leq t$ (the last w with a window)", ha="center", fontsize=7.5)
    for j in range(6):                                                       # one block of N per cached token
        for n in range(4):
            ax.add_patch(plt.Rectangle((9.6 + 0.66 * j, 1.95 + 0.22 * n), 0.55, 0.18,
                                       facecolor="#ffe0b2" if j == 5 else "#a5d6a7", edgecolor="#555555", lw=0.5))
        ax.text(9.88 + 0.66 * j, 2.9, f"j={j}" if j < 5 else "j=t", ha="center", fontsize=6.5)
    _arrow(ax, (8.2, 2.15), (9.3, 2.15), text="append", offset=(0, 0.2))
    _arrow(ax, (8.2, 0.6), (9.3, 1.3))
    _arrow(ax, (11.6, 3.4), (11.6, 5.7), text="all $k_{j,n}, v_{j,n}$", offset=(0.75, 0))

    # the legend of colours
    for k, (colour, label) in enumerate(((TOKEN, "depends on the token id only (e): a lookup"),
                                         (HIDDEN, "depends on the context (h)"),
                                         (CACHE, "kept while decoding, one entry per token"))):
        ax.add_patch(plt.Rectangle((13.9, 9.3 - 0.45 * k), 0.35, 0.3, facecolor=colour, edgecolor="#444444"))
        ax.text(14.4, 9.45 - 0.45 * k, label, fontsize=7.5, va="center")
    ax.set_title("One MoLKV layer: e feeds the key-value experts, h feeds the query", fontsize=11)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=90, metadata={"Software": None})
        plt.close(fig)
    return fig


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minimolkv.tools.block_figure", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/block.png", metavar="PNG", help="where to save (default docs/block.png)")
    args = p.parse_args(argv)
    draw(args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
