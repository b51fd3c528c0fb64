"""The MoLKV expert block — Mixture of Lookup Key-Value Experts (Wang, arXiv 2512.09723).

In MoLE (mole.py) every token id has N expert outputs, mixed by a router that
reads the hidden state. In MoLKV each expert of each token id becomes a
key-value pair: a query made from the hidden state attends over the key-value
experts of every token seen so far, so the mixture depends on the context
while keys and values are still lookups by token id.

Letters: B batch, T sequence length, D d_model, F expert hidden size,
N experts, Dk key size, V vocabulary size; t a query position, j a key position.

Inputs
    h (B,T,D)  the normalized hidden state; the query reads it
    e (B,T,D)  the raw token embeddings of the input ids (the same e for every layer)

Parameters
    norm (D,)  query (D,Dk)  up (N,D,F)  down_k (N,F,Dk)  down_v (N,F,D)
    Expert n has one hidden layer a[n] and two heads: its key and its value.

Math (variant "joint", the base: the functions' keyword default; model.Config defaults to "recency")
    ê        = rmsnorm(e, norm)                            (B,T,D)
    a[n]     = gelu(ê @ up[n])                             (B,T,N,F)
    k[n]     = a[n] @ down_k[n]                            (B,T,N,Dk)  key experts
    v[n]     = a[n] @ down_v[n]                            (B,T,N,D)   value experts
    q        = h @ query                                   (B,T,Dk)
    S[t,j,n] = q[t] · k[j,n] / sqrt(Dk)                    (B,T,T,N)
               allowed where t - window < j <= t (window None: every j <= t), else -inf
    P        = softmax of S over (j, n) jointly            (B,T,T,N)
    y[t]     = sum_{j,n} P[t,j,n] * v[j,n]                 (B,T,D)

Attention is over positions: a token id that occurs twice contributes its N
key-value experts twice.

Two more formulations (`variant`), both explained in docs/design.md:
    "recency"  S[t,j,n] -= m[n] * (t - j), with m = softplus(recency) > 0
               learned per expert (ALiBi-like): a soft window; joint is the
               limit m -> 0. Extra parameter
               recency (N,).
    "gated"    MoLE's term for the current token plus a gated attention over
               the earlier tokens' key-value experts:
                   s    = softmax(h @ router)                          (B,T,N)
                   y[t] = sum_n s[t,n] v[t,n] + tanh(gate) * sum_{j<t,n} P[t,j,n] v[j,n]
               where P is the joint softmax over the earlier positions only.
               Extra parameters router (D,N), gate (1,); gate = 0 (the init)
               is exactly MoLE.

Why it becomes a table: k and v depend on e only, and e = emb[id]. After
training, build_lut evaluates every expert once per vocabulary entry,
    k_table[i, n] (V,N,Dk)      v_table[i, n] (V,N,D)
and inference looks rows up instead of running the expert FFNs. Decoding keeps
a key-value expert cache: each new token appends the N keys and N values of
its id (only the last `window` tokens are kept when a window is set), and its
query attends over the cache, O(T·N) work per token.

MoLE is the special case window=1, query = identity (Dk = D) and keys
k_table[i, n] = sqrt(D) * router[:, n] for every id i: then the only allowed
scores are S[t,t,n] = (h @ router)[t,n] and P[t,t,:] is MoLE's router softmax.

Memory: the cache keeps one (B,T,T,N) tensor, P (the scores S and the
gradients dP, dS live only inside a call). It is not the largest: at the
defaults (T = 64, N = 4, F = 128) each (B,T,N,F) activation of the experts
(a, and gelu's input) holds twice as many numbers as P.
"""

from typing import NamedTuple

import numpy as np

from minimolkv import kvbuffer, ops, validate

VARIANTS = ("joint", "recency", "gated")


class AttendCache(NamedTuple):
    qs: np.ndarray             # (B,Tq,Dk) the query divided by sqrt(Dk)
    k_flat: np.ndarray         # (B,Tk*N,Dk) keys, one row per (j, n)
    v_flat: np.ndarray         # (B,Tk*N,D) values, one row per (j, n)
    P: np.ndarray              # (B,Tq,Tk,N) attention weights


