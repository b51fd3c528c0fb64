"""The control of the MoLKV experiment: MoLKV's context mechanism without the lookups.

MoLKV's "recency" variant lets a query from the hidden state attend, with a
learned recency penalty, over key-value pairs that are *looked up by token
id*. Does it help because of the lookups, or just because the layer gains one
more recency-biased attention? This block answers the second half: the same
attention, with its keys and values computed from the hidden state, as in
ordinary attention (one head, and N = 1 key-value pair per position).

Letters: B batch, T sequence length, D d_model, Dk key size.

Parameters (no biases): query (D,Dk), key (D,Dk), value (D,D), recency (1,).

    q        = h @ query                            (B,T,Dk)
    k        = h @ key                              (B,T,Dk)
    v        = h @ value                            (B,T,D)
    S[t,j]   = q[t] · k[j] / sqrt(Dk) - m (t - j),  m = softplus(recency)    (B,T,T)
               allowed where t - window < j <= t (window None: every j <= t)
    P        = softmax of S over j                  (B,T,T)
    y[t]     = sum_j P[t,j] v[j]                    (B,T,D)

It reuses MoLKV's attention (molkv.attend_forward with one "expert" per
position), so the two differ only where keys and values come from. Its
activated parameters are D·(2·Dk + D) + 1 per layer against MoLKV's D·Dk + N:
the comparison (tools/compare.py) shrinks its dense FFN to match them.
It has the interface of every block beside attention; it reads no `e`, builds
no tables, and decodes with a cache of its keys and values (kvbuffer.py).
"""

from typing import NamedTuple

import numpy as np

from minimolkv import kvbuffer, molkv, ops, validate


class CtxattnCache(NamedTuple):
    params: dict
    query_cache: ops.LinearCache   # q = h @ query
    key_cache: ops.LinearCache     # k = h @ key
    value_cache: ops.LinearCache   # v = h @ value
    attend: molkv.AttendCache      # the attention, N = 1
    distance: np.ndarray           # (T,T) t - j


class DecodeState(NamedTuple):
    """Keys and values of the tokens decoded so far, in buffers with room to grow."""
    k_buffer: np.ndarray           # (B,capacity,1,Dk)
    v_buffer: np.ndarray           # (B,capacity,1,D)
    length: int
    window: int | None


def init(rng, d_model, d_key, dtype=np.float64):
    """N(0, 0.02²) matrices (model.init scales `value`, a write into the residual
    stream, by 1/sqrt(2L)); the recency slope m starts at 0.5."""
    validate.init_args(dtype, d_model=d_model, d_key=d_key)
    return ops.init_params(rng, param_shapes(d_model, d_key), dtype)   # recency: m starts at 0.5, as MoLKV's first


def param_shapes(d_model, d_key):
    """{name: shape} of what init makes (for checks and accounting, without allocating)."""
    return {"query": (d_model, d_key), "key": (d_model, d_key), "value": (d_model, d_model), "recency": (1,)}


def table_shapes(vocab_size, d_model, d_key):
    """No lookup tables: keys and values come from h, not from the token id."""
    return {}


def forward(params, h, e=None, *, window=None, check=True):
    """h (B,T,D) -> y (B,T,D), cache. `e` is not read (the interface of every block).
    check=False: the caller has validated the inputs (the model does, once)."""
    if check:
        validate.block_input("ctxattn", params, param_shapes, h, e, window=window)
    T = h.shape[1]
    q, c_query = ops.linear_forward(h, params["query"])             # (B,T,D) -> (B,T,Dk)
    k, c_key = ops.linear_forward(h, params["key"])                 # (B,T,D) -> (B,T,Dk)
    v, c_value = ops.linear_forward(h, params["value"])             # (B,T,D) -> (B,T,D)
    slopes = ops.softplus(params["recency"])                        # (1,) m
    offset, distance = ops.score_offset(T, T, window, slopes=slopes)   # (T,T,1) mask and -m (t - j), (T,T)
    y, c_attend = molkv.attend_forward(q, k[:, :, None], v[:, :, None], offset)   # one "expert": N = 1
    return y, CtxattnCache(params, c_query, c_key, c_value, c_attend, distance)


def backward(dy, cache, *, check=True):
    """dy (B,T,D) -> dh (B,T,D), de None (e is not read), grads {query, key, value, recency}."""
    c = cache
    if check:
        validate.gradient(dy, c, (CtxattnCache,), "ctxattn.forward",
                          lambda c: (c.value_cache.x.shape, c.value_cache.x.dtype))
    # y = attention of q over (k, v), N = 1
    dq, dk, dv, dS = molkv.attend_backward(dy, c.attend)            # (B,T,Dk), (B,T,1,Dk), (B,T,1,D), (B,T,T,1)
    # S[t,j] -= m (t - j),  m = softplus(recency)
    dm = -np.sum(dS[..., 0] * c.distance.astype(dS.dtype))          # scalar
    d_recency = (dm * ops.sigmoid(c.params["recency"])).astype(dS.dtype)   # (1,)
    # q = h @ query, k = h @ key, v = h @ value: h feeds all three, so dh sums them
    dh_q, d_query = ops.linear_backward(dq, c.query_cache)                # (B,T,D), (D,Dk)
    dh_k, d_key = ops.linear_backward(dk[:, :, 0], c.key_cache)           # (B,T,D), (D,Dk)
    dh_v, d_value = ops.linear_backward(dv[:, :, 0], c.value_cache)       # (B,T,D), (D,D)
    dh = dh_q + dh_k + dh_v                                         # (B,T,D)
    return dh, None, {"query": d_query, "key": d_key, "value": d_value, "recency": d_recency}


def build_lut(params, emb, *, check=True):
    """No tables: keys and values read h, which is not a function of the token id."""
    return {}


def forward_lut(params, h, ids, luts, *, window=None, check=True):
    """Inference is the train-mode forward (nothing to look up)."""
    return forward(params, h, window=window, check=check)[0]


def decode_step(params, h_t, ids_t, luts, state, *, window=None, check=True):
    """One token: h_t (B,D) -> y_t (B,D), state: the keys and values of the tokens so
    far (the last `window`), appended in place as in attention.decode_step."""
    if check:
        validate.ctxattn_decode(params, h_t, state, window, param_shapes, DecodeState)
    B = h_t.shape[0]
    k_t = (h_t @ params["key"])[:, None, None]                      # (B,D) -> (B,1,1,Dk)
    v_t = (h_t @ params["value"])[:, None, None]                    # (B,D) -> (B,1,1,D)
    if state is None:                                               # the first token: empty buffers
        state = DecodeState(None, None, 0, window)
    k_buffer, _ = kvbuffer.append(state.k_buffer, state.length, k_t, axis=1, keep=window)       # (B,room,1,Dk)
    v_buffer, length = kvbuffer.append(state.v_buffer, state.length, v_t, axis=1, keep=window)  # (B,room,1,D)
    state = DecodeState(k_buffer, v_buffer, length, window)
    k_all = kvbuffer.filled(k_buffer, length, axis=1, keep=window)  # (B,t,1,Dk)
    v_all = kvbuffer.filled(v_buffer, length, axis=1, keep=window)  # (B,t,1,D)
    offset, _ = ops.score_offset(1, k_all.shape[1], window, slopes=ops.softplus(params["recency"]))  # (1,t,1)
    q = h_t[:, None] @ params["query"]                              # (B,1,D) -> (B,1,Dk)
    y, _ = molkv.attend_forward(q, k_all, v_all, offset)            # (B,1,D)
    return y.reshape(B, -1), state
