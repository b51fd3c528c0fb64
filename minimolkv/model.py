"""The tiny decoder-only language model: config, init, forward, backward, lookup tables.

Letters: B batch, T sequence length, D d_model, L layers, V vocabulary,
Fd dense FFN hidden size.

A pre-norm decoder, Llama-like but small, as in the MoLE code:

    e  = tok_emb[ids]                          (B,T,D)   raw token embeddings
    x  = e + pos_emb[:T]                       (B,T,D)   learned positions
    per layer l:
        x = x + attn(rmsnorm(x, ln1))
        h = rmsnorm(x, ln2)
        x = x + ffn(h) + experts(h, e)         experts: none | moe | mole | molkv | ctxattn
    logits = rmsnorm(x, ln_f) @ lm_head        (B,T,V)   untied head
    loss   = mean cross-entropy

The dense FFN and the expert block sit side by side: both read the
normalized hidden state h, and MoLE and MoLKV also read the raw embeddings e
of the input ids. They share one interface (ffn.py, moe.py, mole.py,
molkv.py, ctxattn.py): forward and backward call each by name, the same way for
every kind, so comparisons between kinds are fair; the table BLOCKS records their
shapes and options for initialisation, accounting and the benchmark. Generation (with the caches) is in
generate.py; parameter accounting in params.py.

Parameters are one flat dict whose names read like the math:
`tok_emb`, `pos_emb`, `layers.0.ln1`, `layers.0.attn.qkv`, `layers.0.ffn.up`,
`layers.0.mole.router`, ..., `ln_f`, `lm_head`. layer_params() shows it per
layer and block: layers[0]["mole"]["router"] is the same array.
"""

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from minimolkv import attention, ctxattn, ffn, moe, mole, molkv, ops, validate_run


@dataclass(frozen=True)
class Block:
    """What the model knows of a block beside attention (one row of BLOCKS)."""
    module: object              # the block's module (section 4 of docs/design.md: its interface)
    init_args: tuple            # Config fields given to module.init (and param_shapes, table_shapes), in order
    options: tuple = ()         # Config fields given by keyword to forward, forward_lut and decode_step
    residual: str = "down"      # the matrix that writes into the residual stream (scaled at init)
    in_tables: tuple = ()       # parameters the lookup tables replace at inference
    routed: tuple = ()          # parameters of which only top_k of n_experts run per token (MoE)


BLOCKS = {
    "ffn": Block(ffn, ("d_model", "d_ff")),
    "moe": Block(moe, ("d_model", "d_expert", "n_experts"), ("top_k",), routed=("up", "down")),
    "mole": Block(mole, ("d_model", "d_expert", "n_experts"), in_tables=("norm", "up", "down")),
    "molkv": Block(molkv, ("d_model", "d_expert", "n_experts", "d_key", "variant"), ("window", "variant"),
                   residual="down_v", in_tables=("norm", "up", "down_k", "down_v")),
    "ctxattn": Block(ctxattn, ("d_model", "d_key"), ("window",), residual="value"),
}
KINDS = ("dense", "moe", "mole", "molkv", "ctxattn")   # a kind names its expert block; dense has none


@dataclass(frozen=True)
class Config:
    """Sizes of the tiny model. d_ff = 0 means no dense FFN (the MoE baseline).

    Frozen: make a variant with dataclasses.replace(config, kind="mole")."""
    vocab_size: int = 512
    context_len: int = 64
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256               # dense FFN hidden size, in every layer
    kind: str = "molkv"           # "dense" | "moe" | "mole" | "molkv" | "ctxattn" (the control)
    n_experts: int = 4            # N
    d_expert: int = 128           # F, each expert's hidden size
    d_key: int = 16               # Dk, MoLKV key size
    window: int | None = None     # MoLKV, ctxattn: attend over the last `window` tokens only
    variant: str = "recency"      # MoLKV formulation: "recency" | "joint" | "gated" (molkv.py; E1 picked recency)
    top_k: int = 2                # MoE: experts kept per token

    def __post_init__(self):
        validate_run.config(self, KINDS, molkv.VARIANTS)

    def to_dict(self):
        """The fields, as saved with a run; `variant` only for MoLKV, the one kind that reads it."""
        d = dataclasses.asdict(self)
        if self.kind != "molkv":
            del d["variant"]
        return d

    @classmethod
    def from_dict(cls, d):
        return cls(**d)


