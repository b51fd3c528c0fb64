"""The tiny decoder-only language model: config, init, forward, backward.

Letters: B batch, T sequence length, D d_model, L layers, V vocabulary,
Fd dense FFN hidden size.

A pre-norm decoder, Llama-like but small, as in the MoLE code:

    e  = tok_emb[ids]                          (B,T,D)   raw token embeddings
    x  = e + pos_emb[:T]                       (B,T,D)   learned positions
    per layer l:
        x = x + attn(rmsnorm(x, ln1))
        h = rmsnorm(x, ln2)
        x = x + ffn(h) + experts(h, e)         experts: none | moe | mole | molkv
    logits = rmsnorm(x, ln_f) @ lm_head        (B,T,V)   untied head
    loss   = mean cross-entropy

The expert block sits *beside* the dense FFN, reading the normalized hidden
state h and — for MoLE and MoLKV — the raw embeddings e of the input ids.
Every kind runs through this one code path, so comparisons are fair.
Generation (with the caches) is in generate.py; parameter accounting in
params.py.

Parameters are one flat dict whose names read like the math:
`tok_emb`, `pos_emb`, `layers.0.ln1`, `layers.0.attn.qkv`, `layers.0.ffn.up`,
`layers.0.mole.router`, ..., `ln_f`, `lm_head`.
"""

import functools
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from minimolkv import attention, moe, mole, molkv, ops
from minimolkv.errors import check_ids, check_params, check_positive_int

KINDS = ("dense", "moe", "mole", "molkv")
EXPERTS = {"moe": moe, "mole": mole, "molkv": molkv}     # the expert block module of each kind
# matrices whose output is added to the residual stream (molkv.down_k makes keys, not a write)
RESIDUAL_WRITERS = ("attn.proj", "ffn.down", "moe.down", "mole.down", "molkv.down_v")


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
    kind: str = "molkv"           # "dense" | "moe" | "mole" | "molkv"
    n_experts: int = 4            # N
    d_expert: int = 128           # F, each expert's hidden size
    d_key: int = 16               # Dk, MoLKV key size
    window: int | None = None     # MoLKV: attend over the last `window` tokens' experts
    top_k: int = 2                # MoE: experts kept per token

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("vocab_size", "context_len", "d_model", "n_layers", "n_heads",
                     "n_experts", "d_expert", "d_key", "top_k"):
            check_positive_int(getattr(self, name), name)
        if isinstance(self.d_ff, bool) or not isinstance(self.d_ff, (int, np.integer)) or self.d_ff < 0:
            raise ValueError(f"d_ff must be an integer >= 0 (0: no dense FFN), got {self.d_ff!r}")
        check_positive_int(self.window, "window", allow_none=True)
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k={self.top_k} must be <= n_experts={self.n_experts}")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**d)


# ----------------------------------------------------------------------------
# parameter dict helpers: a block sees its own slice of the flat dict
# ----------------------------------------------------------------------------

def sub(params, prefix):
    """The entries under `prefix` with the prefix removed (same arrays, no copy)."""
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def put(grads, prefix, block_grads):
    """Store a block's gradients under `prefix` in the model's flat grad dict."""
    for k, g in block_grads.items():
        grads[prefix + k] = g


# ----------------------------------------------------------------------------
# the dense FFN: gelu(h @ up) @ down
# ----------------------------------------------------------------------------

def ffn_forward(p, h):
    """h (B,T,D) -> (B,T,D)."""
    z, c_up = ops.linear_forward(h, p["up"])                 # (B,T,D) -> (B,T,Fd)
    a, c_gelu = ops.gelu_forward(z)                          # (B,T,Fd)
    f, c_down = ops.linear_forward(a, p["down"])             # (B,T,Fd) -> (B,T,D)
    return f, (c_up, c_gelu, c_down)


def ffn_backward(df, cache):
    c_up, c_gelu, c_down = cache
    # f = a @ down
    da, d_down = ops.linear_backward(df, c_down)             # (B,T,Fd), (Fd,D)
    # a = gelu(z)
    dz = ops.gelu_backward(da, c_gelu)                       # (B,T,Fd)
    # z = h @ up
    dh, d_up = ops.linear_backward(dz, c_up)                 # (B,T,D), (D,Fd)
    return dh, {"up": d_up, "down": d_down}


# ----------------------------------------------------------------------------
# init
# ----------------------------------------------------------------------------

