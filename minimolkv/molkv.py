"""The MoLKV expert block — Mixture of Lookup Key-Value Experts (Wang, arXiv 2512.09723).

In MoLE (mole.py) every token id has N expert outputs, mixed by a router that
reads the hidden state. In MoLKV each expert of each token id becomes a
key-value pair: a query made from the hidden state attends over the key-value
experts of every token seen so far, so the mixture depends on the context
while keys and values are still lookups by token id.

Letters: B batch, T sequence length, D d_model, F expert hidden size,
N experts, Dk key size, V vocabulary size.

Inputs
    h (B,T,D)  the normalized hidden state; the query reads it
    e (B,T,D)  the raw token embeddings of the input ids (the same e for every layer)

Parameters
    norm (D,)  query (D,Dk)  up (N,D,F)  down_k (N,F,Dk)  down_v (N,F,D)
    Expert n has one hidden layer a[n] and two heads: its key and its value.

Math
    ê        = rmsnorm(e, norm)                            (B,T,D)
    a[n]     = gelu(ê @ up[n])                             (B,T,N,F)
    K[n]     = a[n] @ down_k[n]                            (B,T,N,Dk)
    Vv[n]    = a[n] @ down_v[n]                            (B,T,N,D)
    q        = h @ query                                   (B,T,Dk)
    S[t,j,n] = q[t] · K[j,n] / sqrt(Dk)                    (B,T,T,N)
               allowed where t - window < j <= t (window None: every j <= t), else -inf
    P        = softmax of S over (j, n) jointly            (B,T,T,N)
    y[t]     = sum_{j,n} P[t,j,n] * Vv[j,n]                (B,T,D)

Attention is over positions: a token id that occurs twice contributes its N
key-value experts twice.

Why it becomes a table: K and Vv depend on e only, and e = emb[id]. After
training, build_lut evaluates every expert once per vocabulary entry,
    lut_k[i, n] = K_n(emb[i])  (V,N,Dk)      lut_v[i, n] = Vv_n(emb[i])  (V,N,D)
and inference looks rows up instead of running the expert FFNs. Decoding keeps
a key-value expert cache: each new token appends the N keys and N values of
its id (only the last `window` tokens are kept when a window is set), and its
query attends over the cache, O(T·N) work per token.

MoLE is the special case window=1, query = identity (Dk = D) and keys
lut_k[i, n] = sqrt(D) * router[:, n] for every id i: then the only allowed
scores are S[t,t,n] = (h @ router)[t,n] and P[t,t,:] is MoLE's router softmax.

Memory: the (B,T,T,N) tensors (scores S, weights P and their gradients) are
the big ones. The cache keeps P only; S is masked in place and dropped after
the softmax.
"""

import numpy as np

from minimolkv import mole, ops
from minimolkv.errors import check_array, check_ids, check_input, check_params, check_positive_int


def _param_shapes(D, F, N, Dk):
    return {"norm": (D,), "query": (D, Dk), "up": (N, D, F), "down_k": (N, F, Dk), "down_v": (N, F, D)}


def init(rng, d_model, d_ff, n_experts, d_key, dtype=np.float64):
    """Fresh parameters: norm gain 1, small Gaussian matrices (std 0.02)."""
    D = check_positive_int(d_model, "d_model")
    F = check_positive_int(d_ff, "d_ff")
    N = check_positive_int(n_experts, "n_experts")
    Dk = check_positive_int(d_key, "d_key")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return {
        "norm": np.ones(D, dtype=dtype),                                   # (D,)
        "query": (0.02 * rng.standard_normal((D, Dk))).astype(dtype),      # (D,Dk)
        "up": (0.02 * rng.standard_normal((N, D, F))).astype(dtype),       # (N,D,F)
        "down_k": (0.02 * rng.standard_normal((N, F, Dk))).astype(dtype),  # (N,F,Dk)
        "down_v": (0.02 * rng.standard_normal((N, F, D))).astype(dtype),   # (N,F,D)
    }


# ----------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------

def check(params):
    """Validate the parameter dict; return (D, F, N, Dk, dtype)."""
    if not isinstance(params, dict) or "up" not in params or "query" not in params:
        raise TypeError("params must be the dict from molkv.init (keys norm, query, up, down_k, down_v)")
    check_array(params["up"], "params['up']", ndim=3)
    check_array(params["query"], "params['query']", ndim=2)
    N, D, F = params["up"].shape
    Dk = params["query"].shape[1]
    dtype = check_params(params, _param_shapes(D, F, N, Dk))
    return D, F, N, Dk, dtype


