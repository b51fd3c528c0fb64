"""Primitives, each a forward/backward pair of plain functions.

    out, cache = <op>_forward(inputs...)
    d_inputs   = <op>_backward(dout, cache)

The cache holds the inputs (and cheap statistics) the backward needs, as a
NamedTuple so a debugger shows its fields by name. Every backward line sits
under a comment naming the forward line it differentiates.

Shapes use "..." for any leading dims (usually (B,T)):
    Din, Dout  input and output features of a linear map
    D          features normalised by rmsnorm
    V          vocabulary size (rows of an embedding table, columns of logits)

No biases anywhere (as in Llama-style models and the MoLE code). No input
checks either: these are the math. The public entries that take user input
(the blocks, the model, cross_entropy_forward) validate it first, with one
call into validate.py.
"""

import math
from typing import NamedTuple

import numpy as np

from minimolkv import validate

RMS_EPS = 1e-5                     # rmsnorm epsilon, pinned in docs/design.md
RECENCY_INIT = 0.5                 # recency slopes start at 0.5, 0.25, 0.125, ... (init_params)
GELU_C = math.sqrt(2.0 / math.pi)  # tanh-form GELU constant (a Python float: keeps float32 float32)
GELU_A = 0.044715


# ----------------------------------------------------------------------------
# linear: out = x @ w
# ----------------------------------------------------------------------------

class LinearCache(NamedTuple):
    x: np.ndarray          # (...,Din) the input
    w: np.ndarray          # (Din,Dout) the weight


def linear_forward(x, w):
    """x (..., Din), w (Din, Dout) -> out (..., Dout)."""
    out = x @ w                                            # (...,Din) @ (Din,Dout) -> (...,Dout)
    return out, LinearCache(x, w)


def linear_backward(dout, cache):
    """dout (..., Dout) -> dx (..., Din), dw (Din, Dout)."""
    x, w = cache
    # out = x @ w
    dx = dout @ w.T                                        # (...,Dout) @ (Dout,Din) -> (...,Din)
    dw = x.reshape(-1, x.shape[-1]).T @ dout.reshape(-1, dout.shape[-1])  # (Din,M) @ (M,Dout) -> (Din,Dout)
    return dx, dw


# ----------------------------------------------------------------------------
# fresh parameters from their shapes: every block's init and the model's
# ----------------------------------------------------------------------------

def init_params(rng, shapes, dtype=np.float64, scaled=(), scale=1.0):
    """Fresh parameters for {name: shape}, drawn from rng in that order: every matrix
    N(0, 0.02²) (times `scale` for the names in `scaled`), every vector 1 (norm gains),
    and two vectors by their name: "recency" starts at softplus^-1 of the slopes
    RECENCY_INIT * 0.5**n (one per expert: 0.5, 0.25, ...), "gate" at 0."""
    params = {}
    for name, shape in shapes.items():
        last = name.rsplit(".", 1)[-1]
        if len(shape) >= 2:
            value = 0.02 * rng.standard_normal(shape) * (scale if name in scaled else 1.0)
        elif last == "recency":
            value = np.log(np.expm1(RECENCY_INIT * 0.5 ** np.arange(shape[0])))   # softplus(value) = slopes
        elif last == "gate":
            value = np.zeros(shape)                                 # tanh(0) = 0: "gated" starts as MoLE
        else:
            value = np.ones(shape)
        params[name] = value.astype(dtype)
    return params


# ----------------------------------------------------------------------------
# N expert matrices side by side (moe.py, mole.py, molkv.py). Each product is an
# einsum; written as np.einsum it is slow on older NumPy (0.6-5 GFLOP/s on 1.26),
# so each is one BLAS matmul on reshaped views, as fast on every NumPy.
# N experts, F an expert's width, M = the product of the leading dims (tokens).
# ----------------------------------------------------------------------------

def matmul_shared(x, w):
    """x (...,D), w (N,D,F) -> z (...,N,F): every expert applied to the same x,
    einsum("...d,ndf->...nf", x, w), as one (M,D) @ (D,N*F) with the N matrices side by side."""
    N, D, F = w.shape
    w_side = w.transpose(1, 0, 2).reshape(D, N * F)         # (N,D,F) -> (D,N*F): expert n in columns n*F..
    z = x @ w_side                                           # (...,D) @ (D,N*F) -> (...,N*F)
    return z.reshape(x.shape[:-1] + (N, F))                  # (...,N*F) -> (...,N,F)


