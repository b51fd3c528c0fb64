"""ctxattn.py, the control of experiment E1: gradients, a naive reference, decoding, bad input."""

import numpy as np
import pytest

from minimolkv import ctxattn, molkv, ops
from minimolkv.gradcheck_layers import check_ctxattn
from minimolkv.gradcheck import LAYER_TOL

B, T, D, Dk = 2, 9, 6, 4


@pytest.fixture
def setup():
    rng = np.random.default_rng(3)
    params = {"query": 2 * rng.standard_normal((D, Dk)) / np.sqrt(D), "key": rng.standard_normal((D, Dk)) / np.sqrt(D),
              "value": rng.standard_normal((D, D)) / np.sqrt(D), "recency": rng.uniform(-1.0, 0.5, size=1)}
    return params, rng.standard_normal((B, T, D))


@pytest.mark.parametrize("window", [None, 1, 3])
def test_gradients_of_h_and_every_parameter(window):
    rows = check_ctxattn(0, window)
    assert {r.name for r in rows} == {"ctxattn.h", "ctxattn.query", "ctxattn.key", "ctxattn.value",
                                      "ctxattn.recency"}
    for row in rows:
        assert row.error < LAYER_TOL, f"window={window} {row.name}: {row.error:.2e}"


@pytest.mark.parametrize("window", [None, 2, 4])
def test_forward_matches_a_per_position_loop(setup, window):
    params, h = setup
    y, _ = ctxattn.forward(params, h, window=window)
    m = ops.softplus(params["recency"][0])
    for b in range(B):
        q, k, v = h[b] @ params["query"], h[b] @ params["key"], h[b] @ params["value"]
        for t in range(T):
            seen = [j for j in range(t + 1) if window is None or j > t - window]
            s = np.array([q[t] @ k[j] / np.sqrt(Dk) - m * (t - j) for j in seen])
            w = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
            np.testing.assert_allclose(y[b, t], sum(wi * v[j] for wi, j in zip(w, seen)), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("window", [None, 3, 10])
def test_decoding_step_by_step_reproduces_forward(window):
    """45 tokens: past the cache buffer's first capacity (16), with and without a window."""
    rng = np.random.default_rng(4)
    params = ctxattn.init(rng, D, Dk)
    params["recency"][:] = 0.3
    h = rng.standard_normal((B, 45, D))
    y, _ = ctxattn.forward(params, h, window=window)
    state, ys = None, []
    for t in range(h.shape[1]):
        y_t, state = ctxattn.decode_step(params, h[:, t], None, {}, state, window=window)
        ys.append(y_t)
    np.testing.assert_allclose(np.stack(ys, axis=1), y, rtol=1e-11, atol=1e-13)
    np.testing.assert_array_equal(ctxattn.forward_lut(params, h, None, {}, window=window), y)


def test_float32_stays_float32(setup):
    params, h = setup
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    y, cache = ctxattn.forward(p32, h.astype(np.float32), window=3)
    dh, de, grads = ctxattn.backward(np.ones_like(y), cache)
    assert de is None and y.dtype == dh.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())
    assert ctxattn.decode_step(p32, h[:, 0].astype(np.float32), None, {}, None)[0].dtype == np.float32


def test_bad_inputs_name_the_argument(setup):
    params, h = setup
    with pytest.raises(ValueError, match=r"params is missing \['recency'\]"):
        ctxattn.forward({k: v for k, v in params.items() if k != "recency"}, h)
    with pytest.raises(ValueError, match="window must be >= 1"):
        ctxattn.forward(params, h, window=0)
    with pytest.raises(TypeError, match="e must be None or an array"):
        ctxattn.forward(params, h, 3)
    _, state = ctxattn.decode_step(params, h[:, 0], None, {}, None, window=3)
    with pytest.raises(ValueError, match="state holds 2 sequences but h_t has 1"):
        ctxattn.decode_step(params, h[:1, 1], None, {}, state, window=3)
    with pytest.raises(ValueError, match="state was built with window=3"):
        ctxattn.decode_step(params, h[:, 1], None, {}, state, window=None)
    with pytest.raises(TypeError, match="state must be None or the DecodeState"):
        ctxattn.decode_step(params, h[:, 1], None, {}, (state.k_buffer, state.v_buffer), window=3)
    with pytest.raises(ValueError, match="h_t must have 2 dimensions"):
        ctxattn.decode_step(params, h[:, 1:3], None, {}, state, window=3)
