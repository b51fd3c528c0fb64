"""gradcheck.py: the checker itself must be able to fail."""

import numpy as np
import pytest

from minimolkv import ops
from minimolkv.gradcheck import check_pair, format_table, numerical_gradient, rel_error


def test_rel_error():
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert rel_error(np.array([1.0]), np.array([-1.0])) == pytest.approx(1.0)
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0


def test_numerical_gradient_of_a_known_function():
    x = np.array([1.0, -2.0, 0.5])
    dout = np.array([0.3, -1.2, 2.0])
    num = numerical_gradient(lambda: x ** 3, x, dout)
    np.testing.assert_allclose(num, 3 * x ** 2 * dout, rtol=1e-8)
    np.testing.assert_array_equal(x, [1.0, -2.0, 0.5])      # restored after perturbing


def test_a_wrong_backward_is_caught():
    """rmsnorm backward without the mean term (a classic bug) must fail the check."""
    def buggy_backward(dout, cache):
        xhat, rstd, w = cache
        return rstd * dout * w, np.sum(dout * xhat, axis=(0, 1))

    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((2, 3, 5)), "w": rng.uniform(0.5, 1.5, 5)}
    rows = check_pair(ops.rmsnorm_forward, buggy_backward, inputs)
    by_name = {r.name: r for r in rows}
    assert not by_name["x"].passed and by_name["x"].error > 1e-3
    assert by_name["w"].passed
    assert "FAIL" in format_table(rows)


def test_float32_is_refused():
    x = np.ones(3, dtype=np.float32)
    with pytest.raises(TypeError, match="float64"):
        numerical_gradient(lambda: x * 2, x, np.ones(3))