def matmul_shared_backward(dz, x, w):
    """dz (...,N,F) -> dx (...,D), dw (N,D,F)."""
    N, D, F = w.shape
    dz_flat = dz.reshape(-1, N * F)                          # (M,N*F)
    # z = x @ w_side,  w_side = w.transpose(1, 0, 2).reshape(D, N * F)
    dx = dz_flat @ w.transpose(1, 0, 2).reshape(D, N * F).T  # (M,N*F) @ (N*F,D) -> (M,D): the experts' sum
    dw_flat = x.reshape(-1, D).T @ dz_flat                   # (D,M) @ (M,N*F) -> (D,N*F), summed over tokens
    dw = dw_flat.reshape(D, N, F).transpose(1, 0, 2)         # (D,N*F) -> (N,D,F)
    return dx.reshape(x.shape), np.ascontiguousarray(dw)


def matmul_per_expert(a, w):
    """a (...,N,F), w (N,F,D) -> u (...,N,D): expert n's rows times expert n's matrix,
    einsum("...nf,nfd->...nd", a, w), as a stack of N matmuls (N,M,F) @ (N,F,D)."""
    N, F, D = w.shape
    a_n = a.reshape(-1, N, F).transpose(1, 0, 2)             # (...,N,F) -> (N,M,F) a view, expert axis first
    u = a_n @ w                                              # (N,M,F) @ (N,F,D) -> (N,M,D)
    return u.transpose(1, 0, 2).reshape(a.shape[:-2] + (N, D))   # (N,M,D) -> (...,N,D), a view


def matmul_per_expert_backward(du, a, w):
    """du (...,N,D) -> da (...,N,F), dw (N,F,D)."""
    N, F, D = w.shape
    du_n = du.reshape(-1, N, D).transpose(1, 0, 2)           # (...,N,D) -> (N,M,D)
    # u = a_n @ w,  a_n = a.reshape(-1, N, F).transpose(1, 0, 2)
    da = du_n @ w.transpose(0, 2, 1)                         # (N,M,D) @ (N,D,F) -> (N,M,F)
    dw = a.reshape(-1, N, F).transpose(1, 2, 0) @ du_n       # (N,F,M) @ (N,M,D) -> (N,F,D), summed over tokens
    return da.transpose(1, 0, 2).reshape(a.shape), dw       # (N,M,F) -> (...,N,F)


# ----------------------------------------------------------------------------
# embedding: out = table[ids]
# ----------------------------------------------------------------------------

class EmbeddingCache(NamedTuple):
    ids: np.ndarray        # (...) the token ids that were looked up
    table_shape: tuple     # (V,D)
    dtype: np.dtype


def embedding_forward(ids, table):
    """ids (...) integers in [0, V), table (V, D) -> out (..., D)."""
    out = table[ids]                                       # (...) -> (...,D)
    return out, EmbeddingCache(ids, table.shape, table.dtype)


def embedding_backward(dout, cache):
    """dout (..., D) -> dtable (V, D).

    A row used by several positions receives the sum of their gradients:
    np.add.at accumulates repeated ids (plain `dtable[ids] += dout` would keep
    only the last one).
    """
    dtable = np.zeros(cache.table_shape, dtype=cache.dtype)   # (V,D)
    # out = table[ids]
    np.add.at(dtable, cache.ids, dout)                     # scatter-add (...,D) into rows ids
    return dtable


# ----------------------------------------------------------------------------
# rmsnorm: out = x / sqrt(mean(x**2) + eps) * w
# ----------------------------------------------------------------------------

class RmsnormCache(NamedTuple):
    xhat: np.ndarray       # (...,D) x divided by its root-mean-square
    rstd: np.ndarray       # (...,1) 1 / root-mean-square
    w: np.ndarray          # (D,) the gain


def rmsnorm_forward(x, w):
    """x (..., D), w (D,) -> out (..., D)."""
    ms = np.mean(x * x, axis=-1, keepdims=True)            # (...,1)  mean square
    rstd = 1.0 / np.sqrt(ms + RMS_EPS)                     # (...,1)  reciprocal root-mean-square
    xhat = x * rstd                                        # (...,D)
    out = xhat * w                                         # (...,D)
    return out, RmsnormCache(xhat, rstd, w)