def init(config, seed=0, dtype=np.float32):
    """Fresh parameters. Matrices ~ N(0, 0.02²); every matrix that writes into
    the residual stream (RESIDUAL_WRITERS: attn.proj, ffn.down and the expert
    block's output projection) is scaled by 1/sqrt(2L), the same for every
    kind; norm gains 1. A fresh model's loss is close to ln V."""
    c = config
    rng = np.random.default_rng(seed)
    D, L = c.d_model, c.n_layers
    resid = 1.0 / np.sqrt(2 * L)
    params = {
        "tok_emb": 0.02 * rng.standard_normal((c.vocab_size, D)),      # (V,D)
        "pos_emb": 0.02 * rng.standard_normal((c.context_len, D)),     # (T_max,D)
    }
    for l in range(L):
        pre = f"layers.{l}."
        params[pre + "ln1"] = np.ones(D)                                # (D,)
        for k, v in attention.init(rng, D, c.n_heads).items():
            params[pre + "attn." + k] = v * (resid if "attn." + k in RESIDUAL_WRITERS else 1.0)
        params[pre + "ln2"] = np.ones(D)                                # (D,)
        if c.d_ff:
            params[pre + "ffn.up"] = 0.02 * rng.standard_normal((D, c.d_ff))            # (D,Fd)
            params[pre + "ffn.down"] = 0.02 * resid * rng.standard_normal((c.d_ff, D))  # (Fd,D)
        if c.kind == "molkv":
            block = molkv.init(rng, D, c.d_expert, c.n_experts, c.d_key)
        elif c.kind in EXPERTS:
            block = EXPERTS[c.kind].init(rng, D, c.d_expert, c.n_experts)
        else:
            block = {}
        for k, v in block.items():
            name = c.kind + "." + k
            params[pre + name] = v * (resid if name in RESIDUAL_WRITERS else 1.0)
    params["ln_f"] = np.ones(D)                                         # (D,)
    params["lm_head"] = 0.02 * rng.standard_normal((D, c.vocab_size))  # (D,V)
    return {k: np.asarray(v, dtype=dtype) for k, v in params.items()}


# ----------------------------------------------------------------------------
# the expert block of one layer, by kind
# ----------------------------------------------------------------------------

def experts_forward(config, p, h, e, ids, lut):
    """(B,T,D) -> (B,T,D). With `lut` (inference mode) no expert FFN runs."""
    c = config
    if c.kind == "moe":
        return moe.forward(p, h, c.top_k)
    if c.kind == "mole":
        if lut is not None:
            return mole.forward_lut(p, h, ids, lut), None
        return mole.forward(p, h, e)
    if c.kind == "molkv":
        if lut is not None:
            return molkv.forward_lut(p, h, ids, lut[0], lut[1], c.window), None
        return molkv.forward(p, h, e, c.window)
    return np.zeros_like(h), None                            # dense: no experts


def experts_backward(config, dy, cache):
    """-> dh (B,T,D), de (B,T,D) or None, grads."""
    if config.kind == "moe":
        dh, grads = moe.backward(dy, cache)
        return dh, None, grads
    if config.kind in ("mole", "molkv"):
        return EXPERTS[config.kind].backward(dy, cache)
    return np.zeros_like(dy), None, {}


def lut_names(config, l):
    """Names of layer l's tables: ('layers.l.mole',) or ('layers.l.molkv.k', 'layers.l.molkv.v')."""
    pre = f"layers.{l}.{config.kind}"
    return {"mole": (pre,), "molkv": (pre + ".k", pre + ".v")}.get(config.kind, ())


def layer_luts(config, luts, l):
    """The lookup table(s) of layer l — MoLE: lut; MoLKV: (lut_k, lut_v) — or None in training mode."""
    if luts is None or config.kind not in ("mole", "molkv"):
        return None
    tables = tuple(luts[name] for name in lut_names(config, l))
    return tables[0] if config.kind == "mole" else tables


# ----------------------------------------------------------------------------
# forward / backward of the whole model
# ----------------------------------------------------------------------------

class LayerCache(NamedTuple):
    """What one layer's forward keeps for its backward (named, so a debugger shows names)."""
    ln1: tuple          # rmsnorm cache of the attention input
    attn: dict          # attention.forward cache
    ln2: tuple          # rmsnorm cache of h
    ffn: tuple          # dense FFN cache (None when d_ff = 0)
    experts: object     # the expert block's cache (None for dense)


