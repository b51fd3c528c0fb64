"""Conventional top-k routed Mixture of Experts: the baseline the MoLE paper
compares with. Unlike MoLE, the experts read the hidden state h itself.

Letters: B batch, T sequence length, D d_model, F expert hidden size,
N experts, k = top_k experts kept per token.

Parameters (no biases): `router` (D,N), `up` (N,D,F), `down` (N,F,D).

    p      = softmax(h @ router)              # (B,T,N)  router probabilities
    keep   = the top_k largest p per token    # (B,T,N)  boolean
    g_n    = p_n / sum_{m kept} p_m  if n kept, else 0   # (B,T,N) gates, sum to 1
    u[n]   = gelu(h @ up[n]) @ down[n]        # (B,T,N,D)  FFN_n(h), tanh-GELU
    y      = sum_n g_n * u[n]                 # (B,T,D)

(The renormalised gate equals a softmax over the kept logits only, since the
softmax's normaliser cancels; it is written as p / sum(kept p) to mirror the
paper's description.)

Teaching simplification: every token runs through all N experts (dense), and
the unselected ones are then multiplied by a gate of exactly 0. A real MoE
dispatches each token to its k experts only; the result and the gradients are
the same, dense is just simpler to read and fine at this scale.

Gradients: backward goes through the kept gates and their renormalisation
into the router. The top-k *selection* itself is a kink: it is piecewise
constant in h and the router, with no gradient, and the output jumps where two
probabilities swap rank across the k-th place. A numerical gradient check is
only meaningful where the selection is identical at x +- h; the cache exposes
`keep` (B,T,N) so a check can verify that. Ties are broken towards the
lower expert index (a stable sort).

The interface of every block beside attention (ffn.py, mole.py, molkv.py, ctxattn.py):
init, forward(params, h, e, top_k), backward -> (dh, de=None, grads), and
build_lut / forward_lut / decode_step with no tables and no state.
"""

from typing import NamedTuple

import numpy as np

from minimolkv import ops, validate


class MoeCache(NamedTuple):
    router_cache: ops.LinearCache  # logits = h @ router
    p: np.ndarray              # (B,T,N) router probabilities
    keep: np.ndarray           # (B,T,N) bool, the top-k selection
    kept_mass: np.ndarray      # (B,T,1) sum of the kept p
    g: np.ndarray              # (B,T,N) gates
    h: np.ndarray              # (B,T,D) what every expert reads
    gelu: ops.GeluCache        # a = gelu(z)
    a: np.ndarray              # (B,T,N,F) expert hidden activations
    u: np.ndarray              # (B,T,N,D) expert outputs
    params: dict


def top_k_mask(p, top_k):
    """p (...,N) -> boolean (...,N), True at the top_k largest entries of each row.

    Ties go to the lower index (stable sort of -p).
    """
    order = np.argsort(-p, axis=-1, kind="stable")[..., :top_k]   # (...,k) indices of the largest
    keep = np.zeros(p.shape, dtype=bool)                           # (...,N)
    np.put_along_axis(keep, order, True, axis=-1)
    return keep


def selection_margin(p, top_k):
    """p (B,T,N) -> the smallest gap, over tokens, between the k-th and (k+1)-th
    largest probability: how far the top-k selection is from changing.
    Infinite when top_k == N (every expert is kept, nothing can swap)."""
    if top_k >= p.shape[-1]:
        return np.inf
    s = -np.sort(-p, axis=-1)                                      # (B,T,N) descending
    return float(np.min(s[..., top_k - 1] - s[..., top_k]))


def init(rng, d_model, d_expert, n_experts, dtype=np.float64):
    """N(0, 0.02²) weights. (model.init scales `down`, a write into the
    residual stream, by 1/sqrt(2L).)"""
    validate.init_args(dtype, d_model=d_model, d_expert=d_expert, n_experts=n_experts)
    return ops.init_params(rng, param_shapes(d_model, d_expert, n_experts), dtype)


def param_shapes(d_model, d_expert, n_experts):
    """{name: shape} of what init makes (for checks and accounting, without allocating)."""
    D, F, N = d_model, d_expert, n_experts
    return {"router": (D, N), "up": (N, D, F), "down": (N, F, D)}