def rmsnorm_backward(dout, cache):
    """dout (..., D) -> dx (..., D), dw (D,).

    With xhat = x * rstd and rstd = (mean(x^2) + eps)^(-1/2):
        d rstd / d x_k = -rstd^3 * x_k / D
    so  dx = rstd * (dxhat - xhat * mean(dxhat * xhat)).
    """
    xhat, rstd, w = cache
    # out = xhat * w
    dxhat = dout * w                                                        # (...,D)
    dw = np.sum(dout * xhat, axis=tuple(range(dout.ndim - 1)))              # (D,)
    # xhat = x * rstd, rstd = 1/sqrt(mean(x*x) + eps): both paths into x at once
    dx = rstd * (dxhat - xhat * np.mean(dxhat * xhat, axis=-1, keepdims=True))  # (...,D)
    return dx, dw


# ----------------------------------------------------------------------------
# gelu (tanh form): out = 0.5 x (1 + tanh(c (x + a x^3)))
# ----------------------------------------------------------------------------

class GeluCache(NamedTuple):
    x: np.ndarray          # (...) the input
    th: np.ndarray         # (...) tanh(c (x + a x^3))


def gelu_forward(x):
    """x (...) -> out (...), elementwise.

    NumPy has no erf, so this is the tanh approximation of GELU; the official
    MoLE code uses the exact (erf) GELU. The two differ by < 1e-3.
    The expert layers make the biggest arrays of a train step, so each line
    below updates one buffer in place (no temporaries): x + a x^3 is written
    x (1 + a x^2).
    """
    th = x * x                                             # (...)  x^2
    th *= GELU_A                                           #        a x^2
    th += 1.0                                              #        1 + a x^2
    th *= x                                                #        x + a x^3
    th *= GELU_C                                           #        u = c (x + a x^3)
    np.tanh(th, out=th)                                    #        th = tanh(u)
    out = th + 1.0                                         # (...)  1 + th
    out *= x                                               #        x (1 + th)
    out *= 0.5                                             #        out = 0.5 x (1 + th)
    return out, GeluCache(x, th)


def gelu_backward(dout, cache):
    """dout (...) -> dx (...).

    out = 0.5 x (1 + th), th = tanh(u), u = c (x + a x^3):
        d out/dx = 0.5 (1 + th) + 0.5 x (1 - th^2) du/dx,   du/dx = c (1 + 3 a x^2)
                 = 0.5 (1 + th + x (1 - th^2) du/dx)
    computed in one buffer, in place, as in the forward.
    """
    x, th = cache
    # u = c (x + a x^3)
    dx = x * x                                             # (...)  x^2
    dx *= 3.0 * GELU_A                                     #        3 a x^2
    dx += 1.0                                              #        1 + 3 a x^2
    dx *= GELU_C                                           #        du/dx
    # th = tanh(u):  d th/du = 1 - th^2
    dx *= 1.0 - th * th                                    #        (1 - th^2) du/dx
    # out = 0.5 x (1 + th)
    dx *= x                                                #        x (1 - th^2) du/dx
    dx += th                                               #        th + ...
    dx += 1.0                                              #        1 + th + ...
    dx *= 0.5                                              #        d out/dx
    dx *= dout                                             # (...)  chain rule
    return dx


# ----------------------------------------------------------------------------
# softmax over the last axis
# ----------------------------------------------------------------------------

def softmax_forward(x):
    """x (..., K) -> p (..., K), each row summing to 1. The cache is p itself.

    Masked entries may be -inf: they get probability 0. A row that is entirely
    -inf gets all zeros (not NaN), so a fully masked row is harmless. A +inf
    entry takes the limit: the +inf entries of a row share all of its weight.
    """
    m = np.max(x, axis=-1, keepdims=True)                  # (...,1)  subtract the max: exp never overflows
    infinite = not np.isfinite(m).all()                    # rare: a fully masked row, or a +inf entry
    if infinite:
        x, m = _infinite_rows(x, m)
    p = x - m                                              # (...,K)  at most 0
    np.exp(p, out=p)                                       # (...,K)  in place
    total = np.sum(p, axis=-1, keepdims=True)              # (...,1)  >= 1: the max contributes exp(0)
    if infinite:
        total[total == 0] = 1.0                            # a fully masked row stays all zeros
    p /= total                                             # (...,K)
    return p, p


