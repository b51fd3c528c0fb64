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
joint (top): every cell sits near the cyan mark, the weight 1/((t+1)N) a perfectly uniform row
gives each of the (t+1)N key-value experts. In the committed run (300 steps) the largest cell
is only about twice that mark, and the current token's own four experts (the rightmost column)
get 0.024 in all -- the uniform row's 1/(t+1) = 0.023 -- where MoLE gives them 1. The last four
positions get 0.09, what any four positions get. The query spreads its weight over the whole
line: y_t is close to the AVERAGE of the values of every token in the context, nearly the same
vector at every late position, and carries little about the current token. At initialisation
the row is nearly this flat (the scores are close to 0, not exactly 0); 300 steps have not
undone it.

recency (bottom): the weight sits on the last few positions. The current token's experts get
0.17, about seven times the uniform share, and the last four positions 0.46. The four experts
look at different ranges, one slope each: expert 0 (the steepest slope, about 0.6 per token
after training) reads only the last five or so tokens; expert 3 (the flattest, about 0.08)
still spreads over the whole line. So y_t mixes the current and the last few tokens' values --
a local, n-gram-like mixture. That is still not MoLE's weight 1 on the current token: recency
keeps some context, and that is what it is for. (In fast mode, after 10 steps, both rows are
close to their untrained state: recency's shape then comes from its initial slopes alone.)""",
    "02-q2": """\
Left panels (own weight sum_n P[t,t,n] by position t): joint's trained curve lies on its
untrained one, and both lie on the uniform row's 1/(t+1) (0.017 and 0.016 at t = 63 after
training, in layers 0 and 1, against 0.016): its query has not learned to single out the
current token. recency starts above it (0.126 at t = 63, from its initial slopes alone) and its
trained curve moves further up (0.22 and 0.19 at t = 63): it learns to keep more weight at
home.

Right panels (weight by distance d = t - j, log scale): joint's curve lies close to the
uniform row's reference (about 0.08 against 0.074 at d = 0, 0.015 against 0.016 at d = 63). It
falls with distance, but so does the reference: only late positions have long distances at
all, and a late position spreads its weight thinner. So a falling curve is not evidence that
joint looks near -- the uniform row, which prefers nothing, draws the same curve. recency's
curve is far from the reference: above it for the last few tokens (0.27 at d = 0), then falling
by three decades to about 2e-4 at d = 63, well below it. Its slopes grew in training (from 0.5,
0.25, 0.125, 0.0625 to about 0.6, 0.33, 0.16, 0.08): a soft window, learned.

Put next to E1 (section 9): recency, the variant that keeps the current and recent tokens in
front, beats MoLE; joint, which hands the current token about 1/(t+1) of the weight, loses to
MoLE and is no better than the dense model.""",
}
