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
    u[n] = gelu(ê @ up[n]) @ down[n]              (B,T,N,D)
    y    = sum_n s[..., n] * u[n]                 (B,T,D)

Why it becomes a table: u[n] depends on e only, and e = emb[id]. So after
training every expert can be evaluated once per vocabulary entry,
    lut[i, n] = FFN_n(rmsnorm(emb[i], norm))      (V,N,D)
and inference replaces the N expert FFNs by one lookup:
    y = sum_n s[..., n] * lut[ids, n]
Only the router (D·N numbers per layer) stays in RAM; the table can live on
disk (see lut.py).
"""

import numpy as np

from minimolkv import ops
from minimolkv.errors import check_array, check_ids, check_input, check_params, check_positive_int


def init(rng, d_model, d_ff, n_experts, dtype=np.float64):
    """Fresh parameters: norm gain 1, small Gaussian matrices (std 0.02).
    d_ff here is the expert hidden size F (model.Config calls it d_expert)."""
    D = check_positive_int(d_model, "d_model")
    F = check_positive_int(d_ff, "d_ff")
    N = check_positive_int(n_experts, "n_experts")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return {
        "norm": np.ones(D, dtype=dtype),                                   # (D,)
        "router": (0.02 * rng.standard_normal((D, N))).astype(dtype),      # (D,N)
        "up": (0.02 * rng.standard_normal((N, D, F))).astype(dtype),       # (N,D,F)
        "down": (0.02 * rng.standard_normal((N, F, D))).astype(dtype),     # (N,F,D)
    }


def check(params):
    """Validate the parameter dict; return (D, F, N, dtype)."""
    if not isinstance(params, dict) or "up" not in params:
        raise TypeError("params must be the dict from mole.init (keys norm, router, up, down)")
    check_array(params["up"], "params['up']", ndim=3)
    N, D, F = params["up"].shape
    dtype = check_params(params, {"norm": (D,), "router": (D, N), "up": (N, D, F), "down": (N, F, D)})
    return D, F, N, dtype


def hidden_forward(params, e):
    """The experts' hidden layer: e (...,D) -> a (...,N,F), a[n] = gelu(rmsnorm(e, norm) @ up[n]).

    MoLKV's experts share it (molkv.py adds two heads where MoLE has one).
    """
    e_hat, c_norm = ops.rmsnorm_forward(e, params["norm"])                       # (...,D)
    z = np.einsum("...d,ndf->...nf", e_hat, params["up"], optimize=True)        # (...,N,F)
    a, c_gelu = ops.gelu_forward(z)                                              # (...,N,F)
    return a, (e_hat, c_norm, c_gelu)


def hidden_backward(da, params, e_hat, c_norm, c_gelu):
    """da (...,N,F) -> de (...,D), grads of norm and up."""
    # a = gelu(z)
    dz = ops.gelu_backward(da, c_gelu)                                           # (...,N,F)
    # z = einsum(e_hat, up): every expert reads the same e_hat, so its gradient sums over n
    # (optimize=True also lets einsum sum over the "..." axes the output drops; NumPy refuses that without it)
    d_up = np.einsum("...d,...nf->ndf", e_hat, dz, optimize=True)               # (N,D,F) summed over (...)
    de_hat = np.einsum("...nf,ndf->...d", dz, params["up"], optimize=True)      # (...,D)
    # e_hat = rmsnorm(e, norm)
    de, d_norm = ops.rmsnorm_backward(de_hat, c_norm)                            # (...,D), (D,)
    return de, {"norm": d_norm, "up": d_up}


def experts_forward(params, e):
    """Every expert on the token embeddings: e (...,D) -> u (...,N,D).

    Used by forward (e = the batch's embeddings) and by build_lut (e = the
    whole embedding table), so the table holds exactly what training computed.
    """
    a, (e_hat, c_norm, c_gelu) = hidden_forward(params, e)                       # (...,N,F)
    u = np.einsum("...nf,nfd->...nd", a, params["down"], optimize=True)         # (...,N,D)
    return u, (e_hat, c_norm, a, c_gelu)


def experts_backward(du, params, cache):
    """du (...,N,D) -> de (...,D), and grads of norm, up, down."""
    e_hat, c_norm, a, c_gelu = cache
    # u = einsum(a, down)
    da = np.einsum("...nd,nfd->...nf", du, params["down"], optimize=True)       # (...,N,F)
    d_down = np.einsum("...nf,...nd->nfd", a, du, optimize=True)                # (N,F,D) summed over (...)
    # a = gelu(rmsnorm(e, norm) @ up[n])
    de, grads = hidden_backward(da, params, e_hat, c_norm, c_gelu)               # (...,D)
    grads["down"] = d_down
    return de, grads


def forward(params, h, e):
    """h (B,T,D), e (B,T,D) -> y (B,T,D), cache."""
    D, F, N, dtype = check(params)
    check_input(h, "h", (None, None, D), dtype)
    check_input(e, "e", (None, None, D), dtype)
    if h.shape != e.shape:
        raise ValueError(f"h and e must have the same shape (B,T,D), got h {h.shape} and e {e.shape}")
    logits, c_router = ops.linear_forward(h, params["router"])                  # (B,T,D) -> (B,T,N)
    s, c_soft = ops.softmax_forward(logits)                                      # (B,T,N)
    u, c_experts = experts_forward(params, e)                                    # (B,T,N,D)
    y = np.einsum("btn,btnd->btd", s, u)                                         # (B,T,D)
    return y, {"params": params, "s": s, "u": u, "c_router": c_router, "c_soft": c_soft,
               "c_experts": c_experts}


def backward(dy, cache):
    """dy (B,T,D) -> dh (B,T,D), de (B,T,D), grads {norm, router, up, down}."""
    s, u = cache["s"], cache["u"]                                                # (B,T,N), (B,T,N,D)
    check_array(dy, "dy", shape=u.shape[:2] + u.shape[3:])
    if dy.dtype != u.dtype:
        raise TypeError(f"dy has dtype {dy.dtype} but the forward ran in {u.dtype}")
    # y = sum_n s[n] * u[n]
    ds = np.einsum("btd,btnd->btn", dy, u)                                       # (B,T,N)
    du = s[..., None] * dy[:, :, None, :]                                        # (B,T,N,D)
    # u[n] = FFN_n(rmsnorm(e, norm))
    de, grads = experts_backward(du, cache["params"], cache["c_experts"])        # (B,T,D)
    # s = softmax(logits)
    dlogits = ops.softmax_backward(ds, cache["c_soft"])                          # (B,T,N)
    # logits = h @ router
    dh, grads["router"] = ops.linear_backward(dlogits, cache["c_router"])        # (B,T,D), (D,N)
    return dh, de, grads


def build_lut(params, emb):
    """Evaluate every expert once per vocabulary entry: emb (V,D) -> lut (V,N,D).

    lut[i, n] = FFN_n(rmsnorm(emb[i], norm)). The table is in the
    parameters' dtype; save it with lut.save_lut to keep it on disk.
    """
    D, F, N, dtype = check(params)
    check_input(emb, "emb", (None, D), dtype)
    u, _ = experts_forward(params, emb)                                          # (V,D) -> (V,N,D)
    return u


def forward_lut(params, h, ids, lut):
    """Inference with the table: h (B,T,D), ids (B,T) -> y (B,T,D).

    Equals forward(params, h, emb[ids])[0], with no expert FFN run. Only
    params['router'] is needed: the table replaces norm, up and down.
    `lut` is a (V,N,D) ndarray, a np.memmap, or a lut.LookupTable, in the
    parameters' dtype.
    """
    if not isinstance(params, dict) or "router" not in params:
        raise TypeError("params must be a dict holding 'router' (D,N); at inference nothing else is needed")
    check_array(params["router"], "params['router']", ndim=2, floating=True)
    D, N = params["router"].shape
    dtype = params["router"].dtype
    check_input(h, "h", (None, None, D), dtype)
    if not hasattr(lut, "shape") or not hasattr(lut, "dtype"):
        raise TypeError(f"lut must be an array, np.memmap or LookupTable, got {type(lut).__name__}")
    if len(lut.shape) != 3 or tuple(lut.shape[1:]) != (N, D):
        raise ValueError(f"lut must have shape (V, N={N}, D={D}), got {tuple(lut.shape)}")
    if lut.dtype != dtype:
        raise TypeError(f"lut has dtype {lut.dtype} but the parameters are {dtype}; dtypes are never mixed")
    check_ids(ids, lut.shape[0], "ids")
    if ids.shape != h.shape[:2]:
        raise ValueError(f"ids must have shape (B,T) = {h.shape[:2]} to match h, got {ids.shape}")
    s, _ = ops.softmax_forward(h @ params["router"])                             # (B,T,D) -> (B,T,N)
    rows = np.asarray(lut[ids])                                                  # (B,T,N,D) — the only expert work
    return np.einsum("btn,btnd->btd", s, rows)                                   # (B,T,D)