def _infinite_rows(x, m):
    """Rows with an infinite max. An all -inf row (fully masked) is shifted by 0 and
    stays -inf: its exps are 0. A row holding +inf keeps only its +inf entries (as 0,
    the rest -inf), so they share the weight -- the only case that rewrites x."""
    if np.isposinf(m).any():
        x = np.where(np.isposinf(m), np.where(np.isposinf(x), 0.0, -np.inf), x).astype(x.dtype, copy=False)
    return x, np.where(np.isinf(m), 0.0, m).astype(m.dtype, copy=False)


def softmax_backward(dp, p):
    """dp (..., K), p the forward's output (its cache) -> dx (..., K).

    dx_i = sum_j dL/dp_j * dp_j/dx_i = p_i (dp_i - sum_j p_j dp_j),
    using dp_j/dx_i = p_j (delta_ij - p_i).
    Masked entries have p = 0, so they receive exactly 0.
    """
    # p = exp(x - m) / sum(exp(x - m))
    dx = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))  # (...,K)
    return dx


# ----------------------------------------------------------------------------
# cross-entropy: mean over tokens of -log softmax(logits)[target]
# ----------------------------------------------------------------------------

class CrossEntropyCache(NamedTuple):
    p: np.ndarray          # (...,V) softmax of the logits
    targets: np.ndarray    # (...) the target ids


def cross_entropy_forward(logits, targets, *, check=True):
    """logits (..., V), targets (...) integers in [0, V) -> scalar mean loss.

    Log-sum-exp: log p[target] = (logits - m)[target] - log sum exp(logits - m),
    m the row max, so exp never overflows. An infinite logit takes the limit
    (a +inf target logit alone in its row costs 0), as in softmax_forward.
    check=False: the caller has validated the targets already (the model does).
    """
    if check:
        validate.cross_entropy(logits, targets)
    m = np.max(logits, axis=-1, keepdims=True)                       # (...,1)
    x = logits
    if not np.isfinite(m).all():                                     # rare: see softmax_forward
        x, m = _infinite_rows(x, m)
    shifted = x - m                                                  # (...,V) at most 0
    picked = np.take_along_axis(shifted, targets[..., None], axis=-1)   # (...,1) (logits - m)[target]
    p = np.exp(shifted, out=shifted)                                 # (...,V) in place: exp(logits - m)
    total = np.sum(p, axis=-1, keepdims=True)                        # (...,1) >= 1 unless a row is all -inf
    with np.errstate(divide="ignore", invalid="ignore"):             # an all -inf row: log 0, -inf - -inf
        logp_target = np.where(total == 0, -np.inf, picked - np.log(total))   # (...,1) log p[target]; NaN stays
    p /= np.where(total > 0, total, 1.0)                             # (...,V) softmax, for the backward
    loss = -np.mean(logp_target)                                     # scalar
    return loss, CrossEntropyCache(p, targets)


def cross_entropy_backward(dloss, cache):
    """dloss scalar -> dlogits (..., V) = dloss * (softmax - onehot) / n_tokens."""
    p, targets = cache
    n_tokens = targets.size
    # loss = -mean(log p[target]),  p = softmax(logits)
    dlogits = p.copy()                                               # (...,V) softmax
    np.put_along_axis(dlogits, targets[..., None],
                      np.take_along_axis(dlogits, targets[..., None], axis=-1) - 1.0, axis=-1)
    dlogits *= dloss / n_tokens                                      # (...,V)
    return dlogits


# ----------------------------------------------------------------------------
# the hidden layer of MoLE's and MoLKV's experts: they read the token embedding
# a[n] = gelu(rmsnorm(e, norm) @ up[n])
# ----------------------------------------------------------------------------

class ExpertHiddenCache(NamedTuple):
    e_hat: np.ndarray          # (...,D) rmsnorm(e, norm), what every expert reads
    norm_cache: RmsnormCache   # of e_hat = rmsnorm(e, norm)
    gelu: GeluCache            # of a = gelu(z)
    up: np.ndarray             # (N,D,F) the weights of z = e_hat @ up[n]


