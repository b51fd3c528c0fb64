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
# Exercise 2 — the gradient of recency's slopes
# ----------------------------------------------------------------------------

def recency_backward(dS, distance, recency):
    """dS (B,Tq,Tk,N) the gradient of the scores, distance (Tq,Tk) t - j, recency (N,)
    the parameter -> d_recency (N,).

    Slope n enters every score of expert n: S[t,j,n] -= m[n] (t - j). So
    dS/dm[n] = -(t - j) at every (b, t, j), and the gradients of all those uses
    add up. Masked entries need no care: their dS is exactly 0."""
    # S[t,j,n] = qs[t] · k[j,n] - m[n] (t - j)
    dm = -np.einsum("btjn,tj->n", dS, distance)                # (N,) summed over b, t, j
    # m = softplus(recency) = log(1 + exp(recency)):  dm/drecency = sigmoid(recency)
    sigmoid = 1.0 / (1.0 + np.exp(-recency))                  # (N,)
    return dm * sigmoid                                       # (N,)


# ----------------------------------------------------------------------------
# the questions
# ----------------------------------------------------------------------------

ANSWERS = {
    "02-q1": """\
Compare every cell with the cyan mark on the colour bar, the weight 1/((t+1)N) that a
perfectly uniform row would give each of the (t+1)N key-value experts. In both layers
every cell sits within about a factor of five of that mark (the printed largest cell is
only about twice the uniform weight): no cell comes near 1, and the rightmost column --
the current token's own four experts -- is not brighter than the rest. The query spreads its weight over the whole
context. The current token's own experts receive about what any one position receives,
roughly 1/(t+1) of the total (the printed "own weight" sits next to 1/(t+1)), where MoLE
gives them weight 1. The printed entropy says the same: within a few percent of
log((t+1)N), the entropy of the uniform row.

What it means for the layer: y[t] is close to the AVERAGE of the values of every token in
the context. It changes little from one late position to the next and carries little
about the current token -- the token-specific signal that makes MoLE work is diluted by
the length of the context. At initialisation the scores are ~0 and the row is exactly
this flat; 300 steps of training have not undone it. Section 12 measures what that
costs.""",
    "02-q2": """\
Left panels (own weight sum_n P[t,t,n] by position t; dashed untrained, solid trained):
joint starts at 1 for t = 0 (a single visible position) and falls like 1/(t+1); its
trained curve lies on its untrained one -- training has not taught the query to prefer
the current token. recency starts higher (its slopes penalise distance from the first
step) and its trained curve moves further up: it learns to keep more weight at home.
MoLE would be the dotted line at 1.

Right panels (weight by distance t - j, log scale): joint's curve is nearly flat -- a
token 60 positions back gets within about one decade of the previous token's weight --
while recency's falls by about three decades over the window: a soft window, learned.
gated's context attention starts at distance 1 (distance 0 is its MoLE term, drawn at the
1e-6 floor) and lies on joint's curve: the context it adds is just as diluted, and its
tanh(gate), in the legend, stays small, so gated remains close to MoLE.

Put next to E1: recency, the variant that keeps the current and recent tokens in front,
beats MoLE; gated, which keeps MoLE's term but adds a diluted context through a nearly
closed gate, ties with MoLE; joint, which hands the current token about 1/(t+1) of the
weight, loses to MoLE and is no better than the dense model.""",
}
