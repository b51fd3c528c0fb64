"""Conventional top-k routed Mixture of Experts: the baseline the MoLE paper
compares with. Unlike MoLE, the experts read the hidden state h itself.

Notation: B batch, T sequence length, D d_model, F expert hidden size,
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
`selected` (B,T,N) so a check can verify that. Ties are broken towards the
lower expert index (a stable sort).

API:
    init(rng, d_model, d_ff, n_experts, dtype=np.float64) -> params
    forward(params, h, top_k) -> (y, cache)
    backward(dy, cache) -> (dh, grads)
"""

import numpy as np

from minimolkv import ops
from minimolkv.errors import check_array, check_input, check_params, check_positive_int


def _check_params_and_input(params, h):
    """Validate params and h (B,T,D) in the params' dtype. Returns (D, F, N)."""
    check_params(params, {"router": (None, None), "up": (None, None, None),
                          "down": (None, None, None)})     # a dict of float arrays, these ndims
    D, N = params["router"].shape
    F = params["up"].shape[2]
    dtype = check_params(params, {"router": (D, N), "up": (N, D, F), "down": (N, F, D)})
    check_array(h, "h", ndim=3, floating=True)
    if h.shape[-1] != D:
        raise ValueError(f"h has {h.shape[-1]} features (last dim of shape {h.shape}), "
                         f"but the params have d_model={D}")
    check_input(h, "h", (None, None, D), dtype)
    return D, F, N


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


def init(rng, d_model, d_ff, n_experts, dtype=np.float64):
    """N(0, 0.02²) weights. (model.init scales `down`, a write into the
    residual stream, down by 1/sqrt(2L) for a deep stack.)"""
    D = check_positive_int(d_model, "d_model")
    F = check_positive_int(d_ff, "d_ff")
    N = check_positive_int(n_experts, "n_experts")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    std = 0.02
    return {
        "router": (std * rng.standard_normal((D, N))).astype(dtype),                # (D,N)
        "up": (std * rng.standard_normal((N, D, F))).astype(dtype),                 # (N,D,F)
        "down": (std * rng.standard_normal((N, F, D))).astype(dtype),               # (N,F,D)
    }


def forward(params, h, top_k):
    """h (B,T,D) -> y (B,T,D), each token mixed from its top_k experts."""
    D, F, N = _check_params_and_input(params, h)
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        raise TypeError(f"top_k must be an integer in [1, {N}], got {top_k!r}")
    if not 1 <= top_k <= N:
        raise ValueError(f"top_k must be in [1, n_experts={N}], got {top_k}")

    # the router: which experts, with which weights
    logits, router_cache = ops.linear_forward(h, params["router"])  # (B,T,D) -> (B,T,N)
    p, _ = ops.softmax_forward(logits)                              # (B,T,N)
    keep = top_k_mask(p, top_k)                                     # (B,T,N) bool
    pk = p * keep                                                   # (B,T,N)  unselected -> 0
    Z = np.sum(pk, axis=-1, keepdims=True)                          # (B,T,1)  kept mass
    g = pk / Z                                                      # (B,T,N)  gates, sum to 1

    # the experts, dense: every token through every expert
    a_pre = np.einsum("btd,ndf->btnf", h, params["up"], optimize=True)  # (B,T,D),(N,D,F) -> (B,T,N,F)
    a, gelu_cache = ops.gelu_forward(a_pre)                         # (B,T,N,F)
    u = np.einsum("btnf,nfd->btnd", a, params["down"], optimize=True)  # (B,T,N,F),(N,F,D) -> (B,T,N,D)

    # the mixture
    y = np.einsum("btn,btnd->btd", g, u)                            # (B,T,N),(B,T,N,D) -> (B,T,D)

    cache = {"h": h, "params": params, "router_cache": router_cache, "p": p,
             "selected": keep, "Z": Z, "g": g, "gelu_cache": gelu_cache, "a": a, "u": u}
    return y, cache


def backward(dy, cache):
    """dy (B,T,D) -> dh (B,T,D), grads {"router": (D,N), "up": (N,D,F), "down": (N,F,D)}."""
    h, params = cache["h"], cache["params"]
    p, keep, Z, g, a, u = (cache[k] for k in ("p", "selected", "Z", "g", "a", "u"))
    # p, keep, g (B,T,N); Z (B,T,1); a (B,T,N,F); u (B,T,N,D)
    check_array(dy, "dy", shape=h.shape)
    if dy.dtype != h.dtype:
        raise TypeError(f"dy has dtype {dy.dtype} but the forward ran in {h.dtype}")

    # y = sum_n g_n * u[n]
    dg = np.einsum("btd,btnd->btn", dy, u)                          # (B,T,N)
    du = np.einsum("btn,btd->btnd", g, dy)                          # (B,T,N,D)  0 for unselected experts
    # u = a @ down[n]
    ddown = np.einsum("btnf,btnd->nfd", a, du, optimize=True)  # (N,F,D)
    da = np.einsum("btnd,nfd->btnf", du, params["down"], optimize=True)  # (B,T,N,F)
    # a = gelu(a_pre)
    da_pre = ops.gelu_backward(da, cache["gelu_cache"])             # (B,T,N,F)
    # a_pre = h @ up[n]
    dup = np.einsum("btd,btnf->ndf", h, da_pre, optimize=True)  # (N,D,F)
    dh = np.einsum("btnf,ndf->btd", da_pre, params["up"], optimize=True)  # (B,T,D)
    # g = pk / Z,  Z = sum(pk):  dpk_n = dg_n / Z - sum_m dg_m pk_m / Z^2 = (dg_n - sum_m dg_m g_m) / Z
    dpk = (dg - np.sum(dg * g, axis=-1, keepdims=True)) / Z         # (B,T,N)
    # pk = p * keep   (keep is the top-k selection: piecewise constant, no gradient)
    dp = dpk * keep                                                 # (B,T,N)
    # p = softmax(logits)
    dlogits = ops.softmax_backward(dp, p)                           # (B,T,N)
    # logits = h @ router   (h feeds both the router and the experts: the gradients add)
    dh_router, drouter = ops.linear_backward(dlogits, cache["router_cache"])  # (B,T,D), (D,N)
    dh = dh + dh_router                                             # (B,T,D)
    return dh, {"router": drouter, "up": dup, "down": ddown}