def expert_hidden_forward(norm, up, e):
    """e (...,D) -> a (...,N,F):  a[n] = gelu(rmsnorm(e, norm) @ up[n])."""
    e_hat, c_norm = rmsnorm_forward(e, norm)                 # (...,D)
    z = matmul_shared(e_hat, up)                             # (...,D) -> (...,N,F)
    a, c_gelu = gelu_forward(z)                              # (...,N,F)
    return a, ExpertHiddenCache(e_hat, c_norm, c_gelu, up)


def expert_hidden_backward(da, cache):
    """da (...,N,F) -> de (...,D), d_norm (D,), d_up (N,D,F)."""
    # a = gelu(z)
    dz = gelu_backward(da, cache.gelu)                       # (...,N,F)
    # z = e_hat @ up[n]: every expert reads e_hat, so de_hat sums over the N experts
    de_hat, d_up = matmul_shared_backward(dz, cache.e_hat, cache.up)   # (...,D), (N,D,F)
    # e_hat = rmsnorm(e, norm)
    de, d_norm = rmsnorm_backward(de_hat, cache.norm_cache)        # (...,D), (D,)
    return de, d_norm, d_up


# ----------------------------------------------------------------------------
# what causal attention adds to its scores: the mask and the recency term,
# one place for attention.py, molkv.py and ctxattn.py, in training and decoding
# ----------------------------------------------------------------------------

def score_offset(Tq, Tk, window=None, earlier_only=False, slopes=None):
    """-> offset (Tq,Tk,1) or (Tq,Tk,N) added to the scores, and distance (Tq,Tk) = t - j.

    The Tq queries are the last Tq of the Tk positions (training: Tq = Tk = T;
    decoding one token: Tq = 1, Tk the cached positions), so query i sits at
    t = Tk - Tq + i and key j at j. The offset is 0 where t may see j and -inf
    elsewhere: allowed is t - window < j <= t (window None: every j <= t);
    earlier_only=True also drops j = t (MoLKV "gated": its context is the
    earlier tokens). slopes (N,) given ("recency"): minus slopes[n] * (t - j) too.
    """
    t = np.arange(Tk - Tq, Tk)[:, None]                      # (Tq,1) query positions
    j = np.arange(Tk)[None, :]                               # (1,Tk) key positions
    distance = t - j                                         # (Tq,Tk) t - j, int
    allowed = distance >= (1 if earlier_only else 0)         # (Tq,Tk) causal: never the future
    if window is not None:
        allowed &= distance < window                         # only the last `window` positions
    offset = np.where(allowed, 0.0, -np.inf)[:, :, None]     # (Tq,Tk,1) float64: 0 or -inf
    if slopes is not None:
        offset = offset - slopes * distance[:, :, None]      # (Tq,Tk,N): -inf stays -inf
    return offset, distance


def masked_attention(S, masked, v):
    """P = softmax(S), o = P @ v, again, when the plain product came out non-finite
    (attention.forward and molkv.attend_forward call it then): S (...,Tq,K) the scores
    with the offset added, masked (Tq,K) True where a query may not look, v (...,K,D)
    -> P (...,Tq,K), o (...,Tq,D).

    The plain product leaks a NaN or inf to positions that never see it: a masked score
    NaN + -inf is NaN, and a masked weight 0 times a NaN value is NaN. Here every masked
    score is -inf whatever the product gave, and each row sums only the values it may
    see, so a NaN or inf stays where it is (docs/design.md, section 5). Rare: a loop.
    """
    S = np.where(masked, -np.inf, S).astype(S.dtype, copy=False)   # (...,Tq,K) masked: -inf, never NaN
    P, _ = softmax_forward(S)                                       # (...,Tq,K)
    o = np.zeros(P.shape[:-1] + v.shape[-1:], dtype=P.dtype)        # (...,Tq,D)
    for t in range(P.shape[-2]):
        seen = ~masked[t]                                           # (K,) what query t may see
        o[..., t, :] = np.einsum("...k,...kd->...d", P[..., t, seen], v[..., seen, :])   # (...,D)
    return P, o


def softplus(x):
    """log(1 + exp(x)), computed without overflow; its derivative is sigmoid(x)."""
    return np.logaddexp(0.0, x)


def sigmoid(x):
    """1 / (1 + exp(-x)) = exp(-softplus(-x)), computed without overflow."""
    return np.exp(-np.logaddexp(0.0, -x))
