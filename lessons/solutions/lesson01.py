"""Lesson 01's reference solutions and the answers to its questions.

Read these after trying the exercises: the notebook falls back on them when an
exercise cell still holds its stub. Each backward line sits under a comment
quoting the forward line it differentiates, as in the package.

Letters: B batch, T sequence length, D d_model, F expert hidden size, N experts,
L layers, k experts per token (MoE top_k).
"""

import numpy as np

from minimolkv import ops


# ----------------------------------------------------------------------------
# Exercise 1 — bytes loaded per token, whole model
# ----------------------------------------------------------------------------

def mole_bytes_per_token(n_layers, n_experts, d_model, itemsize):
    """MoLE: one table row per layer, the N finished expert outputs of D numbers each."""
    return n_layers * n_experts * d_model * itemsize


def moe_bytes_per_token(n_layers, top_k, d_model, d_expert, itemsize):
    """MoE with offloaded experts: per layer the k chosen experts' weights, U_n (D,F) and W_n (F,D)."""
    return n_layers * top_k * (d_model * d_expert + d_expert * d_model) * itemsize


# ----------------------------------------------------------------------------
# Exercise 2 — the MoLE block's backward
# ----------------------------------------------------------------------------

def mole_backward(dy, cache):
    """dy (B,T,D) -> dh (B,T,D), de (B,T,D), grads {norm, router, up, down}.

    cache = mole.MoleCache(params, router_cache, s, hidden, a, u); hidden =
    ops.ExpertHiddenCache(e_hat, norm_cache, gelu, up). The einsums are what ops.py
    computes as batched matmuls.
    """
    params, c_router, s, hidden, a, u = cache                           # a mole.MoleCache
    e_hat, c_norm, c_gelu, up = hidden                                  # an ops.ExpertHiddenCache
    # y = sum_n s[n] * u[n]
    ds = np.einsum("btd,btnd->btn", dy, u)                              # (B,T,N)
    du = s[..., None] * dy[:, :, None, :]                               # (B,T,N,D)
    # u[n] = a[n] @ down[n]
    da = np.einsum("btnd,nfd->btnf", du, params["down"])                # (B,T,N,F)
    d_down = np.einsum("btnf,btnd->nfd", a, du)                         # (N,F,D) summed over (b,t)
    # a[n] = gelu(z[n])
    dz = ops.gelu_backward(da, c_gelu)                                  # (B,T,N,F)
    # z[n] = e_hat @ up[n]: e_hat feeds every expert, so its gradient sums over n
    d_up = np.einsum("btd,btnf->ndf", e_hat, dz)                        # (N,D,F) summed over (b,t)
    de_hat = np.einsum("btnf,ndf->btd", dz, up)                         # (B,T,D) summed over n
    # e_hat = rmsnorm(e, norm)
    de, d_norm = ops.rmsnorm_backward(de_hat, c_norm)                   # (B,T,D), (D,)
    # s = softmax(logits): its cache is its output s
    dlogits = ops.softmax_backward(ds, s)                               # (B,T,N)
    # logits = h @ router
    dh, d_router = ops.linear_backward(dlogits, c_router)               # (B,T,D), (D,N)
    return dh, de, {"norm": d_norm, "router": d_router, "up": d_up, "down": d_down}


# ----------------------------------------------------------------------------
# the questions
# ----------------------------------------------------------------------------

ANSWERS = {
    "01-q1": """\
Look for the strongest red and blue cells in layer 1. They sit in the columns of the tokens
that are not words: the bare-space tokens `␣` move a large share of their weight to one
expert (expert 1 in our run) away from the layer's preferred expert, and the punctuation --
`,` and the two `:` -- moves weight to another (expert 2 in our run). Ordinary word pieces
are pale, leaning a little towards the preferred expert, partly because the strong columns
pull the sentence average away from it.

Context or token? Mostly the token. Both `␣` columns push the same way, and so do `,` and
the two `:`; the two `␣be` columns are nearly identical (the next cell prints how close).
The context shows only in the size of the push: the two `␣` do not move the same amount of
weight, nor do the two `:`.

Why: the router reads h = rmsnorm(x), and the residual stream x starts as the token's own
embedding (plus its position); two small layers trained for a few hundred steps add
comparatively little context to it, so h is still dominated by the current token's
identity, and the easiest useful thing for the router to learn is a routing by kind of
token. Routing that treats the same token differently in different contexts would need h
to carry more context, which deeper and longer-trained models can give it. Nothing in MoLE forces either: the
experts' outputs are fixed per token id whatever the router does; the router decides only
how to mix them.""",
}