class MolkvCache(NamedTuple):
    """What forward keeps for backward, variants "joint" and "recency"."""
    params: dict
    variant: str
    hidden: ops.ExpertHiddenCache  # a = gelu(rmsnorm(e, norm) @ up[n])
    a: np.ndarray                  # (B,T,N,F)
    query_cache: ops.LinearCache   # q = h @ query
    attend: AttendCache            # the attention over key-value experts
    distance: np.ndarray           # (T,T) t - j; "recency"'s gradient reads it


class GatedCache(NamedTuple):
    """What gated_forward keeps for gated_backward (variant "gated")."""
    params: dict
    hidden: ops.ExpertHiddenCache  # a = gelu(rmsnorm(e, norm) @ up[n])
    a: np.ndarray                  # (B,T,N,F)
    query_cache: ops.LinearCache   # q = h @ query
    attend: AttendCache            # the attention over the earlier tokens' key-value experts
    router_cache: ops.LinearCache  # MoLE's router logits = h @ router
    s: np.ndarray                  # (B,T,N) router weights
    v: np.ndarray                  # (B,T,N,D) the current token's values
    y_context: np.ndarray          # (B,T,D) the attention term before the gate


class DecodeState(NamedTuple):
    """The key-value expert cache of the tokens decoded so far, in buffers with room
    to grow (kvbuffer.py); with a window only the last `window` tokens are read."""
    k_buffer: np.ndarray       # (B,capacity,N,Dk)
    v_buffer: np.ndarray       # (B,capacity,N,D)
    length: int                # positions filled
    window: int | None
    variant: str

    @property
    def k(self):
        return kvbuffer.filled(self.k_buffer, self.length, axis=1, keep=self.window)   # (B,t,N,Dk) a view

    @property
    def v(self):
        return kvbuffer.filled(self.v_buffer, self.length, axis=1, keep=self.window)   # (B,t,N,D) a view


def init(rng, d_model, d_expert, n_experts, d_key, variant="joint", dtype=np.float64):
    """Fresh parameters: norm gain 1, small Gaussian matrices (std 0.02);
    "recency": slopes 0.5, 0.25, ...; "gated": gate 0 (exactly MoLE at init)."""
    validate.init_args(dtype, VARIANTS, d_model=d_model, d_expert=d_expert, n_experts=n_experts,
                       d_key=d_key, variant=variant)
    return ops.init_params(rng, param_shapes(d_model, d_expert, n_experts, d_key, variant), dtype)


def param_shapes(d_model, d_expert, n_experts, d_key, variant="joint"):
    """{name: shape} of what init makes (for checks and accounting, without allocating)."""
    D, F, N, Dk = d_model, d_expert, n_experts, d_key
    shapes = {"norm": (D,), "query": (D, Dk), "up": (N, D, F), "down_k": (N, F, Dk), "down_v": (N, F, D)}
    if variant == "recency":
        shapes["recency"] = (N,)
    if variant == "gated":
        shapes.update(router=(D, N), gate=(1,))
    return shapes


def table_shapes(vocab_size, d_model, d_expert, n_experts, d_key, variant="joint"):
    """{name: shape} of what build_lut makes: N keys and N values per token id."""
    return {"k": (vocab_size, n_experts, d_key), "v": (vocab_size, n_experts, d_model)}


# ----------------------------------------------------------------------------
# the two halves: expert FFNs (keys, values) and attention over them
# ----------------------------------------------------------------------------

def experts_forward(params, e):
    """Every expert on the token embeddings: e (...,D) -> k (...,N,Dk), v (...,N,D),
    and for the backward a (...,N,F) and the hidden layer's cache.

    Used by forward (e = the batch's embeddings) and by build_lut (e = the
    whole embedding table), so the tables hold exactly what training computed.
    """
    a, c_hidden = ops.expert_hidden_forward(params["norm"], params["up"], e)   # (...,N,F) as in MoLE
    k = ops.matmul_per_expert(a, params["down_k"])                          # (...,N,F) -> (...,N,Dk)
    v = ops.matmul_per_expert(a, params["down_v"])                          # (...,N,F) -> (...,N,D)
    return k, v, a, c_hidden