def layer_blocks(config):
    """Names of the blocks beside attention in every layer: the dense FFN (when
    d_ff > 0), then the kind's expert block (none for dense)."""
    return (("ffn",) if config.d_ff else ()) + (() if config.kind == "dense" else (config.kind,))


def options(config, name):
    """The keyword options block `name` takes from the config, e.g. {"top_k": 2}."""
    return {field: getattr(config, field) for field in BLOCKS[name].options}


# ----------------------------------------------------------------------------
# parameters: init, their shapes, and the per-layer view
# ----------------------------------------------------------------------------

def init(config, seed=0, dtype=np.float32):
    """Fresh parameters (ops.init_params over param_shapes, in its order). Matrices ~
    N(0, 0.02²); every matrix that writes into the residual stream (attn.proj and each
    block's `residual`) is scaled by 1/sqrt(2L), the same for every kind; norm gains 1.
    A fresh model's loss is close to ln V."""
    validate_run.model_init(seed, dtype)
    L = config.n_layers
    writers = {f"layers.{l}.attn.proj" for l in range(L)}                     # into the residual stream
    writers |= {f"layers.{l}.{b}.{BLOCKS[b].residual}" for l in range(L) for b in layer_blocks(config)}
    return ops.init_params(np.random.default_rng(seed), param_shapes(config), dtype, scaled=writers,
                           scale=1.0 / np.sqrt(2 * L))


def param_shapes(config):
    """{name: shape} of every parameter init(config) makes, computed without allocating."""
    c = config
    shapes = {"tok_emb": (c.vocab_size, c.d_model), "pos_emb": (c.context_len, c.d_model)}
    for l in range(c.n_layers):
        pre = f"layers.{l}."
        shapes[pre + "ln1"] = (c.d_model,)
        shapes.update({pre + "attn." + k: s for k, s in attention.param_shapes(c.d_model, c.n_heads).items()})
        shapes[pre + "ln2"] = (c.d_model,)
        for name in layer_blocks(c):
            spec = BLOCKS[name]
            block = spec.module.param_shapes(*(getattr(c, f) for f in spec.init_args))
            shapes.update({pre + name + "." + k: s for k, s in block.items()})
    shapes.update(ln_f=(c.d_model,), lm_head=(c.d_model, c.vocab_size))
    return shapes


def layer_params(params, n_layers):
    """The flat dict per layer and block: [{"ln1": (D,), "attn": {"qkv": .., "proj": ..},
    "ln2": (D,), "ffn": {...}, "mole": {...}}, ...] -- the same arrays, no copies.
    Works for the flat dict of lookup tables too ("layers.0.mole.u" -> [0]["mole"]["u"])."""
    layers = [{} for _ in range(n_layers)]
    for name, value in params.items():
        if name.startswith("layers."):
            _, l, rest = name.split(".", 2)                  # "layers", "0", "mole.router"
            block, _, key = rest.partition(".")
            if key:
                layers[int(l)].setdefault(block, {})[key] = value
            else:
                layers[int(l)][block] = value                # ln1, ln2
    return layers


# ----------------------------------------------------------------------------
# forward / backward of the whole model
# ----------------------------------------------------------------------------

class LayerCache(NamedTuple):
    """What one layer's forward keeps for its backward (named, so a debugger shows names)."""
    ln1_cache: ops.RmsnormCache         # a_in = rmsnorm(x, ln1)
    attn: attention.AttentionCache      # a = attn(a_in)
    ln2_cache: ops.RmsnormCache         # h = rmsnorm(x, ln2)
    ffn: object                         # ffn.FfnCache of ffn(h); None when d_ff = 0
    experts: object                     # the expert block's cache (moe, mole, molkv, ctxattn); None for dense


class ModelCache(NamedTuple):
    """What model.forward keeps for model.backward."""
    config: Config
    emb: ops.EmbeddingCache             # e = tok_emb[ids]
    layers: list                        # one LayerCache per layer
    ln_f_cache: ops.RmsnormCache        # xf = rmsnorm(x, ln_f)
    head: ops.LinearCache               # logits = xf @ lm_head
    loss: ops.CrossEntropyCache | None  # None without targets


