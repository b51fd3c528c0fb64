"""Lesson 03's reference solutions and the answers to its questions.

Read these after trying the exercises: the notebook falls back on them when an
exercise cell still holds its stub.

Letters: B batch, T context length, V vocabulary size, L layers, N experts per
layer, D d_model, F expert hidden size, Dk key size.
"""

import numpy as np


# ----------------------------------------------------------------------------
# Exercise 1 — MoLKV's tables, bytes per token and replaced parameters
# ----------------------------------------------------------------------------

def molkv_table_numbers(c):
    """c: a MoLKV model.Config -> (lut_numbers, bytes_per_token, replaced).

    Per layer the expert block has norm (D,), query (D,Dk), up (N,D,F),
    down_k (N,F,Dk), down_v (N,F,D). The tables k (V,N,Dk) and v (V,N,D) hold
    the finished keys and values of every id, so everything that computes them
    from the embedding -- norm, up, down_k, down_v -- leaves RAM; the query
    reads the hidden state, not the id, and stays.
    """
    L, V, N, D, F, Dk = c.n_layers, c.vocab_size, c.n_experts, c.d_model, c.d_expert, c.d_key
    lut_numbers = L * V * N * (Dk + D)                       # k (V,N,Dk) and v (V,N,D) in every layer
    bytes_per_token = L * N * (Dk + D) * 4                   # one row of each table per layer, float32
    replaced = L * (D + N * D * F + N * F * Dk + N * F * D)  # norm, up, down_k, down_v (not the query)
    return lut_numbers, bytes_per_token, replaced


# ----------------------------------------------------------------------------
# Exercise 2 — the loss of every token
# ----------------------------------------------------------------------------

def token_losses(logits, targets):
    """logits (B,T,V), targets (B,T) ints -> (B,T) float64 cross-entropy of every position."""
    z = logits.astype(np.float64)                                          # (B,T,V)
    m = z.max(axis=-1, keepdims=True)                                      # (B,T,1) for stability
    lse = m[..., 0] + np.log(np.exp(z - m).sum(axis=-1))                   # (B,T) log-sum-exp
    return lse - np.take_along_axis(z, targets[..., None], axis=-1)[..., 0]   # (B,T)


# ----------------------------------------------------------------------------
# the questions
# ----------------------------------------------------------------------------

ANSWERS = {
    "03-q1": """\
Read the three line styles of one colour first, then compare the colours.

At step 0 every answer costs about ln 64 = 4.16: the untrained model spreads its guess
over the whole vocabulary. Soon after, every line sits near ln 8: the models have learned
that a `?` is followed by one of the 8 answers, but not yet which one.

Then the lines part in the order of how much of the past they need. The *copy* answers
(solid) fall first and furthest: an earlier answer to the same key is in the window, and
the model only has to repeat it -- a pattern self-attention finds easily, and one the data
rewards often, because triggers are twice as common as new keys, so most answers repeat an
earlier one. The *key only* answers (dashed) fall later and less: there the model must map
the key K_k to its answer A_k, a rule it has to learn for each of the 8 keys. The shortcut
comes before the rule.

The *no clue* answers (dotted) cannot go below ln 8, except by luck on the few answers of
that category: nothing in the window says which key is current, so the best is a uniform
guess over the 8 answers. A dotted line a little above ln 8 means the model is more
confident there than it should be: it bets on some answers and pays for it.

Colour against colour: compare MoLE and MoLKV within one line style, and mostly at the
end. In the committed run MoLKV (`recency`) learns both the copy and the key-only answers
sooner than MoLE and ends ahead on both. What the gap cannot say is that MoLKV is the better model for this
task: it is one seed of a few hundred steps, measured at the answers only (about one token
in ten; over all tokens the two end level), and gaps like these move when the seed
changes. Only several seeds, compared seed by seed, can rank the two: E1's five seeds of
1500 steps find `recency` tied with MoLE on this task at the lesson's size and 0.001 nats
behind at the large one (section 6 and docs/experiments.md).""",

    "03-q2": """\
Early on, the order is not the final one. At the first evaluation the entries lie far
apart and the bands are wide -- MoE's the widest: how fast it starts depends on the seed --
and MoLE and `gated` (which *is* MoLE at initialisation) start lowest. Within the first few
hundred steps the picture sorts itself into groups: dense and `joint` (E1's `molkv`) on top,
almost on one line; `recency` and the control lowest; MoE, MoLE and `gated` between.
Inside a group the order still moves: MoE starts worst and ends below MoLE and `gated`,
passing them in the second half of training -- which is why a short run can rank entries
differently from a long one (section 2's single seed of 300 steps did).

At the end the bands are thin, a few hundredths of a nat at most: much thinner than the
gap between the top pair and the rest (0.07 nats or more), but as wide as the gaps inside
the middle group, where MoLE and `gated` end almost on one line. There the picture cannot
decide, and the table has to.

Why seed by seed: a seed fixes the order of the training batches -- the same for every
entry -- and the random stream of the initialisation. Part of what makes one seed's run
good or bad is therefore shared by all the entries trained with that seed (in runs.csv,
seed 2 is the worst or second-worst seed of every entry but dense). The difference of two
entries on the same seed cancels that shared part and leaves only what differs between the
entries, so its interval is narrower than two overlapping bands suggest. The bands are
also min-max ranges over the seeds, not confidence intervals: overlapping bands do not mean
a tie, and separate bands of five seeds are not yet a test.""",
}
