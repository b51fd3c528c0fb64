"""ops.py: every primitive's gradient, and forwards against naive references."""

import numpy as np
import pytest

from minimolkv import ops
from minimolkv.gradcheck_layers import check_ops
from minimolkv.gradcheck import LAYER_TOL


def test_every_primitive_gradient_matches_finite_differences():
    for seed in (0, 1):
        rows = check_ops(seed)
        assert len(rows) == 8
        for row in rows:
            assert row.error < LAYER_TOL, f"{row.name}: {row.error:.2e}"


def test_softmax_matches_a_per_row_loop():
    rng = np.random.default_rng(0)
    x = 3 * rng.standard_normal((2, 3, 5))
    p, _ = ops.softmax_forward(x)
    for b in range(2):
        for t in range(3):
            row = np.exp(x[b, t]) / np.sum(np.exp(x[b, t]))
            np.testing.assert_allclose(p[b, t], row, rtol=1e-13)


def test_softmax_masked_rows_and_huge_scores_stay_finite():
    x = np.array([[1e4, -1e4, -np.inf], [-np.inf, -np.inf, -np.inf]])
    p, cache = ops.softmax_forward(x)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p[0], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(p[1], 0.0)               # fully masked row: zeros, not NaN
    dx = ops.softmax_backward(np.ones_like(p) * 3.0, cache)
    assert np.all(np.isfinite(dx))


def test_an_infinite_score_takes_the_limit():
    p, _ = ops.softmax_forward(np.array([np.inf, 0.0, -np.inf]))
    np.testing.assert_array_equal(p, [1.0, 0.0, 0.0])      # not [nan, 0, 0]
    p, _ = ops.softmax_forward(np.array([[np.inf, np.inf, 0.0], [1.0, 0.0, -np.inf]]))
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0], [np.e / (np.e + 1), 1 / (np.e + 1), 0.0]])
    logits = np.array([[np.inf, 0.0, -np.inf]])
    loss, _ = ops.cross_entropy_forward(logits, np.array([0]))
    assert loss == 0.0                                      # a +inf target logit costs nothing, not NaN
    loss, _ = ops.cross_entropy_forward(logits, np.array([1]))
    assert loss == np.inf                                   # any other target: certain to be wrong


def test_cross_entropy_refuses_targets_outside_the_classes():
    for bad in (-1, 3):                                     # -1 would wrap to the last class
        with pytest.raises(ValueError, match=f"targets holds token id {bad}, outside the vocabulary \\[0, 3\\)"):
            ops.cross_entropy_forward(np.zeros((2, 3)), np.array([0, bad]))
    with pytest.raises(TypeError, match="integers"):
        ops.cross_entropy_forward(np.zeros((2, 3)), np.array([0.0, 1.0]))


def test_rmsnorm_matches_a_per_token_loop():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4))
    w = rng.uniform(0.5, 1.5, 4)
    out, _ = ops.rmsnorm_forward(x, w)
    for b in range(2):
        for t in range(3):
            ref = x[b, t] / np.sqrt(np.mean(x[b, t] ** 2) + 1e-5) * w
            np.testing.assert_allclose(out[b, t], ref, rtol=1e-13)


def test_gelu_is_the_tanh_form():
    x = np.linspace(-4, 4, 17)
    ref = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(ops.gelu_forward(x)[0], ref, rtol=1e-14)


def test_embedding_backward_accumulates_repeated_ids():
    table = np.arange(12.0).reshape(4, 3)
    ids = np.array([[2, 2, 0]])
    dout = np.array([[[1.0, 2.0, 3.0], [10.0, 20.0, 30.0], [5.0, 5.0, 5.0]]])
    dtable = ops.embedding_backward(dout, ops.embedding_forward(ids, table)[1])
    np.testing.assert_array_equal(dtable[2], [11.0, 22.0, 33.0])
    np.testing.assert_array_equal(dtable[0], [5.0, 5.0, 5.0])
    np.testing.assert_array_equal(dtable[[1, 3]], 0.0)


def test_cross_entropy_is_mean_negative_log_probability():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((2, 3, 6)) * 50          # large: log-sum-exp must hold up
    targets = rng.integers(0, 6, size=(2, 3))
    loss, _ = ops.cross_entropy_forward(logits, targets)
    ref = []
    for b in range(2):
        for t in range(3):
            z = logits[b, t] - logits[b, t].max()
            ref.append(-(z[targets[b, t]] - np.log(np.sum(np.exp(z)))))
    assert loss == pytest.approx(np.mean(ref), rel=1e-12)
    assert np.isfinite(loss)


def test_float32_stays_float32():
    x = np.ones((2, 3), dtype=np.float32)
    w = np.ones(3, dtype=np.float32)
    assert ops.rmsnorm_forward(x, w)[0].dtype == np.float32
    assert ops.gelu_forward(x)[0].dtype == np.float32
    assert ops.softmax_forward(x)[0].dtype == np.float32