def forward(params, config, ids, targets=None, luts=None, *, layers=None, check=True):
    """ids (B,T) -> (loss or None, logits (B,T,V), cache).

    luts: from build_luts; then MoLE/MoLKV layers look up instead of running
    their expert FFNs (inference mode: no cache, no backward).
    layers: layer_params(params), when the caller made it once (train does, per run).
    check=False: the caller has validated params, ids and targets (train does, once).
    """
    if check:
        validate_run.model_forward(params, config, ids, targets, luts, param_shapes(config), lut_shapes(config))
    B, T = ids.shape
    c = config
    tables = layer_params(luts, c.n_layers) if luts is not None else None
    layers = layer_params(params, c.n_layers) if layers is None else layers
    e, c_emb = ops.embedding_forward(ids, params["tok_emb"])               # (B,T) -> (B,T,D)
    x = e + params["pos_emb"][:T]                                          # (B,T,D)
    caches = []
    for l, p in enumerate(layers):
        a_in, c_ln1 = ops.rmsnorm_forward(x, p["ln1"])                     # (B,T,D)
        a, c_attn = attention.forward(p["attn"], a_in, c.n_heads, check=False)  # (B,T,D)
        x = x + a                                                          # (B,T,D)
        h, c_ln2 = ops.rmsnorm_forward(x, p["ln2"])                        # (B,T,D)
        c_ffn = c_experts = None
        # x = x + ffn(h) + experts(h, e)
        if c.d_ff:
            y, c_ffn = ffn.forward(p["ffn"], h, check=False)               # (B,T,D) the dense FFN
            x = x + y                                                      # (B,T,D)
        if c.kind == "moe":
            y, c_experts = moe.forward(p["moe"], h, top_k=c.top_k, check=False)          # (B,T,D)
        elif c.kind == "mole" and tables is None:
            y, c_experts = mole.forward(p["mole"], h, e, check=False)                     # (B,T,D)
        elif c.kind == "mole":                                             # from the tables: no expert FFN runs
            y = mole.forward_lut(p["mole"], h, ids, tables[l]["mole"], check=False)       # (B,T,D)
        elif c.kind == "molkv" and tables is None:
            y, c_experts = molkv.forward(p["molkv"], h, e, window=c.window, variant=c.variant,
                                         check=False)                                     # (B,T,D)
        elif c.kind == "molkv":                                            # from the tables: no expert FFN runs
            y = molkv.forward_lut(p["molkv"], h, ids, tables[l]["molkv"], window=c.window, variant=c.variant,
                                  check=False)                                            # (B,T,D)
        elif c.kind == "ctxattn":
            y, c_experts = ctxattn.forward(p["ctxattn"], h, window=c.window, check=False)  # (B,T,D)
        if c.kind != "dense":
            x = x + y                                                      # (B,T,D)
        caches.append(LayerCache(c_ln1, c_attn, c_ln2, c_ffn, c_experts))
    xf, c_lnf = ops.rmsnorm_forward(x, params["ln_f"])                     # (B,T,D)
    logits, c_head = ops.linear_forward(xf, params["lm_head"])             # (B,T,D) -> (B,T,V)
    loss, c_loss = None, None
    if targets is not None:
        loss, c_loss = ops.cross_entropy_forward(logits, targets, check=False)   # scalar
    cache = None if luts is not None else ModelCache(config, c_emb, caches, c_lnf, c_head, c_loss)
    return loss, logits, cache


