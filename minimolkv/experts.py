"""N small expert FFNs side by side: their products as matmuls, and the hidden layer they share.

Letters: N experts, D input features, F expert hidden size, "..." any leading
dims (usually (B,T)), M = the product of the leading dims (tokens).

Every expert block (moe.py, mole.py, molkv.py) multiplies by per-expert
weight stacks. The math is two einsums:

    matmul_shared(x, w)      einsum("...d,ndf->...nf", x, w)    every expert reads the same x
    matmul_per_expert(a, w)  einsum("...nf,nfd->...nd", a, w)   expert n's rows times expert n's matrix

Written as np.einsum they are slow on older NumPy (0.6-5 GFLOP/s on 1.26);
here each is one BLAS matmul on reshaped views, as fast on every NumPy:

    matmul_shared:      the N matrices side by side, (D, N*F): one (M,D) @ (D,N*F)
    matmul_per_expert:  a stack of N matmuls, (N,M,F) @ (N,F,D), on a transposed view

Each has its backward beside it. The hidden layer that MoLE and MoLKV share,
a[n] = gelu(rmsnorm(e, norm) @ up[n]), is at the end.
"""

from typing import NamedTuple

import numpy as np

from minimolkv import ops


# ----------------------------------------------------------------------------
# z[..., n, :] = x @ w[n]      einsum("...d,ndf->...nf", x, w)
# ----------------------------------------------------------------------------

def side_by_side(w):
    """(N,D,F) -> (D,N*F): expert n's matrix in columns [n*F, (n+1)*F)."""
    N, D, F = w.shape
    return w.transpose(1, 0, 2).reshape(D, N * F)


def matmul_shared(x, w):
    """x (...,D), w (N,D,F) -> z (...,N,F): every expert applied to the same x."""
    N, D, F = w.shape
    z = x @ side_by_side(w)                                  # (...,D) @ (D,N*F) -> (...,N*F)
    return z.reshape(x.shape[:-1] + (N, F))                  # (...,N*F) -> (...,N,F)


def matmul_shared_backward(dz, x, w):
    """dz (...,N,F) -> dx (...,D), dw (N,D,F)."""
    N, D, F = w.shape
    dz_flat = dz.reshape(-1, N * F)                          # (M,N*F)
    # z = x @ side_by_side(w)
    dx = dz_flat @ side_by_side(w).T                         # (M,N*F) @ (N*F,D) -> (M,D): the experts' sum
    dw_flat = x.reshape(-1, D).T @ dz_flat                   # (D,M) @ (M,N*F) -> (D,N*F), summed over tokens
    dw = dw_flat.reshape(D, N, F).transpose(1, 0, 2)         # (D,N*F) -> (N,D,F)
    return dx.reshape(x.shape), np.ascontiguousarray(dw)


# ----------------------------------------------------------------------------
# u[..., n, :] = a[..., n, :] @ w[n]      einsum("...nf,nfd->...nd", a, w)
# ----------------------------------------------------------------------------

def by_expert(a):
    """(...,N,F) -> (N,M,F): a view with the expert axis first, for a stack of N matmuls."""
    N, F = a.shape[-2:]
    return a.reshape(-1, N, F).transpose(1, 0, 2)


def matmul_per_expert(a, w):
    """a (...,N,F), w (N,F,D) -> u (...,N,D): expert n's rows times expert n's matrix."""
    N, F, D = w.shape
    u = by_expert(a) @ w                                     # (N,M,F) @ (N,F,D) -> (N,M,D)
    return u.transpose(1, 0, 2).reshape(a.shape[:-2] + (N, D))   # (N,M,D) -> (...,N,D), a view


def matmul_per_expert_backward(du, a, w):
    """du (...,N,D) -> da (...,N,F), dw (N,F,D)."""
    N, F, D = w.shape
    du_n = by_expert(du)                                     # (N,M,D)
    # u[n] = a[n] @ w[n]
    da = du_n @ w.transpose(0, 2, 1)                         # (N,M,D) @ (N,D,F) -> (N,M,F)
    dw = by_expert(a).transpose(0, 2, 1) @ du_n              # (N,F,M) @ (N,M,D) -> (N,F,D), summed over tokens
    return da.transpose(1, 0, 2).reshape(a.shape), dw       # (N,M,F) -> (...,N,F)


# ----------------------------------------------------------------------------
# the hidden layer of MoLE's and MoLKV's experts: they read the token embedding
# ----------------------------------------------------------------------------

class HiddenCache(NamedTuple):
    e_hat: np.ndarray          # (...,D) rmsnorm(e, norm), what every expert reads
    norm: ops.RmsnormCache     # of e_hat = rmsnorm(e, norm)
    gelu: ops.GeluCache        # of a = gelu(z)
    up: np.ndarray             # (N,D,F) the weights of z = e_hat @ up[n]


def hidden_forward(norm, up, e):
    """e (...,D) -> a (...,N,F):  a[n] = gelu(rmsnorm(e, norm) @ up[n])."""
    e_hat, c_norm = ops.rmsnorm_forward(e, norm)             # (...,D)
    z = matmul_shared(e_hat, up)                             # (...,D) -> (...,N,F)
    a, c_gelu = ops.gelu_forward(z)                          # (...,N,F)
    return a, HiddenCache(e_hat, c_norm, c_gelu, up)


def hidden_backward(da, cache):
    """da (...,N,F) -> de (...,D), d_norm (D,), d_up (N,D,F)."""
    # a = gelu(z)
    dz = ops.gelu_backward(da, cache.gelu)                   # (...,N,F)
    # z = e_hat @ up[n]: every expert reads e_hat, so de_hat sums over the N experts
    de_hat, d_up = matmul_shared_backward(dz, cache.e_hat, cache.up)   # (...,D), (N,D,F)
    # e_hat = rmsnorm(e, norm)
    de, d_norm = ops.rmsnorm_backward(de_hat, cache.norm)    # (...,D), (D,)
    return de, d_norm, d_up