def experts_backward(dk, dv, params, a, c_hidden):
    """dk (...,N,Dk), dv (...,N,D) -> de (...,D), and grads of norm, up, down_k, down_v."""
    # v[n] = a[n] @ down_v[n]
    da_v, d_down_v = ops.matmul_per_expert_backward(dv, a, params["down_v"])       # (...,N,F), (N,F,D)
    # k[n] = a[n] @ down_k[n]
    da_k, d_down_k = ops.matmul_per_expert_backward(dk, a, params["down_k"])       # (...,N,F), (N,F,Dk)
    # a feeds both heads: the two gradients meet here and add
    da = da_k + da_v                                                             # (...,N,F)
    # a[n] = gelu(rmsnorm(e, norm) @ up[n]): MoLE's hidden layer
    de, d_norm, d_up = ops.expert_hidden_backward(da, c_hidden)                  # (...,D)
    return de, {"norm": d_norm, "up": d_up, "down_k": d_down_k, "down_v": d_down_v}


def attend_forward(q, k, v, offset=None):
    """Queries attend over key-value experts — shared by forward, forward_lut and decode_step.

    q (B,Tq,Dk), k (B,Tk,N,Dk), v (B,Tk,N,D), offset (Tq,Tk,N or 1) added to
    the scores (masking and recency) or None -> y (B,Tq,D), cache.
    Tq = Tk = T in forward; in decode_step Tq = 1 and Tk is the cache length.

    The softmax runs over the Tk*N key-value experts jointly, so (j, n) is
    flattened into one axis of Tk*N entries, entry j*N + n: exactly what
    k.reshape(B, Tk*N, Dk) gives. S and P are (B,Tq,Tk*N) here and
    (B,Tq,Tk,N) in the cache: the same memory seen two ways.
    """
    B, Tq, Dk = q.shape
    _, Tk, N, D = v.shape
    qs = q / float(np.sqrt(Dk))                             # (B,Tq,Dk) scaled query; Python float: same dtype
    k_flat = k.reshape(B, Tk * N, Dk)                       # (B,Tk,N,Dk) -> (B,Tk*N,Dk) one row per (j, n)
    v_flat = v.reshape(B, Tk * N, D)                        # (B,Tk,N,D) -> (B,Tk*N,D)
    S = qs @ k_flat.transpose(0, 2, 1)                      # (B,Tq,Dk) @ (B,Dk,Tk*N) -> (B,Tq,Tk*N)
    if offset is not None:
        offset = np.broadcast_to(offset, (Tq, Tk, N)).reshape(Tq, Tk * N)   # (Tq,Tk*N) mask (-inf), recency
        S += offset                                         # (B,Tq,Tk*N) in place
    P_flat, _ = ops.softmax_forward(S)                      # (B,Tq,Tk*N) jointly over (j, n)
    y = P_flat @ v_flat                                     # (B,Tq,Tk*N) @ (B,Tk*N,D) -> (B,Tq,D)
    if offset is not None and not np.isfinite(y).all():     # rare: a NaN or inf in h or e stays where it is
        P_flat, y = ops.masked_attention(S, np.isneginf(offset), v_flat)   # (B,Tq,Tk*N), (B,Tq,D)
    P = P_flat.reshape(B, Tq, Tk, N)                        # (B,Tq,Tk*N) -> (B,Tq,Tk,N)
    return y, AttendCache(qs, k_flat, v_flat, P)


def attend_backward(dy, cache):
    """dy (B,Tq,D) -> dq (B,Tq,Dk), dk (B,Tk,N,Dk), dv (B,Tk,N,D), dS (B,Tq,Tk,N)."""
    qs, k_flat, v_flat, P = cache
    B, Tq, Tk, N = P.shape
    Dk, D = k_flat.shape[-1], v_flat.shape[-1]
    P_flat = P.reshape(B, Tq, Tk * N)                       # (B,Tq,Tk,N) -> (B,Tq,Tk*N)
    # y = P_flat @ v_flat
    dP_flat = dy @ v_flat.transpose(0, 2, 1)                # (B,Tq,D) @ (B,D,Tk*N) -> (B,Tq,Tk*N)
    dv_flat = P_flat.transpose(0, 2, 1) @ dy                # (B,Tk*N,Tq) @ (B,Tq,D) -> (B,Tk*N,D)
    # P_flat = softmax(S) over (j, n)   (masked entries have P = 0, so they get dS = 0: no mask backward)
    dS = ops.softmax_backward(dP_flat, P_flat)              # (B,Tq,Tk*N)
    # S = qs @ k_flat^T (+ offset)
    dqs = dS @ k_flat                                       # (B,Tq,Tk*N) @ (B,Tk*N,Dk) -> (B,Tq,Dk)
    dk_flat = dS.transpose(0, 2, 1) @ qs                    # (B,Tk*N,Tq) @ (B,Tq,Dk) -> (B,Tk*N,Dk)
    # qs = q / sqrt(Dk)
    dq = dqs / float(np.sqrt(Dk))                           # (B,Tq,Dk)
    return dq, dk_flat.reshape(B, Tk, N, Dk), dv_flat.reshape(B, Tk, N, D), dS.reshape(B, Tq, Tk, N)


