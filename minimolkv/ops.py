"""Primitives, each a forward/backward pair of plain functions.

    out, cache = <op>_forward(inputs...)
    d_inputs   = <op>_backward(dout, cache)

The cache holds the inputs (and cheap statistics) the backward needs. Every
backward line sits under a comment naming the forward line it differentiates.

Shapes use "..." for any leading dims (usually (B,T)):
    Din, Dout  input and output features of a linear map
    D          features normalised by rmsnorm
    V          vocabulary size (rows of an embedding table, columns of logits)

No biases anywhere (as in Llama-style models and the MoLE code).
"""

import math

import numpy as np

RMS_EPS = 1e-5                     # rmsnorm epsilon, pinned by DESIGN.md
GELU_C = math.sqrt(2.0 / math.pi)   # tanh-form GELU constant (a Python float: keeps float32 float32)
GELU_A = 0.044715


# ----------------------------------------------------------------------------
# linear: out = x @ w
# ----------------------------------------------------------------------------

def linear_forward(x, w):
    """x (..., Din), w (Din, Dout) -> out (..., Dout)."""
    out = x @ w                                            # (...,Din) @ (Din,Dout) -> (...,Dout)
    return out, (x, w)


def linear_backward(dout, cache):
    """dout (..., Dout) -> dx (..., Din), dw (Din, Dout)."""
    x, w = cache
    # out = x @ w
    dx = dout @ w.T                                        # (...,Dout) @ (Dout,Din) -> (...,Din)
    dw = x.reshape(-1, x.shape[-1]).T @ dout.reshape(-1, dout.shape[-1])  # (Din,N)@(N,Dout) -> (Din,Dout)
    return dx, dw


# ----------------------------------------------------------------------------
# embedding: out = table[ids]
# ----------------------------------------------------------------------------

def embedding_forward(ids, table):
    """ids (...) integers in [0, V), table (V, D) -> out (..., D)."""
    out = table[ids]                                       # (...) -> (...,D)
    return out, (ids, table.shape, table.dtype)


def embedding_backward(dout, cache):
    """dout (..., D) -> dtable (V, D).

    A row used by several positions receives the sum of their gradients:
    np.add.at accumulates repeated ids (plain `dtable[ids] += dout` would keep
    only the last one).
    """
    ids, shape, dtype = cache
    dtable = np.zeros(shape, dtype=dtype)                  # (V,D)
    # out = table[ids]
    np.add.at(dtable, ids, dout)                           # scatter-add (...,D) into rows ids
    return dtable


# ----------------------------------------------------------------------------
# rmsnorm: out = x / sqrt(mean(x**2) + eps) * w
# ----------------------------------------------------------------------------

def rmsnorm_forward(x, w):
    """x (..., D), w (D,) -> out (..., D)."""
    ms = np.mean(x * x, axis=-1, keepdims=True)            # (...,1)  mean square
    rstd = 1.0 / np.sqrt(ms + RMS_EPS)                     # (...,1)  reciprocal root-mean-square
    xhat = x * rstd                                        # (...,D)
    out = xhat * w                                         # (...,D)
    return out, (xhat, rstd, w)


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

def gelu_forward(x):
    """x (...) -> out (...), elementwise.

    NumPy has no erf, so this is the tanh approximation of GELU; the official
    MoLE code uses the exact (erf) GELU. The two differ by < 1e-3.
    """
    u = GELU_C * (x + GELU_A * (x * x * x))                # (...)  x*x*x: faster than x ** 3
    th = np.tanh(u)                                        # (...)
    out = 0.5 * x * (1.0 + th)                             # (...)
    return out, (x, th)


def gelu_backward(dout, cache):
    """dout (...) -> dx (...)."""
    x, th = cache
    # out = 0.5 x (1 + th),  th = tanh(u),  u = c (x + a x^3)
    du_dx = GELU_C * (1.0 + 3.0 * GELU_A * (x * x))        # (...)
    dx = dout * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du_dx)  # (...)
    return dx


# ----------------------------------------------------------------------------
# softmax over the last axis
# ----------------------------------------------------------------------------

def softmax_forward(x):
    """x (..., K) -> p (..., K), each row summing to 1.

    Masked entries may be -inf: they get probability 0. A row that is entirely
    -inf gets all zeros (not NaN), so a fully masked row is harmless.
    """
    m = np.max(x, axis=-1, keepdims=True)                  # (...,1)  subtract the max: exp never overflows
    m = np.where(np.isfinite(m), m, 0.0)                   # an all -inf row: keep exp(-inf) = 0
    ex = np.exp(x - m)                                     # (...,K)
    total = np.sum(ex, axis=-1, keepdims=True)             # (...,1)
    p = ex / np.where(total > 0, total, 1.0)               # (...,K)
    return p, p


def softmax_backward(dp, cache):
    """dp (..., K) -> dx (..., K).

    dx_i = sum_j dL/dp_j * dp_j/dx_i = p_i (dp_i - sum_j p_j dp_j),
    using dp_j/dx_i = p_j (delta_ij - p_i).
    Masked entries have p = 0, so they receive exactly 0.
    """
    p = cache
    # p = exp(x - m) / sum(exp(x - m))
    dx = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))  # (...,K)
    return dx


# ----------------------------------------------------------------------------
# cross-entropy: mean over tokens of -log softmax(logits)[target]
# ----------------------------------------------------------------------------

def cross_entropy_forward(logits, targets):
    """logits (..., V), targets (...) integers -> scalar mean loss.

    Uses log-sum-exp: log softmax = logits - (m + log sum exp(logits - m)).
    """
    m = np.max(logits, axis=-1, keepdims=True)                       # (...,1)
    lse = m + np.log(np.sum(np.exp(logits - m), axis=-1, keepdims=True))  # (...,1)
    logp = logits - lse                                              # (...,V)
    picked = np.take_along_axis(logp, targets[..., None], axis=-1)   # (...,1)
    loss = -np.mean(picked)                                          # scalar
    return loss, (logp, targets)


def cross_entropy_backward(dloss, cache):
    """dloss scalar -> dlogits (..., V) = dloss * (softmax - onehot) / n_tokens."""
    logp, targets = cache
    n_tokens = targets.size
    # loss = -mean(logp[target]),  logp = logits - lse(logits)
    dlogits = np.exp(logp)                                           # (...,V) softmax
    np.put_along_axis(dlogits, targets[..., None],
                      np.take_along_axis(dlogits, targets[..., None], axis=-1) - 1.0, axis=-1)
    dlogits *= dloss / n_tokens                                      # (...,V)
    return dlogits