def check_inference(params, lut_k, lut_v):
    """At inference only `query` stays in RAM (the tables replace norm, up,
    down_k, down_v), so only it is required. Returns (D, N, Dk, dtype, V)."""
    if not isinstance(params, dict) or "query" not in params:
        raise TypeError("params must be a dict holding 'query' (D,Dk); at inference nothing else is needed")
    check_array(params["query"], "params['query']", ndim=2, floating=True)
    D, Dk = params["query"].shape
    dtype = params["query"].dtype
    N = lut_k.shape[1] if len(getattr(lut_k, "shape", ())) == 3 else None
    V = _check_luts(lut_k, lut_v, N, D, Dk, dtype)
    return D, N, Dk, dtype, V


def _check_luts(lut_k, lut_v, N, D, Dk, dtype):
    """Tables: ndarrays, memmaps or lut.LookupTable (only .shape, .dtype, [ids] are used). Returns V."""
    for name, lut, width in (("lut_k", lut_k, Dk), ("lut_v", lut_v, D)):
        if not hasattr(lut, "shape") or not hasattr(lut, "dtype"):
            raise TypeError(f"{name} must be an array, np.memmap or LookupTable, got {type(lut).__name__}")
        if len(lut.shape) != 3 or tuple(lut.shape[1:]) != (N, width) or lut.shape[0] != lut_k.shape[0]:
            raise ValueError(f"{name} must have shape (V, N={N}, {width}) with the same V as lut_k, "
                             f"got {tuple(lut.shape)}")
        if lut.dtype != dtype:
            raise TypeError(f"{name} has dtype {lut.dtype} but the parameters are {dtype}; "
                            "dtypes are never mixed")
    return lut_k.shape[0]


def window_mask(T, window):
    """allowed[t, j] (T,T) bool: position t sees position j iff t - window < j <= t."""
    t = np.arange(T)[:, None]                                   # (T,1) query positions
    j = np.arange(T)[None, :]                                   # (1,T) key positions
    allowed = j <= t                                            # (T,T) causal: never the future
    if window is not None:
        allowed &= j > t - window                               # only the last `window` positions
    return allowed


# ----------------------------------------------------------------------------
# the two halves: expert FFNs (keys, values) and attention over them
# ----------------------------------------------------------------------------

def experts_forward(params, e):
    """Every expert on the token embeddings: e (...,D) -> K (...,N,Dk), Vv (...,N,D).

    Used by forward (e = the batch's embeddings) and by build_lut (e = the
    whole embedding table), so the tables hold exactly what training computed.
    """
    a, (e_hat, c_norm, c_gelu) = mole.hidden_forward(params, e)                  # (...,N,F) as in MoLE
    K = np.einsum("...nf,nfk->...nk", a, params["down_k"], optimize=True)       # (...,N,Dk)
    Vv = np.einsum("...nf,nfd->...nd", a, params["down_v"], optimize=True)      # (...,N,D)
    return K, Vv, (e_hat, c_norm, a, c_gelu)


def experts_backward(dK, dVv, params, cache):
    """dK (...,N,Dk), dVv (...,N,D) -> de (...,D), and grads of norm, up, down_k, down_v."""
    e_hat, c_norm, a, c_gelu = cache
    # Vv = einsum(a, down_v)
    da_v = np.einsum("...nd,nfd->...nf", dVv, params["down_v"], optimize=True)  # (...,N,F)
    d_down_v = np.einsum("...nf,...nd->nfd", a, dVv, optimize=True)             # (N,F,D)
    # K = einsum(a, down_k)
    da_k = np.einsum("...nk,nfk->...nf", dK, params["down_k"], optimize=True)   # (...,N,F)
    d_down_k = np.einsum("...nf,...nk->nfk", a, dK, optimize=True)              # (N,F,Dk)
    # a feeds both heads: the two gradients meet here and add
    da = da_k + da_v                                                             # (...,N,F)
    # a = gelu(rmsnorm(e, norm) @ up[n]): MoLE's hidden layer, and its backward
    de, grads = mole.hidden_backward(da, params, e_hat, c_norm, c_gelu)          # (...,D)
    grads.update(down_k=d_down_k, down_v=d_down_v)
    return de, grads


