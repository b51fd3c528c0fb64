"""Causal multi-head self-attention, and its KV cache for decoding.

Notation: B batch, T sequence length, D d_model, H heads, hs = D // H head
size, t the number of positions held in a decoding cache.

Parameters (no biases):
    qkv   (D, 3D)  fused query/key/value projection. `x @ qkv` is split along
                   its last axis into three blocks of D columns, in this order:
                   columns [0, D) give the queries, [D, 2D) the keys and
                   [2D, 3D) the values. Each block is then cut into H heads of
                   hs consecutive columns: head i owns columns [i*hs, (i+1)*hs).
    proj  (D, D)   output projection, applied after the heads are merged back.

The math, per head:
    S = q @ k^T / sqrt(hs)       scores, position t attends to position j
                                 (computed as (q / sqrt(hs)) @ k^T: fewer multiplies)
    S[t, j] = -inf  for j > t    causal mask (a token never sees the future)
    P = softmax(S) over j        attention weights, each row sums to 1
    o = P @ v                    weighted sum of the values

API:
    init(rng, d_model, n_heads, dtype=np.float64) -> params
    forward(params, x, n_heads) -> (y, cache)          x (B,T,D) -> y (B,T,D)
    backward(dy, cache) -> (dx, grads)
    decode_step(params, x_t, n_heads, kv=None, max_len=None) -> (y_t, kv)
"""

from typing import NamedTuple

import numpy as np

from minimolkv import kvbuffer, ops, validate


class AttentionCache(NamedTuple):
    qkv_cache: ops.LinearCache   # qkv = x @ params["qkv"]
    qs: np.ndarray             # (B,H,T,hs) queries times scale
    k: np.ndarray              # (B,H,T,hs) keys
    v: np.ndarray              # (B,H,T,hs) values
    P: np.ndarray              # (B,H,T,T) attention weights
    proj_cache: ops.LinearCache  # y = merged @ params["proj"]
    scale: float               # 1 / sqrt(hs)
    n_heads: int


class KVCache(NamedTuple):
    """Keys and values of the t tokens decoded so far, in buffers with room to grow
    (kvbuffer.py): positions [0, t) of axis 2 are filled."""
    k_buffer: np.ndarray       # (B,H,capacity,hs)
    v_buffer: np.ndarray       # (B,H,capacity,hs)
    length: int                # t

    @property
    def k(self):
        return kvbuffer.filled(self.k_buffer, self.length, axis=2)     # (B,H,t,hs) a view

    @property
    def v(self):
        return kvbuffer.filled(self.v_buffer, self.length, axis=2)     # (B,H,t,hs) a view


# ----------------------------------------------------------------------------
# init / forward / backward
# ----------------------------------------------------------------------------

def init(rng, d_model, n_heads, dtype=np.float64):
    """N(0, 0.02²) weights. (model.init scales `proj`, a write into the
    residual stream, by 1/sqrt(2L).)"""
    validate.init_args(dtype, d_model=d_model, n_heads=n_heads)
    return ops.init_params(rng, param_shapes(d_model, n_heads), dtype)


def param_shapes(d_model, n_heads):
    """{name: shape} of what init makes (for checks and accounting, without allocating)."""
    return {"qkv": (d_model, 3 * d_model), "proj": (d_model, d_model)}


def forward(params, x, n_heads, *, check=True):
    """x (B,T,D) -> y (B,T,D), causal self-attention over the T positions.
    check=False: the caller has validated the inputs (the model does, once)."""
    if check:
        validate.block_input("attention", params, param_shapes, x, name="x", more=(n_heads,))
    B, T, D = x.shape
    H, hs = n_heads, D // n_heads                           # heads, head size
    scale = 1.0 / float(np.sqrt(hs))                        # a Python float: keeps x's dtype

    qkv, c_qkv = ops.linear_forward(x, params["qkv"])       # (B,T,D) -> (B,T,3D)
    # split the heads: head i takes columns [i*hs, (i+1)*hs) of q, k and v
    q = qkv[..., :D].reshape(B, T, H, hs).transpose(0, 2, 1, 3)          # (B,T,D) -> (B,H,T,hs)
    k = qkv[..., D:2 * D].reshape(B, T, H, hs).transpose(0, 2, 1, 3)     # (B,T,D) -> (B,H,T,hs)
    v = qkv[..., 2 * D:].reshape(B, T, H, hs).transpose(0, 2, 1, 3)      # (B,T,D) -> (B,H,T,hs)
    qs = q * scale                                          # (B,H,T,hs) scaled before the product: T/hs x less work
    S = qs @ k.transpose(0, 1, 3, 2)                        # (B,H,T,hs) @ (B,H,hs,T) -> (B,H,T,T)
    offset = ops.score_offset(T, T)[0][:, :, 0]             # (T,T) 0, or -inf where j > t
    S += offset                                             # (B,H,T,T)  masked, in place
    P, _ = ops.softmax_forward(S)                           # (B,H,T,T)  rows sum to 1 over j
    o = P @ v                                               # (B,H,T,T) @ (B,H,T,hs) -> (B,H,T,hs)
    if not np.isfinite(o).all():                            # rare: a NaN or inf in x stays where it is
        P, o = ops.masked_attention(S, np.isneginf(offset), v)   # (B,H,T,T), (B,H,T,hs)
    merged = o.transpose(0, 2, 1, 3).reshape(B, T, D)       # (B,H,T,hs) -> (B,T,D) the heads merged
    y, c_proj = ops.linear_forward(merged, params["proj"])  # (B,T,D) -> (B,T,D)
    return y, AttentionCache(c_qkv, qs, k, v, P, c_proj, scale, n_heads)