def backward(cache, dloss=1.0, *, check=True):
    """The gradient of the loss with respect to every parameter (same keys, shapes).
    check=False: cache is model.forward's with targets, dloss a finite number (train's steps)."""
    if check:
        validate_run.model_cache(cache, ModelCache, dloss)
    config, c_emb, layers, c_lnf, c_head, c_loss = cache
    grads = {}
    # loss = cross_entropy(logits, targets)
    dlogits = ops.cross_entropy_backward(dloss, c_loss)                    # (B,T,V)
    # logits = xf @ lm_head
    dxf, grads["lm_head"] = ops.linear_backward(dlogits, c_head)           # (B,T,D)
    # xf = rmsnorm(x, ln_f)
    dx, grads["ln_f"] = ops.rmsnorm_backward(dxf, c_lnf)                   # (B,T,D)
    de_experts = np.zeros_like(dx)                                         # (B,T,D) summed over layers
    kind = config.kind
    for l in reversed(range(config.n_layers)):
        pre = f"layers.{l}."
        c = layers[l]
        # x = x + ffn(h) + experts(h, e): the residual passes dx through; each block gets dx
        dh = np.zeros_like(dx)                                             # (B,T,D)
        if config.d_ff:
            dh_ffn, _, g = ffn.backward(dx, c.ffn, check=False)            # (B,T,D)
            for k, v in g.items():
                grads[pre + "ffn." + k] = v
            dh += dh_ffn                                                   # h feeds every block: sum
        if kind != "dense":
            if kind == "moe":
                dh_experts, de, g = moe.backward(dx, c.experts, check=False)       # (B,T,D), None
            elif kind == "mole":
                dh_experts, de, g = mole.backward(dx, c.experts, check=False)      # (B,T,D), (B,T,D)
            elif kind == "molkv":
                dh_experts, de, g = molkv.backward(dx, c.experts, check=False)     # (B,T,D), (B,T,D)
            else:
                dh_experts, de, g = ctxattn.backward(dx, c.experts, check=False)   # (B,T,D), None
            for k, v in g.items():
                grads[pre + kind + "." + k] = v
            dh += dh_experts                                               # h feeds every block: sum
            if de is not None:                                             # MoLE/MoLKV read e too
                de_experts += de                                           # e feeds every layer's experts
        # h = rmsnorm(x, ln2)
        dx_ln2, grads[pre + "ln2"] = ops.rmsnorm_backward(dh, c.ln2_cache)       # (B,T,D)
        dx = dx + dx_ln2                                                   # x feeds h and the residual
        # x = x + a, a = attn(a_in)
        da_in, g = attention.backward(dx, c.attn, check=False)             # (B,T,D)
        for k, v in g.items():
            grads[pre + "attn." + k] = v
        # a_in = rmsnorm(x, ln1)
        dx_ln1, grads[pre + "ln1"] = ops.rmsnorm_backward(da_in, c.ln1_cache)    # (B,T,D)
        dx = dx + dx_ln1                                                   # x feeds a_in and the residual
    # x = e + pos_emb[:T]
    T = dx.shape[1]
    grads["pos_emb"] = np.zeros((config.context_len, dx.shape[2]), dtype=dx.dtype)
    grads["pos_emb"][:T] = dx.sum(axis=0)                                  # (T,D)
    # e = tok_emb[ids]: e feeds the residual stream AND every expert block -- summed explicitly
    grads["tok_emb"] = ops.embedding_backward(dx + de_experts, c_emb)      # (V,D)
    return grads


# ----------------------------------------------------------------------------
# lookup tables of every MoLE / MoLKV layer
# ----------------------------------------------------------------------------

def build_luts(params, config, *, check=True):
    """{"layers.l.mole.u": (V,N,D)} or {"layers.l.molkv.k": (V,N,Dk), "layers.l.molkv.v": (V,N,D)}
    for every layer l. Empty for the other kinds (their blocks read h, not a function of the id)."""
    if check:
        validate_run.model_params(params, config, param_shapes(config))
    c, luts = config, {}
    for l, p in enumerate(layer_params(params, c.n_layers)):
        if c.kind == "mole":
            tables = mole.build_lut(p["mole"], params["tok_emb"], check=False)        # {"u": (V,N,D)}
        elif c.kind == "molkv":
            tables = molkv.build_lut(p["molkv"], params["tok_emb"], check=False)      # {"k": .., "v": ..}
        else:
            tables = {}
        for t, table in tables.items():
            luts[f"layers.{l}.{c.kind}.{t}"] = table
    return luts


def lut_shapes(config):
    """{name: shape} of the tables build_luts makes for this config."""
    c, shapes = config, {}
    for l in range(c.n_layers):
        if c.kind == "mole":
            tables = mole.table_shapes(c.vocab_size, c.d_model, c.d_expert, c.n_experts)
        elif c.kind == "molkv":
            tables = molkv.table_shapes(c.vocab_size, c.d_model, c.d_expert, c.n_experts, c.d_key, c.variant)
        else:
            tables = {}
        for t, shape in tables.items():
            shapes[f"layers.{l}.{c.kind}.{t}"] = shape
    return shapes
