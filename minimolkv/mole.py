"""The MoLE expert block — Mixture of Lookup Experts (Jie et al., arXiv 2503.15798).

Letters: B batch, T sequence length, D d_model, F expert hidden size,
N experts, V vocabulary size.

Inputs
    h (B,T,D)  the normalized hidden state (it also feeds the dense FFN); the router reads it
    e (B,T,D)  the raw token embeddings of the input ids (the same e for every layer)

Parameters
    norm (D,)  router (D,N)  up (N,D,F)  down (N,F,D)

Math
    ê    = rmsnorm(e, norm)                       (B,T,D)
    s    = softmax(h @ router)                    (B,T,N)   dense: every expert, no top-k
    a[n] = gelu(ê @ up[n])                        (B,T,N,F)
    u[n] = a[n] @ down[n]                         (B,T,N,D)
    y    = sum_n s[..., n] * u[n]                 (B,T,D)

Why it becomes a table: u[n] depends on e only, and e = emb[id]. So after
training every expert can be evaluated once per vocabulary entry,
    u_table[i, n] = FFN_n(rmsnorm(emb[i], norm))      (V,N,D)
and inference replaces the N expert FFNs by one lookup:
    y = sum_n s[..., n] * u_table[ids, n]
Only the router (D·N numbers per layer) stays in RAM; the table can live on
disk (see lut.py).

The interface of every block beside attention (ffn.py, moe.py, molkv.py, ctxattn.py):
    init(rng, d_model, d_expert, n_experts)       -> params
    forward(params, h, e)                         -> y, cache
    backward(dy, cache)                           -> dh, de, grads
    build_lut(params, emb)                        -> {"u": (V,N,D)}
    forward_lut(params, h, ids, luts)             -> y       (no expert FFN runs)
    decode_step(params, h_t, ids_t, luts, state)  -> y_t, state (None: MoLE needs no cache)
"""

from typing import NamedTuple

import numpy as np

from minimolkv import ops, validate


class MoleCache(NamedTuple):
    params: dict
    router_cache: ops.LinearCache  # logits = h @ router
    s: np.ndarray                  # (B,T,N) router weights
    hidden: ops.ExpertHiddenCache    # a = gelu(rmsnorm(e, norm) @ up[n])
    a: np.ndarray                  # (B,T,N,F)
    u: np.ndarray                  # (B,T,N,D) expert outputs


def init(rng, d_model, d_expert, n_experts, dtype=np.float64):
    """Fresh parameters: norm gain 1, small Gaussian matrices (std 0.02)."""
    validate.init_args(dtype, d_model=d_model, d_expert=d_expert, n_experts=n_experts)
    return ops.init_params(rng, param_shapes(d_model, d_expert, n_experts), dtype)


def param_shapes(d_model, d_expert, n_experts):
    """{name: shape} of what init makes (for checks and accounting, without allocating)."""
    D, F, N = d_model, d_expert, n_experts
    return {"norm": (D,), "router": (D, N), "up": (N, D, F), "down": (N, F, D)}


def table_shapes(vocab_size, d_model, d_expert, n_experts):
    """{name: shape} of what build_lut makes: one row of N expert outputs per token id."""
    return {"u": (vocab_size, n_experts, d_model)}


def experts_forward(params, e):
    """Every expert on the token embeddings: e (...,D) -> u (...,N,D),
    and for the backward a (...,N,F) and the hidden layer's cache.

    Used by forward (e = the batch's embeddings) and by build_lut (e = the
    whole embedding table), so the table holds exactly what training computed.
    """
    a, c_hidden = ops.expert_hidden_forward(params["norm"], params["up"], e)   # (...,N,F)
    u = ops.matmul_per_expert(a, params["down"])                       # (...,N,F) -> (...,N,D)
    return u, a, c_hidden


def forward(params, h, e, *, check=True):
    """h (B,T,D), e (B,T,D) -> y (B,T,D), cache.
    check=False: the caller has validated the inputs (the model does, once)."""
    if check:
        validate.block_input("mole", params, param_shapes, h, e)
    logits, c_router = ops.linear_forward(h, params["router"])            # (B,T,D) -> (B,T,N)
    s, _ = ops.softmax_forward(logits)                                     # (B,T,N)
    u, a, c_hidden = experts_forward(params, e)                            # (B,T,N,D)
    y = np.einsum("btn,btnd->btd", s, u)                                   # (B,T,D)
    return y, MoleCache(params, c_router, s, c_hidden, a, u)


def backward(dy, cache, *, check=True):
    """dy (B,T,D) -> dh (B,T,D), de (B,T,D), grads {norm, router, up, down}."""
    c = cache
    if check:
        validate.gradient(dy, c, (MoleCache,), "mole.forward", lambda c: (c.u.shape[:2] + c.u.shape[3:], c.u.dtype))
    # y = sum_n s[n] * u[n]
    ds = np.einsum("btd,btnd->btn", dy, c.u)                               # (B,T,N)
    du = c.s[..., None] * dy[:, :, None, :]                                # (B,T,N,D)
    # u[n] = a[n] @ down[n]
    da, d_down = ops.matmul_per_expert_backward(du, c.a, c.params["down"])  # (B,T,N,F), (N,F,D)
    # a[n] = gelu(rmsnorm(e, norm) @ up[n])
    de, d_norm, d_up = ops.expert_hidden_backward(da, c.hidden)              # (B,T,D), (D,), (N,D,F)
    # s = softmax(logits)
    dlogits = ops.softmax_backward(ds, c.s)                                # (B,T,N)
    # logits = h @ router
    dh, d_router = ops.linear_backward(dlogits, c.router_cache)                 # (B,T,D), (D,N)
    return dh, de, {"norm": d_norm, "router": d_router, "up": d_up, "down": d_down}


# ----------------------------------------------------------------------------
# inference with the lookup table
# ----------------------------------------------------------------------------

def build_lut(params, emb, *, check=True):
    """Evaluate every expert once per vocabulary entry: emb (V,D) -> {"u": (V,N,D)}.

    u[i, n] = FFN_n(rmsnorm(emb[i], norm)), in the parameters' dtype; save it
    with lut.save_lut to keep it on disk.
    """
    if check:
        validate.block_lut("mole", params, param_shapes, emb)
    u, _, _ = experts_forward(params, emb)                                 # (V,D) -> (V,N,D)
    return {"u": np.ascontiguousarray(u)}


def forward_lut(params, h, ids, luts, *, check=True):
    """Inference with the table: h (B,T,D), ids (B,T) -> y (B,T,D).

    Equals forward(params, h, emb[ids])[0], with no expert FFN run. Only
    params["router"] is needed: the table replaces norm, up and down.
    luts["u"] is a (V,N,D) ndarray, a np.memmap, or a lut.LookupTable.
    """
    if check:
        validate.lut_input(params, "router", luts, {"u": lambda D, N: D}, h, ids)
    s, _ = ops.softmax_forward(h @ params["router"])                       # (B,T,D) -> (B,T,N)
    rows = np.asarray(luts["u"][ids])                                      # (B,T,N,D) the only expert work
    return np.einsum("btn,btnd->btd", s, rows)                             # (B,T,D)


def decode_step(params, h_t, ids_t, luts, state, *, check=True):
    """One token: h_t (B,D), ids_t (B,) -> y_t (B,D). MoLE needs no cache: the
    state stays None (one table row per token, whatever came before)."""
    if check:
        validate.lut_input(params, "router", luts, {"u": lambda D, N: D}, h_t, ids_t, step=True)
    return forward_lut(params, h_t[:, None], ids_t[:, None], luts, check=False)[:, 0], None
