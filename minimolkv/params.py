"""Parameter accounting — the MoLE paper's Table 1 view of a model.

For a Config, count
    train       parameters trained (everything, expert FFNs included)
    ram         parameters resident in RAM at inference: MoLE/MoLKV expert
                FFNs (norm, up, down...) are replaced by lookup tables (parameters
                only: decoding's caches, the attention KV cache and MoLKV's
                key-value expert cache, t·N·(Dk + D) per layer, come on top)
    lut         numbers stored in the lookup tables (in storage, e.g. on disk)
    loaded      numbers read from the tables per token (one row per layer)
    activated   parameters that take part in computing one token, without the
                embedding tables (each token only reads one row of those):
                attention, norms, dense FFN, head, and the expert part —
                MoE: router + top_k experts; MoLE: router; MoLKV: query;
                the looked-up rows are counted in `loaded`.

    MoLE:  lut = L·V·N·D            loaded = L·N·D
    MoLKV: lut = L·V·N·(Dk + D)     loaded = L·N·(Dk + D)
"""

import dataclasses
import math

from minimolkv.files import format_bytes
from minimolkv.model import BLOCKS, lut_shapes, param_shapes


def role(name):
    """What a parameter is at inference: 'embedding', 'lut' (replaced by a
    table), 'routed' (an MoE expert weight: only top_k of N run) or 'dense'."""
    if name in ("tok_emb", "pos_emb"):
        return "embedding"
    parts = name.split(".")                                         # layers.l.<block>.<param>
    if len(parts) == 4 and parts[2] in BLOCKS:
        spec = BLOCKS[parts[2]]
        if parts[3] in spec.in_tables:
            return "lut"
        if parts[3] in spec.routed:
            return "routed"
    return "dense"


def count_params(config):
    """{train, ram, lut, loaded, activated}: counts of numbers (see the module docstring).
    Arithmetic on shapes: one layer's shapes are listed and counted n_layers times, so
    nothing is allocated and the time does not grow with the size (n_layers=10**6 too)."""
    c = config
    one = dataclasses.replace(c, n_layers=1)                        # every layer has the same shapes
    def each(name):                                                 # how many copies a shape stands for
        return c.n_layers if name.startswith("layers.") else 1
    size = {k: math.prod(s) * each(k) for k, s in param_shapes(one).items()}
    by_role = {r: sum(n for k, n in size.items() if role(k) == r)
               for r in ("embedding", "lut", "routed", "dense")}
    tables = lut_shapes(one).items()                                # (V, N, width) each, one layer
    return {
        "train": sum(size.values()),
        "ram": sum(size.values()) - by_role["lut"],
        "lut": sum(math.prod(s) * each(k) for k, s in tables),
        "loaded": sum(math.prod(s[1:]) * each(k) for k, s in tables),   # one row per table per token
        "activated": by_role["dense"] + by_role["routed"] * c.top_k // c.n_experts,
    }


def format_counts(config, itemsize=4):
    """A small table of count_params for printing; bytes at `itemsize` (4 = float32)."""
    n = count_params(config)
    rows = [
        ("trained parameters", f"{n['train']:,}"),
        ("resident in RAM at inference", f"{n['ram']:,}"),
        ("lookup tables in storage", f"{n['lut']:,} numbers = {format_bytes(n['lut'] * itemsize)}"),
        ("loaded from the tables per token", f"{n['loaded']:,} numbers = {format_bytes(n['loaded'] * itemsize)}"),
        ("activated per token (no embeddings)", f"{n['activated']:,}"),
    ]
    width = max(len(r[0]) for r in rows)
    kind = f"{config.kind} ({config.variant})" if config.kind == "molkv" else config.kind
    head = f"kind={kind}  V={config.vocab_size} D={config.d_model} L={config.n_layers} " \
           f"N={config.n_experts} F={config.d_expert} Dk={config.d_key} d_ff={config.d_ff}"
    return "\n".join([head] + [f"  {a:<{width}}  {b}" for a, b in rows])