def backward(dy, cache, *, check=True):
    """dy (B,T,D) -> dx (B,T,D), grads {"qkv": (D,3D), "proj": (D,D)}."""
    c = cache
    if check:
        validate.gradient(dy, c, (AttentionCache,), "attention.forward",
                          lambda c: (c.proj_cache.x.shape, c.proj_cache.x.dtype))
    # y = merged @ proj
    d_merged, d_proj = ops.linear_backward(dy, c.proj_cache)          # (B,T,D), (D,D)
    B, H, T, hs = c.v.shape
    # merged = o.transpose(0, 2, 1, 3).reshape(B, T, D)
    do = d_merged.reshape(B, T, H, hs).transpose(0, 2, 1, 3)    # (B,T,D) -> (B,H,T,hs)
    # o = P @ v
    dP = do @ c.v.transpose(0, 1, 3, 2)                         # (B,H,T,hs) @ (B,H,hs,T) -> (B,H,T,T)
    dv = c.P.transpose(0, 1, 3, 2) @ do                         # (B,H,T,T) @ (B,H,T,hs) -> (B,H,T,hs)
    # P = softmax(S)   (masked entries have P = 0, so they get dS = 0: the mask needs no backward)
    dS = ops.softmax_backward(dP, c.P)                          # (B,H,T,T)
    # S = qs @ k^T   (+ the mask: a constant)
    dqs = dS @ c.k                                              # (B,H,T,T) @ (B,H,T,hs) -> (B,H,T,hs)
    dk = dS.transpose(0, 1, 3, 2) @ c.qs                        # (B,H,T,T) @ (B,H,T,hs) -> (B,H,T,hs)
    # qs = q * scale
    dq = dqs * c.scale                                          # (B,H,T,hs)
    # q, k, v = the three column blocks of qkv, heads split
    dqkv = np.concatenate([dq.transpose(0, 2, 1, 3).reshape(B, T, H * hs),
                           dk.transpose(0, 2, 1, 3).reshape(B, T, H * hs),
                           dv.transpose(0, 2, 1, 3).reshape(B, T, H * hs)], axis=-1)   # (B,T,3D)
    # qkv = x @ params["qkv"]
    dx, d_qkv = ops.linear_backward(dqkv, c.qkv_cache)                # (B,T,D), (D,3D)
    return dx, {"qkv": d_qkv, "proj": d_proj}


# ----------------------------------------------------------------------------
# decoding with a KV cache
# ----------------------------------------------------------------------------

def decode_step(params, x_t, n_heads, kv=None, *, max_len=None, check=True):
    """One decoding step: x_t (B,D), the newest token's input -> y_t (B,D), kv.

    `kv` is None at the first token, then the KVCache this function returned:
    the keys and values (B,H,t,hs) of the t tokens so far. This token's key
    and value are appended (in place, into a buffer with room to grow:
    kvbuffer.py; so decode from each cache once, as generate does), then its
    query attends over all t+1 cached positions. No mask is needed:
    everything in the cache is in the past.
    Stepping x[:, 0], x[:, 1], ... reproduces forward(params, x, n_heads)[0].

    max_len, if given, is the most tokens the cache may hold (e.g. the model's
    context length); one more raises a ValueError.
    """
    if check:
        validate.block_input("attention", params, param_shapes, x_t, name="x_t", more=(n_heads,))
        validate.attention_decode(kv, KVCache, x_t, n_heads, max_len)
    B, D = x_t.shape
    hs = D // n_heads
    scale = 1.0 / float(np.sqrt(hs))                        # same scale as forward

    qkv = x_t @ params["qkv"]                               # (B,D) @ (D,3D) -> (B,3D)
    q = qkv[:, :D].reshape(B, n_heads, 1, hs)               # (B,D) -> (B,H,1,hs)
    k = qkv[:, D:2 * D].reshape(B, n_heads, 1, hs)          # (B,D) -> (B,H,1,hs)
    v = qkv[:, 2 * D:].reshape(B, n_heads, 1, hs)           # (B,D) -> (B,H,1,hs)
    if kv is None:                                          # the first token: empty buffers
        kv = KVCache(None, None, 0)
    k_buffer, _ = kvbuffer.append(kv.k_buffer, kv.length, k, axis=2)          # (B,H,room,hs), room >= t+1
    v_buffer, length = kvbuffer.append(kv.v_buffer, kv.length, v, axis=2)     # (B,H,room,hs), room >= t+1
    kv = KVCache(k_buffer, v_buffer, length)                # t+1 positions now
    S = (q * scale) @ kv.k.transpose(0, 1, 3, 2)            # (B,H,1,hs) @ (B,H,hs,t+1) -> (B,H,1,t+1)
    P, _ = ops.softmax_forward(S)                           # (B,H,1,t+1)
    o = P @ kv.v                                            # (B,H,1,t+1) @ (B,H,t+1,hs) -> (B,H,1,hs)
    y_t = o.reshape(B, D) @ params["proj"]                  # (B,D) @ (D,D) -> (B,D)
    return y_t, kv
