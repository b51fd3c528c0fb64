"""Lesson 02's reference solutions and the answers to its questions.

Read these after trying the exercises: the notebook falls back on them when an
exercise cell still holds its stub. Each backward line sits under a comment
quoting the forward line it differentiates, as in the package (molkv.py).

Letters: B batch, Tq query positions, Tk key positions, N experts, Dk key
size, D model width; t a query position, j a key position, n an expert.
"""

import numpy as np


# ----------------------------------------------------------------------------
# Exercise 1 — the windowed mask
# ----------------------------------------------------------------------------

def window_mask(T, window):
    """(T,T) bool, True where query t may see position j: t - window < j <= t
    (every j <= t when window is None)."""
    allowed = np.tril(np.ones((T, T), dtype=bool))                       # (T,T) j <= t (k=0 keeps the diagonal)
    if window is not None:
        allowed &= np.triu(np.ones((T, T), dtype=bool), k=1 - window)    # (T,T) j - t >= 1 - window
    return allowed


# ----------------------------------------------------------------------------
# Exercise 2 — the gradient of the values
# ----------------------------------------------------------------------------

def values_backward(dy, P):
    """dy (B,Tq,D), P (B,Tq,Tk,N) -> dv (B,Tk,N,D).

    y[t] = sum_{j,n} P[t,j,n] v[j,n]: v[j,n] is read by every query t that sees it,
    so its gradient sums over t (through the causal mask, over t >= j)."""
    # y[t] = sum_{j,n} P[t,j,n] v[j,n]
    dv = np.einsum("btjn,btd->bjnd", P, dy)                   # (B,Tk,N,D) dv[j,n] = sum_t P[t,j,n] dy[t]
    return dv


# ----------------------------------------------------------------------------
# Exercise 3 — the joint softmax's backward
# ----------------------------------------------------------------------------

def joint_softmax_backward(dP, P):
    """dP (B,Tq,Tk,N), P (B,Tq,Tk,N) -> dS (B,Tq,Tk,N), where row t of P is ONE
    softmax over all Tk*N entries (j, n) of row t of S."""
    # P[t] = softmax of S[t] over (j, n) jointly: dS = P * (dP - sum_{j,n} P dP)
    inner = np.sum(P * dP, axis=(2, 3), keepdims=True)        # (B,Tq,1,1) over both axes: one softmax per row
    dS = P * (dP - inner)                                     # (B,Tq,Tk,N) masked entries: P = 0, so dS = 0
    return dS


# ----------------------------------------------------------------------------
# Exercise 4 — the scores' backward: dq and dk
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
# the questions
# ----------------------------------------------------------------------------

ANSWERS = {
    "02-q1": """\
Compare every cell with the cyan mark on the colour bar, the weight 1/((t+1)N) that a
perfectly uniform row would give each of the (t+1)N key-value experts. In both layers
almost every cell sits within a factor of a few of that mark: no cell is near 1, none
is near the bottom of the scale. The rightmost column -- the current token's own four
experts -- is not brighter than the rest. So the query spreads its weight over the whole
context, and the current token's own experts receive in total about (t+1) times less
than the sum of all: roughly 1/(t+1), the share of one position out of t+1. The entropy
printed under the picture says the same: it is within a few percent of log((t+1)N), the
entropy of the uniform row.

What it means for the layer: y[t] is close to the AVERAGE of the values of every token
in the context, nearly the same vector at every late position, so it carries little
about the current token. MoLE gives the current token's experts weight 1. That is the
dilution section 12 measures; 300 steps of training have not undone it (at
initialisation the scores are ~0 and the row is exactly this flat).""",
    "02-q2": """\
Left panels (own weight sum_n P[t,t,n] by position t): the dashed curves are the
untrained models. joint's starts at 1 for t = 0 (a single visible position) and falls
like 1/(t+1); after training (solid) it lies on or just above its dashed curve: the
brief training has not taught the query to prefer the current token. recency's starts
higher -- its slopes already penalise distance at initialisation -- and training moves
its solid curve up further: it learns to keep more weight at home. MoLE would be the
dotted line at 1.

Right panels (weight by distance t - j, log scale): joint's curve is nearly flat --
the weight of a token 60 positions back is within a small factor of the weight of the
previous token -- while recency's falls by orders of magnitude over the window: a soft
window, learned. gated's context attention leaves out distance 0 (its own term covers
the current token, so its d = 0 value is drawn at the 1e-6 floor) and its tanh(gate), in
the legend, stays small: it adds little context on top of MoLE's term.

Together: the variants that do not dilute the current token (recency keeps more of it,
gated keeps all of it) are the ones that do better in E1; joint, which hands the
current token about 1/(t+1) of the weight, does worst.""",
}
