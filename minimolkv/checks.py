"""The gradient checks of every layer: float64 set-ups with non-trivial values.

Each `check_<layer>(seed)` builds small random inputs and parameters (no
zeros, norm gains != 1), runs the layer's backward against centred
differences (see gradcheck.py) and returns one Row per tensor. The tests and
`python -m minimolkv gradcheck` both call these, so what an instructor sees
in the report is exactly what the tests assert.
"""

import numpy as np

from minimolkv import ops
from minimolkv.gradcheck import check_block, check_pair


def gains(rng, n):
    """Norm gains away from 1 (and from 0), so a missing `* w` shows up."""
    return rng.uniform(0.5, 1.5, size=n)


def check_ops(seed=0):
    """Every primitive of ops.py: linear, embedding, rmsnorm, gelu, softmax, cross_entropy."""
    rng = np.random.default_rng(seed)
    B, T, D, F, V = 2, 3, 5, 4, 7
    rows = []
    rows += check_pair(ops.linear_forward, ops.linear_backward,
                       {"x": rng.standard_normal((B, T, D)), "w": rng.standard_normal((D, F))},
                       seed, prefix="linear.")
    ids = np.array([[1, 4, 1], [6, 1, 0]])                 # id 1 repeats: gradients must add up
    rows += check_pair(lambda table: ops.embedding_forward(ids, table), ops.embedding_backward,
                       {"table": rng.standard_normal((V, D))}, seed, prefix="embedding.")
    rows += check_pair(ops.rmsnorm_forward, ops.rmsnorm_backward,
                       {"x": rng.standard_normal((B, T, D)), "w": gains(rng, D)},
                       seed, prefix="rmsnorm.")
    rows += check_pair(ops.gelu_forward, ops.gelu_backward,
                       {"x": 2 * rng.standard_normal((B, T, D))}, seed, prefix="gelu.")
    rows += check_pair(ops.softmax_forward, ops.softmax_backward,
                       {"x": 2 * rng.standard_normal((B, T, D))}, seed, prefix="softmax.")
    targets = rng.integers(0, V, size=(B, T))
    rows += check_pair(lambda logits: ops.cross_entropy_forward(logits, targets),
                       ops.cross_entropy_backward,
                       {"logits": rng.standard_normal((B, T, V))}, seed, prefix="cross_entropy.")
    return rows


# Every check the CLI runs, in reading order: {title: function(seed) -> rows}.
CHECKS = {
    "ops": check_ops,
}