def attend_forward(q, K, Vv, allowed=None):
    """Queries attend over key-value experts — shared by forward, forward_lut and decode_step.

    q (B,Tq,Dk), K (B,Tk,N,Dk), Vv (B,Tk,N,D), allowed (Tq,Tk) bool or None
    (None: every key position is allowed) -> y (B,Tq,D), cache.
    Tq = Tk = T in forward; in decode_step Tq = 1 and Tk is the cache length.

    The softmax runs over the Tk*N key-value experts jointly, so (j, n) is
    flattened into one axis of Tk*N entries, entry j*N + n: exactly what
    K.reshape(B, Tk*N, Dk) gives. S and P are (B,Tq,Tk,N) or (B,Tq,Tk*N),
    the same memory seen two ways.
    """
    B, Tq, Dk = q.shape
    _, Tk, N, D = Vv.shape
    qs = q / float(np.sqrt(Dk))                             # (B,Tq,Dk) scaled query; Python float: same dtype
    K_flat = K.reshape(B, Tk * N, Dk)                       # (B,Tk,N,Dk) -> (B,Tk*N,Dk) one row per (j, n)
    V_flat = Vv.reshape(B, Tk * N, D)                       # (B,Tk,N,D) -> (B,Tk*N,D)
    S = qs @ K_flat.transpose(0, 2, 1)                      # (B,Tq,Dk) @ (B,Dk,Tk*N) -> (B,Tq,Tk*N)
    if allowed is not None:
        allowed_flat = np.repeat(allowed, N, axis=1)        # (Tq,Tk) -> (Tq,Tk*N): position j's N experts share its mask
        S[:, ~allowed_flat] = -np.inf                       # (B,Tq,Tk*N) in place
    P_flat, _ = ops.softmax_forward(S)                      # (B,Tq,Tk*N) jointly over (j, n)
    del S                                                   # the cache keeps P only
    y = P_flat @ V_flat                                     # (B,Tq,Tk*N) @ (B,Tk*N,D) -> (B,Tq,D)
    P = P_flat.reshape(B, Tq, Tk, N)                        # (B,Tq,Tk*N) -> (B,Tq,Tk,N)
    return y, {"qs": qs, "K_flat": K_flat, "V_flat": V_flat, "P": P}


def attend_backward(dy, cache):
    """dy (B,Tq,D) -> dq (B,Tq,Dk), dK (B,Tk,N,Dk), dVv (B,Tk,N,D)."""
    qs, K_flat, V_flat, P = cache["qs"], cache["K_flat"], cache["V_flat"], cache["P"]
    B, Tq, Tk, N = P.shape
    Dk, D = K_flat.shape[-1], V_flat.shape[-1]
    P_flat = P.reshape(B, Tq, Tk * N)                       # (B,Tq,Tk,N) -> (B,Tq,Tk*N)
    # y = P_flat @ V_flat
    dP_flat = dy @ V_flat.transpose(0, 2, 1)                # (B,Tq,D) @ (B,D,Tk*N) -> (B,Tq,Tk*N)
    dV_flat = P_flat.transpose(0, 2, 1) @ dy                # (B,Tk*N,Tq) @ (B,Tq,D) -> (B,Tk*N,D)
    # P_flat = softmax(S) over (j, n)   (masked entries have P = 0, so they get dS = 0: no mask backward)
    dS = ops.softmax_backward(dP_flat, P_flat)              # (B,Tq,Tk*N)
    del dP_flat
    # S = qs @ K_flat^T
    dqs = dS @ K_flat                                       # (B,Tq,Tk*N) @ (B,Tk*N,Dk) -> (B,Tq,Dk)
    dK_flat = dS.transpose(0, 2, 1) @ qs                    # (B,Tk*N,Tq) @ (B,Tq,Dk) -> (B,Tk*N,Dk)
    # qs = q / sqrt(Dk)
    dq = dqs / float(np.sqrt(Dk))                           # (B,Tq,Dk)
    return dq, dK_flat.reshape(B, Tk, N, Dk), dV_flat.reshape(B, Tk, N, D)