# ----------------------------------------------------------------------------
# training mode
# ----------------------------------------------------------------------------

def forward(params, h, e, *, window=None, variant="joint", check=True):
    """h (B,T,D), e (B,T,D) -> y (B,T,D), cache. window: None or an integer >= 1.
    Variants "joint" and "recency" here; "gated" is gated_forward (called from here).
    check=False: the caller has validated the inputs (the model does, once)."""
    if check:
        validate.block_input("molkv", params, param_shapes, h, e, window=window, variant=variant, variants=VARIANTS)
    if variant == "gated":
        return gated_forward(params, h, e, window=window)
    T = h.shape[1]                                               # positions
    k, v, a, c_hidden = experts_forward(params, e)               # (B,T,N,Dk), (B,T,N,D)
    q, c_query = ops.linear_forward(h, params["query"])          # (B,T,D) -> (B,T,Dk)
    slopes = ops.softplus(params["recency"]) if variant == "recency" else None   # (N,) m, "recency" only
    offset, distance = ops.score_offset(T, T, window, slopes=slopes)   # (T,T,N or 1) mask (and -m (t - j)), (T,T)
    y, c_attend = attend_forward(q, k, v, offset)                # (B,T,D)
    return y, MolkvCache(params, variant, c_hidden, a, c_query, c_attend, distance)


def backward(dy, cache, *, check=True):
    """dy (B,T,D) -> dh (B,T,D), de (B,T,D), grads (the keys of params).

    Derivation ("joint"), from the output back (each step below is one forward line):
      y[t] = sum_{j,n} P[t,j,n] v[j,n]
          dP[t,j,n] = dy[t] · v[j,n]           dv[j,n] = sum_t P[t,j,n] dy[t]
      P = softmax of S over the T*N entries (j, n) of row t
          dS = P * (dP - sum_{j,n} P dP)        masked entries: P = 0, so dS = 0
      S[t,j,n] = qs[t] · k[j,n],  qs = q / sqrt(Dk)
          dq[t] = sum_{j,n} dS[t,j,n] k[j,n] / sqrt(Dk)     dk[j,n] = sum_t dS[t,j,n] qs[t]
      q = h @ query
          dh = dq @ query^T                     dquery = sum_{b,t} h^T dq
      k[n] = a[n] @ down_k[n],  v[n] = a[n] @ down_v[n]
          da[n] = dk[n] @ down_k[n]^T + dv[n] @ down_v[n]^T   (a feeds both heads: sum)
      a = gelu(z), z[n] = ê @ up[n], ê = rmsnorm(e, norm)
          the ops backwards; dê sums the N experts' contributions.
    docs/molkv_backward.md walks through it; "recency" adds one step (below),
    "gated" is gated_backward (called from here).
    """
    c = cache
    if check:
        validate.gradient(dy, c, (MolkvCache, GatedCache), "molkv.forward",
                          lambda c: (c.attend.P.shape[:2] + c.attend.v_flat.shape[-1:], c.attend.P.dtype))
    if isinstance(c, GatedCache):
        return gated_backward(dy, c)
    grads = {}
    # y = attention of q over the key-value experts (k, v)
    dq, dk, dv, dS = attend_backward(dy, c.attend)               # (B,T,Dk), (B,T,N,Dk), (B,T,N,D), (B,T,T,N)
    if c.variant == "recency":
        # S[t,j,n] -= m[n] (t - j),  m = softplus(recency):  dm/drecency = sigmoid(recency)
        dm = -np.einsum("btjn,tj->n", dS, c.distance.astype(dS.dtype))       # (N,)
        grads["recency"] = dm * ops.sigmoid(c.params["recency"])             # (N,)
    # q = h @ query
    dh, grads["query"] = ops.linear_backward(dq, c.query_cache)        # (B,T,D), (D,Dk)
    # k, v = the expert FFNs of e
    de, expert_grads = experts_backward(dk, dv, c.params, c.a, c.hidden)   # (B,T,D)
    grads.update(expert_grads)
    return dh, de, grads


