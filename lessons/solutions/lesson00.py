"""Lesson 00's reference solutions and the answers to its questions.

Read these after trying the exercises: the notebook falls back on them when an
exercise cell still holds its stub. Each backward line sits under a comment
quoting the forward line it differentiates, as in the package.
"""

import numpy as np

from minimolkv import ops


# ----------------------------------------------------------------------------
# Exercise 1 — GELU's backward (the tanh form)
# ----------------------------------------------------------------------------

def gelu_backward(dout, cache):
    """dout (...) -> dx (...). cache = ops.GeluCache(x, th), th = tanh(c (x + a x^3)).

    out = 0.5 x (1 + th):  d out/dx = 0.5 (1 + th) + 0.5 x d th/dx   (product rule)
    th  = tanh(u):         d th/du  = 1 - th^2
    u   = c (x + a x^3):   du/dx    = c (1 + 3 a x^2)
    """
    x, th = cache
    # u = c (x + a x^3)
    du_dx = ops.GELU_C * (1.0 + 3.0 * ops.GELU_A * x * x)      # (...)
    # th = tanh(u)
    dth_dx = (1.0 - th * th) * du_dx                           # (...)
    # out = 0.5 x (1 + th)
    dx = dout * 0.5 * (1.0 + th + x * dth_dx)                  # (...) chain rule: times dout
    return dx


# ----------------------------------------------------------------------------
# Exercise 2 — SiLU, forward and backward
# ----------------------------------------------------------------------------

def silu_forward(x):
    """x (...) -> out (...), cache (x, sig)."""
    sig = 1.0 / (1.0 + np.exp(-x))                             # (...) sigma(x)
    out = x * sig                                              # (...)
    return out, (x, sig)


def silu_backward(dout, cache):
    """dout (...) -> dx (...)."""
    x, sig = cache
    # out = x * sig(x):  d/dx = sig + x sig' = sig + x sig (1 - sig)
    dx = dout * sig * (1.0 + x * (1.0 - sig))                  # (...)
    return dx


# ----------------------------------------------------------------------------
# Exercise 3 — the FFN's backward, composed from primitives
# ----------------------------------------------------------------------------

def ffn_backward(df, cache):
    """df (...,D) -> dh (...,D), dU (D,F), dW (F,D). cache = (c_up, c_gelu, c_down)."""
    c_up, c_gelu, c_down = cache
    # f = a @ W
    da, dW = ops.linear_backward(df, c_down)                   # (...,F), (F,D)
    # a = gelu(z)
    dz = ops.gelu_backward(da, c_gelu)                         # (...,F)
    # z = h @ U
    dh, dU = ops.linear_backward(dz, c_up)                     # (...,D), (D,F)
    return dh, dU, dW


# ----------------------------------------------------------------------------
# the questions
# ----------------------------------------------------------------------------

ANSWERS = {
    "00-q1": """\
Read the right half first, where truncation dominates. There the centred float64 curve
falls two decades for every decade of h (slope 2: its error is about h^2/6 |L'''|, the odd
Taylor terms cancel), the one-sided curve only one decade (slope 1: it keeps h/2 |L''|).
At the far right the centred float32 curve lies on the centred float64 one: truncation is
the same whatever the precision.

On the left, rounding dominates: L is known only to about eps |L|, and dividing by a
small h magnifies that, up to about eps |L| / h. As h shrinks the float64 curves rise,
roughly like 1/h but ragged (rounding errors partly cancel, so the points scatter below
that bound), and the centred and one-sided curves merge into this one rounding branch.
The float32 curve has the same branch, higher by float32's larger eps.

Each V bottoms out where the two errors are equal:
  one-sided:  h/2 |L''| = eps |L| / h   ->  h ~ sqrt(eps) ~ 1e-8,  error ~ sqrt(eps) ~ 1e-8;
  centred:    h^2 |L'''| = eps |L| / h  ->  h ~ eps^(1/3) ~ 1e-5,  error ~ eps^(2/3) ~ 1e-11.
So the centred difference is not only more accurate at its best, it is best at a larger,
safer step -- the dashed line, gradcheck's h = 1e-5, sits at the bottom of its V.

In float32 eps is 1.2e-7, so the same algebra puts the centred optimum near
h ~ eps^(1/3) ~ 5e-3, with an error of a few 1e-6 at best; there the float32 curve touches
the float64 one. For h below about 1e-7 the change of L, about |dL/dx| h, is smaller than
the spacing of float32 numbers near L (about 2.4e-7 for |L| ~ 2.7): L(x + h) and L(x - h)
round to the same number, the estimate is exactly 0, and the error is the whole derivative --
the flat plateau at the top left.""",
}