# ----------------------------------------------------------------------------
# training mode
# ----------------------------------------------------------------------------

def forward(params, h, e, window=None):
    """h (B,T,D), e (B,T,D) -> y (B,T,D), cache. window: None or an integer >= 1."""
    D, F, N, Dk, dtype = check(params)
    window = check_positive_int(window, "window", allow_none=True)
    check_input(h, "h", (None, None, D), dtype)
    check_input(e, "e", (None, None, D), dtype)
    if h.shape != e.shape:
        raise ValueError(f"h and e must have the same shape (B,T,D), got h {h.shape} and e {e.shape}")
    T = h.shape[1]
    K, Vv, c_experts = experts_forward(params, e)                # (B,T,N,Dk), (B,T,N,D)
    q, c_query = ops.linear_forward(h, params["query"])          # (B,T,D) -> (B,T,Dk)
    y, c_attend = attend_forward(q, K, Vv, window_mask(T, window))  # (B,T,D)
    return y, {"params": params, "c_experts": c_experts, "c_query": c_query, "attend": c_attend}


def backward(dy, cache):
    """dy (B,T,D) -> dh (B,T,D), de (B,T,D), grads {norm, query, up, down_k, down_v}.

    Derivation, from the output back (each step below is one forward line):
      y[t] = sum_{j,n} P[t,j,n] Vv[j,n]
          dP[t,j,n] = dy[t] · Vv[j,n]           dVv[j,n] = sum_t P[t,j,n] dy[t]
      P = softmax of S over the T*N entries (j, n) of row t
          dS = P * (dP - sum_{j,n} P dP)        masked entries: P = 0, so dS = 0
      S[t,j,n] = qs[t] · K[j,n],  qs = q / sqrt(Dk)
          dq[t] = sum_{j,n} dS[t,j,n] K[j,n] / sqrt(Dk)     dK[j,n] = sum_t dS[t,j,n] qs[t]
      q = h @ query
          dh = dq @ query^T                     dquery = sum_{b,t} h^T dq
      K[n] = a[n] @ down_k[n],  Vv[n] = a[n] @ down_v[n]
          da[n] = dK[n] @ down_k[n]^T + dVv[n] @ down_v[n]^T   (a feeds both heads: sum)
      a = gelu(z), z[n] = ê @ up[n], ê = rmsnorm(e, norm)
          the ops backwards; dê sums the N experts' contributions.
    """
    c_attend = cache["attend"]
    P = c_attend["P"]                                            # (B,T,T,N)
    check_array(dy, "dy", shape=(P.shape[0], P.shape[1], c_attend["V_flat"].shape[-1]))
    if dy.dtype != P.dtype:
        raise TypeError(f"dy has dtype {dy.dtype} but the forward ran in {P.dtype}")
    # y = attention of q over the key-value experts (K, Vv)
    dq, dK, dVv = attend_backward(dy, c_attend)                  # (B,T,Dk), (B,T,N,Dk), (B,T,N,D)
    # q = h @ query
    dh, d_query = ops.linear_backward(dq, cache["c_query"])        # (B,T,D), (D,Dk)
    # K, Vv = the expert FFNs of e
    de, g = experts_backward(dK, dVv, cache["params"], cache["c_experts"])  # (B,T,D)
    grads = {"norm": g["norm"], "query": d_query, "up": g["up"],
             "down_k": g["down_k"], "down_v": g["down_v"]}
    return dh, de, grads


# ----------------------------------------------------------------------------
# inference with lookup tables
# ----------------------------------------------------------------------------

def build_lut(params, emb):
    """Evaluate every expert once per vocabulary entry: emb (V,D) -> lut_k (V,N,Dk), lut_v (V,N,D).

    The tables are in the parameters' dtype; save them with lut.save_lut to
    keep them on disk.
    """
    D, F, N, Dk, dtype = check(params)
    check_input(emb, "emb", (None, D), dtype)
    lut_k, lut_v, _ = experts_forward(params, emb)               # (V,N,Dk), (V,N,D)
    return lut_k, lut_v