class ModelCache(NamedTuple):
    """What model.forward keeps for model.backward."""
    config: Config
    emb: tuple          # embedding cache (ids, table shape, dtype)
    layers: list        # one LayerCache per layer
    ln_f: tuple
    head: tuple
    loss: tuple         # cross-entropy cache (None without targets)


def check_inputs(params, config, ids, targets=None):
    """Bad ids, targets or parameters raise an error that names them."""
    check_ids(ids, config.vocab_size, "ids")
    if ids.ndim != 2:
        raise ValueError(f"ids must be a (B,T) array of token ids, got shape {ids.shape}")
    if ids.shape[1] > config.context_len:
        raise ValueError(f"ids has T={ids.shape[1]} tokens, longer than context_len={config.context_len}")
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"ids must hold at least one token per row, got shape {ids.shape}")
    if targets is not None:
        check_ids(targets, config.vocab_size, "targets")
        if targets.shape != ids.shape:
            raise ValueError(f"targets must have the shape of ids {ids.shape}, got {targets.shape}")
    check_params_fit(params, config)


def check_params_fit(params, config):
    """params must be exactly the dict init(config) makes: same keys, shapes, one float dtype."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be the dict from model.init, got {type(params).__name__}")
    expected = init_shapes(config)
    extra = sorted(set(params) - set(expected))
    if extra:
        raise ValueError(f"params do not fit this config (kind={config.kind!r}): unexpected {extra[0]!r}")
    try:
        check_params(params, expected)
    except ValueError as err:
        raise ValueError(f"params do not fit this config (kind={config.kind!r}): {err}") from None


@functools.lru_cache(maxsize=32)
def init_shapes(config):
    """{name: shape} of every parameter (computed once per config)."""
    small = init(config, seed=0, dtype=np.float32)
    return {k: v.shape for k, v in small.items()}


def forward(params, config, ids, targets=None, luts=None):
    """ids (B,T) -> (loss or None, logits (B,T,V), cache).

    luts: from build_luts; then MoLE/MoLKV layers look up instead of running
    their expert FFNs (inference mode: no backward).
    """
    check_inputs(params, config, ids, targets)
    check_luts(config, luts)
    B, T = ids.shape
    e, c_emb = ops.embedding_forward(ids, params["tok_emb"])               # (B,T) -> (B,T,D)
    x = e + params["pos_emb"][:T]                                          # (B,T,D)
    layers = []
    for l in range(config.n_layers):
        pre = f"layers.{l}."
        a_in, c_ln1 = ops.rmsnorm_forward(x, params[pre + "ln1"])          # (B,T,D)
        a, c_attn = attention.forward(sub(params, pre + "attn."), a_in, config.n_heads)  # (B,T,D)
        x = x + a                                                          # (B,T,D)
        h, c_ln2 = ops.rmsnorm_forward(x, params[pre + "ln2"])             # (B,T,D)
        f, c_ffn = ffn_forward(sub(params, pre + "ffn."), h) if config.d_ff else (0.0, None)  # (B,T,D)
        y, c_exp = experts_forward(config, sub(params, pre + config.kind + "."), h, e, ids,
                                   layer_luts(config, luts, l))            # (B,T,D)
        x = x + f + y                                                      # (B,T,D)
        layers.append(LayerCache(c_ln1, c_attn, c_ln2, c_ffn, c_exp))
    xf, c_lnf = ops.rmsnorm_forward(x, params["ln_f"])                     # (B,T,D)
    logits, c_head = ops.linear_forward(xf, params["lm_head"])             # (B,T,D) -> (B,T,V)
    loss, c_loss = (None, None)
    if targets is not None:
        loss, c_loss = ops.cross_entropy_forward(logits, targets)          # scalar
    cache = None if luts is not None else ModelCache(config, c_emb, layers, c_lnf, c_head, c_loss)
    return loss, logits, cache


def backward(cache, dloss=1.0):
    """The gradient of the loss with respect to every parameter (same keys, shapes)."""
    if cache is None:
        raise ValueError("backward needs a training-mode forward (luts=None) with targets")
    config, c_emb, layers, c_lnf, c_head, c_loss = cache
    if c_loss is None:
        raise ValueError("backward needs a forward with targets (the loss)")
    grads = {}
    # loss = cross_entropy(logits, targets)
    dlogits = ops.cross_entropy_backward(dloss, c_loss)                    # (B,T,V)
    # logits = xf @ lm_head
    dxf, grads["lm_head"] = ops.linear_backward(dlogits, c_head)           # (B,T,D)
    # xf = rmsnorm(x, ln_f)
    dx, grads["ln_f"] = ops.rmsnorm_backward(dxf, c_lnf)                   # (B,T,D)
    de_experts = np.zeros_like(dx)                                         # (B,T,D) sum over layers
    for l in reversed(range(config.n_layers)):
        pre = f"layers.{l}."
        c_ln1, c_attn, c_ln2, c_ffn, c_exp = layers[l]
        # x = x + f + y: the residual passes dx through; f and y both get dx
        # y = experts(h, e)
        dh, de, g = experts_backward(config, dx, c_exp)                    # (B,T,D), (B,T,D) or None
        put(grads, pre + config.kind + ".", g)
        if de is not None:
            de_experts += de                                               # e feeds every layer's experts
        # f = ffn(h)
        if c_ffn is not None:
            dh_ffn, g = ffn_backward(dx, c_ffn)                            # (B,T,D)
            put(grads, pre + "ffn.", g)
            dh = dh + dh_ffn                                               # h feeds ffn and experts: sum
        # h = rmsnorm(x, ln2)
        dx_ln2, grads[pre + "ln2"] = ops.rmsnorm_backward(dh, c_ln2)       # (B,T,D)
        dx = dx + dx_ln2                                                   # x feeds h and the residual
        # x = x + a, a = attn(a_in)
        da_in, g = attention.backward(dx, c_attn)                          # (B,T,D)
        put(grads, pre + "attn.", g)
        # a_in = rmsnorm(x, ln1)
        dx_ln1, grads[pre + "ln1"] = ops.rmsnorm_backward(da_in, c_ln1)    # (B,T,D)
        dx = dx + dx_ln1                                                   # x feeds a_in and the residual
    # x = e + pos_emb[:T]
    T = dx.shape[1]
    grads["pos_emb"] = np.zeros((config.context_len, dx.shape[2]), dtype=dx.dtype)
    grads["pos_emb"][:T] = dx.sum(axis=0)                                  # (T,D)
    # e = tok_emb[ids]: e feeds the residual stream AND every expert block — summed explicitly
    grads["tok_emb"] = ops.embedding_backward(dx + de_experts, c_emb)      # (V,D)
    return grads


# ----------------------------------------------------------------------------
# lookup tables of every MoLE / MoLKV layer
# ----------------------------------------------------------------------------

def build_luts(params, config):
    """{'layers.l.mole': (V,N,D)} or {'layers.l.molkv.k': (V,N,Dk), 'layers.l.molkv.v': (V,N,D)}.

    Empty for dense and moe (their experts read h, which is not a function of the id).
    """
    luts = {}
    for l in range(config.n_layers):
        if config.kind in ("mole", "molkv"):
            block = sub(params, f"layers.{l}.{config.kind}.")
            tables = EXPERTS[config.kind].build_lut(block, params["tok_emb"])   # lut, or (lut_k, lut_v)
            tables = (tables,) if config.kind == "mole" else tables
            luts.update(zip(lut_names(config, l), tables))
    return luts


def lut_shapes(config):
    """{name: shape} of the tables build_luts makes for this config."""
    c = config
    widths = {"mole": (c.d_model,), "molkv": (c.d_key, c.d_model)}.get(c.kind, ())   # keys, then values
    return {name: (c.vocab_size, c.n_experts, width)
            for l in range(c.n_layers) for name, width in zip(lut_names(c, l), widths)}


def check_luts(config, luts):
    """luts must be exactly the tables build_luts makes for this config."""
    if luts is None:
        return
    if not isinstance(luts, dict):
        raise TypeError(f"luts must be the dict from build_luts, got {type(luts).__name__}")
    expected = lut_shapes(config)
    if config.kind not in ("mole", "molkv"):
        raise ValueError(f"luts are for mole and molkv models; this model's kind is {config.kind!r}")
    for name, shape in expected.items():
        if name not in luts:
            raise ValueError(f"luts were built for another config: no table {name!r} "
                             f"(this config has {sorted(expected)})")
        if tuple(luts[name].shape) != shape:
            raise ValueError(f"luts were built for another config: {name!r} has shape "
                             f"{tuple(luts[name].shape)}, this config needs {shape}")


def generate(params, config, prompt_ids, n_tokens, temperature=1.0, top_k=None, seed=None, luts=None):
    """Sample a continuation with the KV caches — see generate.py, where it lives
    (the caches are a concept of their own)."""
    from minimolkv.generate import generate as generate_with_caches
    return generate_with_caches(params, config, prompt_ids, n_tokens, temperature, top_k, seed, luts)
