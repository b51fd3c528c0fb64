"""The dense FFN: the feed-forward half of every layer, gelu(h @ up) @ down.

Letters: B batch, T sequence length, D d_model, Fd hidden size (Config.d_ff).

Parameters (no biases): up (D,Fd), down (Fd,D).

    z = h @ up            (B,T,Fd)
    a = gelu(z)           (B,T,Fd)
    y = a @ down          (B,T,D)

It has the interface of every block beside attention (see moe.py, mole.py,
molkv.py), so the model runs them all the same way: it reads the normalized
hidden state h and ignores the embeddings e, builds no lookup table, and
decodes without a state.
"""

from typing import NamedTuple

import numpy as np

from minimolkv import ops, validate


class FfnCache(NamedTuple):
    up_cache: ops.LinearCache    # z = h @ up
    gelu: ops.GeluCache        # a = gelu(z)
    down_cache: ops.LinearCache  # y = a @ down


def init(rng, d_model, d_ff, dtype=np.float64):
    """N(0, 0.02²) weights. (model.init scales `down`, a write into the residual
    stream, by 1/sqrt(2L).)"""
    validate.init_args(dtype, d_model=d_model, d_ff=d_ff)
    return ops.init_params(rng, param_shapes(d_model, d_ff), dtype)


def param_shapes(d_model, d_ff):
    """{name: shape} of what init makes (for checks and accounting, without allocating)."""
    return {"up": (d_model, d_ff), "down": (d_ff, d_model)}


def table_shapes(vocab_size, d_model, d_ff):
    """No lookup tables (build_lut returns {})."""
    return {}


def forward(params, h, e=None, *, check=True):
    """h (B,T,D) -> y (B,T,D), cache. `e` is not read (the interface of every block).
    check=False: the caller has validated the inputs (the model does, once)."""
    if check:
        validate.block_input("ffn", params, param_shapes, h, e)
    z, c_up = ops.linear_forward(h, params["up"])           # (B,T,D) -> (B,T,Fd)
    a, c_gelu = ops.gelu_forward(z)                         # (B,T,Fd)
    y, c_down = ops.linear_forward(a, params["down"])       # (B,T,Fd) -> (B,T,D)
    return y, FfnCache(c_up, c_gelu, c_down)


def backward(dy, cache, *, check=True):
    """dy (B,T,D) -> dh (B,T,D), de None (e is not read), grads {up, down}."""
    if check:
        validate.gradient(dy, cache, (FfnCache,), "ffn.forward",
                          lambda c: (c.down_cache.x.shape[:-1] + c.down_cache.w.shape[1:], c.down_cache.w.dtype))
    # y = a @ down
    da, d_down = ops.linear_backward(dy, cache.down_cache)        # (B,T,Fd), (Fd,D)
    # a = gelu(z)
    dz = ops.gelu_backward(da, cache.gelu)                  # (B,T,Fd)
    # z = h @ up
    dh, d_up = ops.linear_backward(dz, cache.up_cache)            # (B,T,D), (D,Fd)
    return dh, None, {"up": d_up, "down": d_down}


def build_lut(params, emb, *, check=True):
    """No tables: the FFN reads h, which is not a function of the token id."""
    return {}


def forward_lut(params, h, ids, luts, *, check=True):
    """Inference is the train-mode forward (nothing to look up)."""
    return forward(params, h, check=check)[0]


def decode_step(params, h_t, ids_t, luts, state, *, check=True):
    """One token: h_t (B,D) -> y_t (B,D). Stateless: the state stays None."""
    if check:
        validate.block_input("ffn", params, param_shapes, h_t, name="h_t")
    return forward(params, h_t[:, None], check=False)[0][:, 0], None