def forward_lut(params, h, ids, lut_k, lut_v, window=None):
    """Inference with the tables: h (B,T,D), ids (B,T) -> y (B,T,D).

    Equals forward(params, h, emb[ids], window)[0], with no expert FFN run.
    lut_k, lut_v: ndarrays, np.memmaps or lut.LookupTable objects.
    """
    D, N, Dk, dtype, V = check_inference(params, lut_k, lut_v)
    window = check_positive_int(window, "window", allow_none=True)
    check_input(h, "h", (None, None, D), dtype)
    check_ids(ids, V, "ids")
    if ids.shape != h.shape[:2]:
        raise ValueError(f"ids must have shape (B,T) = {h.shape[:2]} to match h, got {ids.shape}")
    T = h.shape[1]
    K = np.asarray(lut_k[ids])                                   # (B,T) -> (B,T,N,Dk) rows looked up
    Vv = np.asarray(lut_v[ids])                                  # (B,T) -> (B,T,N,D)
    q, _ = ops.linear_forward(h, params["query"])                # (B,T,D) -> (B,T,Dk)
    y, _ = attend_forward(q, K, Vv, window_mask(T, window))      # (B,T,D)
    return y


def decode_step(params, h_t, ids_t, lut_k, lut_v, state, window=None):
    """One decoding step: h_t (B,D), ids_t (B,) of the newest token -> y_t (B,D), state.

    `state` is None at the first token, then the dict this function returned,
    the key-value expert cache of the tokens so far:
        {"k": (B,t,N,Dk), "v": (B,t,N,D), "window": window}
    The newest token's N keys and N values are looked up and appended
    (np.concatenate: a copy per step, simple and fine at this scale); with a
    window only the last `window` tokens are kept. Its query attends over the
    whole cache with no mask: everything cached is allowed. O(t·N) per token.
    Stepping ids[:, 0], ids[:, 1], ... reproduces forward_lut.
    """
    D, N, Dk, dtype, V = check_inference(params, lut_k, lut_v)
    window = check_positive_int(window, "window", allow_none=True)
    check_input(h_t, "h_t", (None, D), dtype)
    B = h_t.shape[0]
    check_ids(ids_t, V, "ids_t")
    if ids_t.shape != (B,):
        raise ValueError(f"ids_t must have shape (B,) = ({B},), one id per row of h_t, got {ids_t.shape}")
    k_t = np.asarray(lut_k[ids_t])[:, None]                      # (B,) -> (B,1,N,Dk)
    v_t = np.asarray(lut_v[ids_t])[:, None]                      # (B,) -> (B,1,N,D)
    if state is None:
        k_all, v_all = k_t, v_t                                  # (B,1,N,Dk), (B,1,N,D)
    else:
        k_past, v_past = _check_state(state, B, N, D, Dk, dtype, window)
        k_all = np.concatenate([k_past, k_t], axis=1)            # (B,t,N,Dk) -> (B,t+1,N,Dk)
        v_all = np.concatenate([v_past, v_t], axis=1)            # (B,t,N,D) -> (B,t+1,N,D)
    if window is not None:
        k_all, v_all = k_all[:, -window:], v_all[:, -window:]    # keep the last `window` tokens
    q, _ = ops.linear_forward(h_t[:, None], params["query"])     # (B,1,D) -> (B,1,Dk)
    y, _ = attend_forward(q, k_all, v_all)                       # (B,1,D), every cached token allowed
    return y[:, 0], {"k": k_all, "v": v_all, "window": window}


def _check_state(state, B, N, D, Dk, dtype, window):
    """The dict decode_step returned, for the same batch, window and dtype."""
    if not isinstance(state, dict) or not {"k", "v", "window"} <= set(state):
        raise TypeError("state must be None or the dict returned by decode_step")
    k_past, v_past = state["k"], state["v"]
    check_array(k_past, "state['k']", ndim=4)
    if k_past.shape[0] != B:
        raise ValueError(f"state holds {k_past.shape[0]} sequences but h_t has {B}; "
                         "start a new state (None) for a new batch")
    if state["window"] != window:
        raise ValueError(f"window={window} but state was built with window={state['window']}; "
                         "use one window for every step")
    check_array(k_past, "state['k']", shape=(B, None, N, Dk))
    check_array(v_past, "state['v']", shape=(B, k_past.shape[1], N, D))
    if k_past.dtype != dtype or v_past.dtype != dtype:
        raise TypeError(f"state holds {k_past.dtype} keys but the parameters are {dtype}")
    return k_past, v_past