def table_shapes(vocab_size, d_model, d_expert, n_experts):
    """No lookup tables (build_lut returns {})."""
    return {}


def forward(params, h, e=None, *, top_k=2, check=True):
    """h (B,T,D) -> y (B,T,D), each token mixed from its top_k experts. `e` is not read.
    check=False: the caller has validated the inputs (the model does, once)."""
    if check:
        validate.block_input("moe", params, param_shapes, h, e, top_k=top_k)
    # the router: which experts, with which weights
    logits, c_router = ops.linear_forward(h, params["router"])      # (B,T,D) -> (B,T,N)
    p, _ = ops.softmax_forward(logits)                              # (B,T,N)
    keep = top_k_mask(p, top_k)                                     # (B,T,N) bool
    pk = p * keep                                                   # (B,T,N)  unselected -> 0
    kept_mass = np.sum(pk, axis=-1, keepdims=True)                  # (B,T,1)
    g = pk / kept_mass                                              # (B,T,N)  gates, sum to 1

    # the experts, dense: every token through every expert
    z = ops.matmul_shared(h, params["up"])                      # (B,T,D) -> (B,T,N,F)  h @ up[n]
    a, c_gelu = ops.gelu_forward(z)                                 # (B,T,N,F)
    u = ops.matmul_per_expert(a, params["down"])                # (B,T,N,F) -> (B,T,N,D)  a[n] @ down[n]

    # the mixture
    y = np.einsum("btn,btnd->btd", g, u)                            # (B,T,N),(B,T,N,D) -> (B,T,D)
    return y, MoeCache(c_router, p, keep, kept_mass, g, h, c_gelu, a, u, params)


def backward(dy, cache, *, check=True):
    """dy (B,T,D) -> dh (B,T,D), de None (e is not read), grads {router, up, down}."""
    c = cache
    if check:
        validate.gradient(dy, c, (MoeCache,), "moe.forward", lambda c: (c.h.shape, c.h.dtype))
    # y = sum_n g_n * u[n]
    dg = np.einsum("btd,btnd->btn", dy, c.u)                        # (B,T,N)
    du = c.g[..., None] * dy[:, :, None, :]                         # (B,T,N,D)  0 for unselected experts
    # u[n] = a[n] @ down[n]
    da, d_down = ops.matmul_per_expert_backward(du, c.a, c.params["down"])  # (B,T,N,F), (N,F,D)
    # a = gelu(z)
    dz = ops.gelu_backward(da, c.gelu)                              # (B,T,N,F)
    # z[n] = h @ up[n]
    dh, d_up = ops.matmul_shared_backward(dz, c.h, c.params["up"])  # (B,T,D), (N,D,F)
    # g = pk / kept_mass, kept_mass = sum(pk):
    #   dpk_n = dg_n / kept_mass - sum_m dg_m pk_m / kept_mass^2 = (dg_n - sum_m dg_m g_m) / kept_mass
    dpk = (dg - np.sum(dg * c.g, axis=-1, keepdims=True)) / c.kept_mass   # (B,T,N)
    # pk = p * keep   (keep is the top-k selection: piecewise constant, no gradient)
    dp = dpk * c.keep                                               # (B,T,N)
    # p = softmax(logits)
    dlogits = ops.softmax_backward(dp, c.p)                         # (B,T,N)
    # logits = h @ router   (h feeds both the router and the experts: the gradients add)
    dh_router, d_router = ops.linear_backward(dlogits, c.router_cache)    # (B,T,D), (D,N)
    dh = dh + dh_router                                             # (B,T,D)
    return dh, None, {"router": d_router, "up": d_up, "down": d_down}


def build_lut(params, emb, *, check=True):
    """No tables: MoE experts read h, which is not a function of the token id."""
    return {}


def forward_lut(params, h, ids, luts, *, top_k=2, check=True):
    """Inference is the train-mode forward (nothing to look up)."""
    return forward(params, h, top_k=top_k, check=check)[0]


def decode_step(params, h_t, ids_t, luts, state, *, top_k=2, check=True):
    """One token: h_t (B,D) -> y_t (B,D). Stateless: the state stays None."""
    if check:
        validate.block_input("moe", params, param_shapes, h_t, name="h_t", top_k=top_k)
    return forward(params, h_t[:, None], top_k=top_k, check=False)[0][:, 0], None