# ----------------------------------------------------------------------------
# variant "gated": MoLE's term for the current token + a gated attention over
# the earlier tokens' key-value experts
# ----------------------------------------------------------------------------

def gated_forward(params, h, e, *, window=None):
    """h (B,T,D), e (B,T,D) -> y (B,T,D), cache (inputs validated by forward):
        y[t] = sum_n s[t,n] v[t,n] + tanh(gate) * sum_{j<t,n} P[t,j,n] v[j,n]."""
    T = h.shape[1]                                               # positions
    k, v, a, c_hidden = experts_forward(params, e)               # (B,T,N,Dk), (B,T,N,D)
    q, c_query = ops.linear_forward(h, params["query"])          # (B,T,D) -> (B,T,Dk)
    offset, _ = ops.score_offset(T, T, window, earlier_only=True)        # (T,T,1) the earlier positions only
    y_context, c_attend = attend_forward(q, k, v, offset)        # (B,T,D)
    logits, c_router = ops.linear_forward(h, params["router"])   # (B,T,D) -> (B,T,N)
    s, _ = ops.softmax_forward(logits)                           # (B,T,N)
    y_own = np.einsum("btn,btnd->btd", s, v)                     # (B,T,D) MoLE's term
    y = y_own + np.tanh(params["gate"]) * y_context              # (B,T,D)
    return y, GatedCache(params, c_hidden, a, c_query, c_attend, c_router, s, v, y_context)


def gated_backward(dy, cache):
    """dy (B,T,D) -> dh (B,T,D), de (B,T,D), grads (the keys of params)."""
    c = cache
    grads = {}
    gate = np.tanh(c.params["gate"])                             # (1,)
    # y = y_own + tanh(gate) * y_context
    grads["gate"] = np.sum(dy * c.y_context) * (1.0 - gate * gate)   # (1,)  d tanh = 1 - tanh^2
    dy_context = gate * dy                                       # (B,T,D) into y_context
    # y_own = sum_n s[n] * v[n]
    ds = np.einsum("btd,btnd->btn", dy, c.v)                     # (B,T,N)
    dv_own = c.s[..., None] * dy[:, :, None, :]                  # (B,T,N,D)
    # s = softmax(h @ router)
    dlogits = ops.softmax_backward(ds, c.s)                      # (B,T,N)
    dh_router, grads["router"] = ops.linear_backward(dlogits, c.router_cache)  # (B,T,D), (D,N)
    # y_context = attention of q over the earlier key-value experts (k, v)
    dq, dk, dv, _ = attend_backward(dy_context, c.attend)        # (B,T,Dk), (B,T,N,Dk), (B,T,N,D)
    dv = dv + dv_own                                             # v feeds both terms: the gradients add
    # q = h @ query
    dh, grads["query"] = ops.linear_backward(dq, c.query_cache)        # (B,T,D), (D,Dk)
    dh = dh + dh_router                                          # h feeds the query and the router
    # k, v = the expert FFNs of e
    de, expert_grads = experts_backward(dk, dv, c.params, c.a, c.hidden)   # (B,T,D)
    grads.update(expert_grads)
    return dh, de, grads


# ----------------------------------------------------------------------------
# inference with lookup tables
# ----------------------------------------------------------------------------

def build_lut(params, emb, *, check=True):
    """Evaluate every expert once per vocabulary entry: emb (V,D) -> {"k": (V,N,Dk), "v": (V,N,D)}.

    The tables are in the parameters' dtype; save them with lut.save_lut to
    keep them on disk.
    """
    if check:
        validate.block_lut("molkv", params, param_shapes, emb, "joint")   # the tables need only joint's
    k, v, _, _ = experts_forward(params, emb)                    # (V,N,Dk), (V,N,D)
    return {"k": np.ascontiguousarray(k), "v": np.ascontiguousarray(v)}


