"""Lesson 04's reference solutions (the backward of MoLKV's attention) and the answer to
its question. The notebook falls back on them while an exercise cell holds its stub, so
read them after trying; the letters are lesson 02's (B, Tq, Tk, N, Dk, D; t, j, n).
"""

import numpy as np


# ----------------------------------------------------------------------------
# Exercise 1 — the gradient of the values
# ----------------------------------------------------------------------------

def values_backward(dy, P):
    """dy (B,Tq,D), P (B,Tq,Tk,N) -> dv (B,Tk,N,D).

    y[t] = sum_{j,n} P[t,j,n] v[j,n]: v[j,n] is read by every query t that sees it,
    so its gradient sums over t (through the causal mask, over t >= j). With window 3
    only t = j, j+1, j+2 see position j: P[t,j,n] = 0 for every other t, and the same
    einsum needs no mask."""
    # y[t] = sum_{j,n} P[t,j,n] v[j,n]
    dv = np.einsum("btjn,btd->bjnd", P, dy)                   # (B,Tk,N,D) dv[j,n] = sum_t P[t,j,n] dy[t]
    return dv


# ----------------------------------------------------------------------------
# Exercise 2 — the joint softmax's backward
# ----------------------------------------------------------------------------

def joint_softmax_backward(dP, P):
    """dP (B,Tq,Tk,N), P (B,Tq,Tk,N) -> dS (B,Tq,Tk,N), where row t of P is ONE
    softmax over all Tk*N entries (j, n) of row t of S."""
    # P[t] = softmax of S[t] over (j, n) jointly: dS = P * (dP - sum_{j,n} P dP)
    inner = np.sum(P * dP, axis=(2, 3), keepdims=True)        # (B,Tq,1,1) over both axes: one softmax per row
    dS = P * (dP - inner)                                     # (B,Tq,Tk,N) masked entries: P = 0, so dS = 0
    return dS


# ----------------------------------------------------------------------------
# Exercise 3 — the scores' backward: dq and dk
# ----------------------------------------------------------------------------

def scores_backward(dS, qs, k):
    """dS (B,Tq,Tk,N), qs (B,Tq,Dk) the scaled query q / sqrt(Dk), k (B,Tk,N,Dk)
    -> dq (B,Tq,Dk), dk (B,Tk,N,Dk)."""
    Dk = qs.shape[-1]
    # S[t,j,n] = qs[t] · k[j,n]
    dqs = np.einsum("btjn,bjnk->btk", dS, k)                  # (B,Tq,Dk) sum over every key-value expert (j, n)
    dk = np.einsum("btjn,btk->bjnk", dS, qs)                  # (B,Tk,N,Dk) sum over every query t
    # qs = q / sqrt(Dk)
    dq = dqs / np.sqrt(Dk)                                    # (B,Tq,Dk)
    return dq, dk


# ----------------------------------------------------------------------------
# the question
# ----------------------------------------------------------------------------

ANSWERS = {
    "04-q1": """\
With window 3 the query at t sees the positions t-2, t-1 and t. So v[j,n] is read by the
queries t = j, j+1 and j+2 only (fewer near the end of the sequence: t <= T-1), and
dv[j,n] = P[j,j,n] dy[j] + P[j+1,j,n] dy[j+1] + P[j+2,j,n] dy[j+2]. The einsum
sum_t P[t,j,n] dy[t] needs no mask of its own: P[t,j,n] = 0 for every other t, because the
forward's -inf offset made those weights exactly 0. Without a window every t >= j reads
v[j,n]: a value's gradient, like a key's, comes from the later queries.""",
}
