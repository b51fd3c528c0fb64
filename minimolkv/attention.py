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
    S[t, j] = -inf  for j > t    causal mask (a token never sees the future)
    P = softmax(S) over j        attention weights, each row sums to 1
    o = P @ v                    weighted sum of the values

API:
    init(rng, d_model, n_heads, dtype=np.float64) -> params
    forward(params, x, n_heads) -> (y, cache)          x (B,T,D) -> y (B,T,D)
    backward(dy, cache) -> (dx, grads)
    decode_step(params, x_t, n_heads, cache=None, max_len=None) -> (y_t, cache)
"""

import numpy as np

from minimolkv import ops
from minimolkv.errors import check_array, check_input, check_params, check_positive_int


def _param_shapes(d_model):
    return {"qkv": (d_model, 3 * d_model), "proj": (d_model, d_model)}


def _check_heads(d_model, n_heads):
    """n_heads must be a positive integer dividing d_model; returns the head size."""
    n_heads = check_positive_int(n_heads, "n_heads")
    if d_model % n_heads != 0:
        raise ValueError(f"n_heads must divide d_model: got n_heads={n_heads}, d_model={d_model}")
    return d_model // n_heads


def _check_params_and_input(params, x, name, ndim):
    """Validate params, then x (ndim dims, last dim D, the params' dtype). Returns (D, dtype)."""
    check_params(params, {"qkv": (None, None), "proj": (None, None)})   # a dict of 2-D float arrays
    d_model = params["qkv"].shape[0]
    dtype = check_params(params, _param_shapes(d_model))
    check_array(x, name, ndim=ndim, floating=True)
    if x.shape[-1] != d_model:
        raise ValueError(f"{name} has {x.shape[-1]} features (last dim of shape {x.shape}), "
                         f"but the params have d_model={d_model}")
    check_input(x, name, x.shape[:-1] + (d_model,), dtype)
    return d_model, dtype


# ----------------------------------------------------------------------------
# heads: (B,T,D) <-> (B,H,T,hs)
# ----------------------------------------------------------------------------

def split_heads(z, n_heads):
    """(B,T,D) -> (B,H,T,hs): head i takes columns [i*hs, (i+1)*hs)."""
    B, T, D = z.shape
    return z.reshape(B, T, n_heads, D // n_heads).transpose(0, 2, 1, 3)


def merge_heads(z):
    """(B,H,T,hs) -> (B,T,D), the inverse of split_heads."""
    B, H, T, hs = z.shape
    return z.transpose(0, 2, 1, 3).reshape(B, T, H * hs)


# ----------------------------------------------------------------------------
# init / forward / backward
# ----------------------------------------------------------------------------

def init(rng, d_model, n_heads, dtype=np.float64):
    """N(0, 0.02²) weights. (model.init scales `proj`, a write into the
    residual stream, down by 1/sqrt(2L) for a deep stack.)"""
    d_model = check_positive_int(d_model, "d_model")
    _check_heads(d_model, n_heads)
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    std = 0.02
    return {
        "qkv": (std * rng.standard_normal((d_model, 3 * d_model))).astype(dtype),          # (D,3D)
        "proj": (std * rng.standard_normal((d_model, d_model))).astype(dtype),     # (D,D)
    }


def forward(params, x, n_heads):
    """x (B,T,D) -> y (B,T,D), causal self-attention over the T positions."""
    D, _ = _check_params_and_input(params, x, "x", ndim=3)
    hs = _check_heads(D, n_heads)
    T = x.shape[1]
    scale = 1.0 / float(np.sqrt(hs))                        # a Python float: keeps x's dtype

    qkv, qkv_cache = ops.linear_forward(x, params["qkv"])   # (B,T,D) -> (B,T,3D)
    q = split_heads(qkv[..., :D], n_heads)                  # (B,T,D) -> (B,H,T,hs)
    k = split_heads(qkv[..., D:2 * D], n_heads)             # (B,T,D) -> (B,H,T,hs)
    v = split_heads(qkv[..., 2 * D:], n_heads)              # (B,T,D) -> (B,H,T,hs)
    S = (q @ k.transpose(0, 1, 3, 2)) * scale               # (B,H,T,hs) @ (B,H,hs,T) -> (B,H,T,T)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)      # (T,T)  True where j > t
    S = np.where(future, -np.inf, S)                        # (B,H,T,T)  causal mask
    P, _ = ops.softmax_forward(S)                           # (B,H,T,T)  rows sum to 1 over j
    o = P @ v                                               # (B,H,T,T) @ (B,H,T,hs) -> (B,H,T,hs)
    om = merge_heads(o)                                     # (B,H,T,hs) -> (B,T,D)
    y, proj_cache = ops.linear_forward(om, params["proj"])  # (B,T,D) -> (B,T,D)

    cache = {"qkv_cache": qkv_cache, "proj_cache": proj_cache,
             "q": q, "k": k, "v": v, "P": P, "scale": scale, "n_heads": n_heads}
    return y, cache


def backward(dy, cache):
    """dy (B,T,D) -> dx (B,T,D), grads {"qkv": (D,3D), "proj": (D,D)}."""
    q, k, v, P, scale = cache["q"], cache["k"], cache["v"], cache["P"], cache["scale"]
    om = cache["proj_cache"][0]                                 # (B,T,D) merged heads, the input of proj
    check_array(dy, "dy", shape=om.shape)
    if dy.dtype != om.dtype:
        raise TypeError(f"dy has dtype {dy.dtype} but the forward ran in {om.dtype}")

    # y = om @ proj
    dom, dproj = ops.linear_backward(dy, cache["proj_cache"])   # (B,T,D), (D,D)
    # om = merge_heads(o)
    do = split_heads(dom, cache["n_heads"])                     # (B,T,D) -> (B,H,T,hs)
    # o = P @ v
    dP = do @ v.transpose(0, 1, 3, 2)                           # (B,H,T,hs) @ (B,H,hs,T) -> (B,H,T,T)
    dv = P.transpose(0, 1, 3, 2) @ do                           # (B,H,T,T) @ (B,H,T,hs) -> (B,H,T,hs)
    # P = softmax(S)   (masked entries have P = 0, so they get dS = 0: the mask needs no backward)
    dS = ops.softmax_backward(dP, P)                            # (B,H,T,T)
    # S = (q @ k^T) * scale
    dq = (dS @ k) * scale                                       # (B,H,T,T) @ (B,H,T,hs) -> (B,H,T,hs)
    dk = (dS.transpose(0, 1, 3, 2) @ q) * scale                 # (B,H,T,T) @ (B,H,T,hs) -> (B,H,T,hs)
    # q, k, v = split_heads of the three column blocks of qkv
    dqkv = np.concatenate([merge_heads(dq), merge_heads(dk), merge_heads(dv)], axis=-1)  # (B,T,3D)
    # qkv = x @ params["qkv"]
    dx, dW = ops.linear_backward(dqkv, cache["qkv_cache"])      # (B,T,D), (D,3D)
    return dx, {"qkv": dW, "proj": dproj}


# ----------------------------------------------------------------------------
# decoding with a KV cache
# ----------------------------------------------------------------------------

def decode_step(params, x_t, n_heads, cache=None, max_len=None):
    """One decoding step: x_t (B,D), the newest token's input -> y_t (B,D).

    `cache` is None at the first token, then the dict this function returned:
        {"k": (B,H,t,hs), "v": (B,H,t,hs)}   keys and values of the t tokens so far
    This token's key and value are appended (np.concatenate: a copy per step,
    simple and fine at this scale), then its query attends over all t+1 cached
    positions. No mask is needed: everything in the cache is in the past.
    Stepping x[:, 0], x[:, 1], ... reproduces forward(params, x, n_heads)[0].

    max_len, if given, is the most tokens the cache may hold (e.g. the model's
    context length); one more raises a ValueError.
    """
    D, _ = _check_params_and_input(params, x_t, "x_t", ndim=2)
    hs = _check_heads(D, n_heads)
    B = x_t.shape[0]
    max_len = check_positive_int(max_len, "max_len", allow_none=True)
    if cache is None:
        k_past = np.zeros((B, n_heads, 0, hs), dtype=x_t.dtype)   # (B,H,0,hs)  empty cache
        v_past = np.zeros((B, n_heads, 0, hs), dtype=x_t.dtype)   # (B,H,0,hs)
    else:
        if not isinstance(cache, dict) or "k" not in cache or "v" not in cache:
            raise TypeError("cache must be None or the dict returned by decode_step")
        k_past, v_past = cache["k"], cache["v"]
        check_array(k_past, "cache['k']", shape=(B, n_heads, None, hs))
        check_array(v_past, "cache['v']", shape=k_past.shape)
    if max_len is not None and k_past.shape[2] >= max_len:
        raise ValueError(f"the cache already holds {k_past.shape[2]} tokens, max_len={max_len}")
    scale = 1.0 / float(np.sqrt(hs))                        # same scale as forward

    qkv = x_t @ params["qkv"]                               # (B,D) @ (D,3D) -> (B,3D)
    q = qkv[:, :D].reshape(B, n_heads, 1, hs)               # (B,D) -> (B,H,1,hs)
    k = qkv[:, D:2 * D].reshape(B, n_heads, 1, hs)          # (B,D) -> (B,H,1,hs)
    v = qkv[:, 2 * D:].reshape(B, n_heads, 1, hs)           # (B,D) -> (B,H,1,hs)
    k_all = np.concatenate([k_past, k], axis=2)             # (B,H,t,hs) -> (B,H,t+1,hs)
    v_all = np.concatenate([v_past, v], axis=2)             # (B,H,t,hs) -> (B,H,t+1,hs)
    S = (q @ k_all.transpose(0, 1, 3, 2)) * scale           # (B,H,1,hs) @ (B,H,hs,t+1) -> (B,H,1,t+1)
    P, _ = ops.softmax_forward(S)                           # (B,H,1,t+1)
    o = P @ v_all                                           # (B,H,1,t+1) @ (B,H,t+1,hs) -> (B,H,1,hs)
    y_t = o.reshape(B, D) @ params["proj"]                  # (B,D) @ (D,D) -> (B,D)
    return y_t, {"k": k_all, "v": v_all}