def attend_lut(params, h, k, v, variant, offset, own_v=None):
    """The attention half at inference, for forward_lut and decode_step: h (B,Tq,D),
    looked-up k (B,Tk,N,Dk), v (B,Tk,N,D) -> y (B,Tq,D). own_v (B,Tq,N,D): "gated"."""
    q = h @ params["query"]                                      # (B,Tq,D) -> (B,Tq,Dk)
    y, _ = attend_forward(q, k, v, offset)                       # (B,Tq,D)
    if variant == "gated":
        s, _ = ops.softmax_forward(h @ params["router"])         # (B,Tq,N)
        y = np.einsum("btn,btnd->btd", s, own_v) + np.tanh(params["gate"]) * y   # (B,Tq,D)
    return y


def forward_lut(params, h, ids, luts, *, window=None, variant="joint", check=True):
    """Inference with the tables: h (B,T,D), ids (B,T) -> y (B,T,D).

    Equals forward(params, h, emb[ids], window=window, variant=variant)[0], with no expert
    FFN run: only `query` (and "gated": router, gate; "recency": recency) stays
    in RAM. luts["k"], luts["v"]: ndarrays, np.memmaps or lut.LookupTables.
    """
    if check:
        validate.molkv_lut(params, h, ids, luts, window, variant, VARIANTS, DecodeState)
    T = h.shape[1]
    k = np.asarray(luts["k"][ids])                               # (B,T) -> (B,T,N,Dk) rows looked up
    v = np.asarray(luts["v"][ids])                               # (B,T) -> (B,T,N,D)
    slopes = ops.softplus(params["recency"]) if variant == "recency" else None  # (N,) m, "recency" only
    offset, _ = ops.score_offset(T, T, window, earlier_only=variant == "gated", slopes=slopes)   # (T,T,N or 1)
    return attend_lut(params, h, k, v, variant, offset, own_v=v)


def decode_step(params, h_t, ids_t, luts, state, *, window=None, variant="joint", check=True):
    """One decoding step: h_t (B,D), ids_t (B,) of the newest token -> y_t (B,D), state.

    `state` is None at the first token, then the DecodeState this function
    returned: the key-value expert cache of the tokens so far, k (B,t,N,Dk)
    and v (B,t,N,D). The newest token's N keys and N values are looked up and
    appended (in place, into buffers with room to grow: kvbuffer.py; so
    decode from each state once, as generate does); with a window only the
    last `window` tokens are read and kept. Its query attends
    over the whole cache with no causal mask, all of it is past ("recency" still
    adds -m (t - j); "gated": over the cache before this token, which its own
    term covers). O(t·N) per token.
    Stepping ids[:, 0], ids[:, 1], ... reproduces forward_lut.
    """
    if check:
        validate.molkv_lut(params, h_t, ids_t, luts, window, variant, VARIANTS, DecodeState, state=state,
                           step=True)
    B = h_t.shape[0]
    k_t = np.asarray(luts["k"][ids_t])[:, None]                  # (B,) -> (B,1,N,Dk)
    v_t = np.asarray(luts["v"][ids_t])[:, None]                  # (B,) -> (B,1,N,D)
    if state is None:                                            # the first token: empty buffers
        state = DecodeState(None, None, 0, window, variant)
    k_buffer, _ = kvbuffer.append(state.k_buffer, state.length, k_t, axis=1, keep=window)       # (B,room,N,Dk)
    v_buffer, length = kvbuffer.append(state.v_buffer, state.length, v_t, axis=1, keep=window)  # (B,room,N,D)
    state = DecodeState(k_buffer, v_buffer, length, window, variant)   # t+1 tokens cached
    k_all, v_all = state.k, state.v                              # (B,t+1,N,Dk), (B,t+1,N,D): the last `window`
    Tk = k_all.shape[1]                                          # cached tokens the query sees
    slopes = ops.softplus(params["recency"]) if variant == "recency" else None  # (N,) m, "recency" only
    offset, _ = ops.score_offset(1, Tk, window, earlier_only=variant == "gated", slopes=slopes)   # (1,Tk,N or 1)
    y = attend_lut(params, h_t[:, None], k_all, v_all, variant, offset, own_v=v_t)   # (B,1,D)
    return y.reshape(B, -1), state
