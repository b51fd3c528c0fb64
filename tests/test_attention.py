"""Causal multi-head self-attention: gradients, a loop reference, the KV cache, errors."""

import math

import numpy as np
import pytest

from minimolkv import attention
from minimolkv.gradcheck_layers import check_attention
from minimolkv.gradcheck import LAYER_TOL, check_block


def random_params(rng, D):
    return {"qkv": rng.standard_normal((D, 3 * D)) / np.sqrt(D),
            "proj": rng.standard_normal((D, D)) / np.sqrt(D)}


def naive_attention(params, x, n_heads):
    """One (batch, head, position) at a time, with Python loops and math.exp."""
    B, T, D = x.shape
    hs = D // n_heads
    qkv = x @ params["qkv"]
    y_heads = np.zeros((B, T, D))
    for b in range(B):
        for head in range(n_heads):
            cols = slice(head * hs, (head + 1) * hs)
            q = qkv[b, :, :D][:, cols]                     # (T,hs)
            k = qkv[b, :, D:2 * D][:, cols]
            v = qkv[b, :, 2 * D:][:, cols]
            for t in range(T):
                scores = [float(q[t] @ k[j]) / math.sqrt(hs) for j in range(t + 1)]
                m = max(scores)
                w = [math.exp(s - m) for s in scores]
                total = sum(w)
                y_heads[b, t, cols] = sum(w[j] / total * v[j] for j in range(t + 1))
    return y_heads @ params["proj"]


def rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck(seed):
    rows = check_attention(seed)
    assert {r.name for r in rows} == {"attention.x", "attention.qkv", "attention.proj"}
    for r in rows:
        assert r.passed and r.error < LAYER_TOL, r


@pytest.mark.parametrize("n_heads", [1, 2, 4])
def test_forward_matches_loop_reference(n_heads):
    rng = np.random.default_rng(1)
    params = random_params(rng, 8)
    x = rng.standard_normal((2, 5, 8))
    y, _ = attention.forward(params, x, n_heads)
    assert y.shape == x.shape
    assert rel(y, naive_attention(params, x, n_heads)) < 1e-12


def test_causal_future_does_not_leak():
    rng = np.random.default_rng(2)
    params = random_params(rng, 8)
    x = rng.standard_normal((1, 6, 8))
    y, _ = attention.forward(params, x, 2)
    x2 = x.copy()
    x2[:, 4:] += rng.standard_normal((1, 2, 8))            # change only the last two positions
    y2, _ = attention.forward(params, x2, 2)
    np.testing.assert_array_equal(y[:, :4], y2[:, :4])
    assert not np.allclose(y[:, 4:], y2[:, 4:])


def test_attention_rows_sum_to_one_and_are_causal():
    rng = np.random.default_rng(3)
    _, cache = attention.forward(random_params(rng, 8), rng.standard_normal((2, 5, 8)), 2)
    P = cache.P                                          # (B,H,T,T)
    np.testing.assert_allclose(P.sum(-1), 1.0, rtol=0, atol=1e-14)
    above = np.triu(np.ones((5, 5), dtype=bool), k=1)     # j > t: the future
    assert np.all(P[..., above] == 0)


@pytest.mark.parametrize("T", [1, 7, 12])
def test_decode_steps_reproduce_forward(T):
    rng = np.random.default_rng(4)
    params = random_params(rng, 12)
    x = rng.standard_normal((3, T, 12))
    y, _ = attention.forward(params, x, 3)
    cache = None
    for t in range(T):
        y_t, cache = attention.decode_step(params, x[:, t], 3, cache, max_len=T)
        assert cache.k.shape == (3, 3, t + 1, 4) and cache.v.shape == (3, 3, t + 1, 4)
        assert rel(y_t, y[:, t]) <= 1e-12, t


def test_decode_cache_holds_the_forward_keys_and_values():
    rng = np.random.default_rng(5)
    params = random_params(rng, 8)
    x = rng.standard_normal((2, 4, 8))
    _, fcache = attention.forward(params, x, 2)
    cache = None
    for t in range(4):
        _, cache = attention.decode_step(params, x[:, t], 2, cache)
    np.testing.assert_allclose(cache.k, fcache.k, rtol=1e-13, atol=0)
    np.testing.assert_allclose(cache.v, fcache.v, rtol=1e-13, atol=0)


def test_decode_max_len_is_enforced():
    rng = np.random.default_rng(6)
    params = random_params(rng, 4)
    cache = None
    for t in range(3):
        _, cache = attention.decode_step(params, rng.standard_normal((1, 4)), 2, cache, max_len=3)
    with pytest.raises(ValueError, match="max_len"):
        attention.decode_step(params, rng.standard_normal((1, 4)), 2, cache, max_len=3)


def test_float32_stays_float32():
    rng = np.random.default_rng(7)
    params = attention.init(rng, 8, 2, dtype=np.float32)
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    y, cache = attention.forward(params, x, 2)
    dx, grads = attention.backward(rng.standard_normal(y.shape).astype(np.float32), cache)
    y_t, kv = attention.decode_step(params, x[:, 0], 2)
    assert y.dtype == dx.dtype == grads["qkv"].dtype == grads["proj"].dtype == np.float32
    assert y_t.dtype == kv.k.dtype == np.float32


def test_init():
    params = attention.init(np.random.default_rng(0), 64, 4)
    assert params["qkv"].shape == (64, 192) and params["proj"].shape == (64, 64)
    assert params["qkv"].dtype == np.float64
    assert abs(params["qkv"].std() - 0.02) < 0.002
    assert params["proj"].std() < params["qkv"].std()


def test_bad_inputs_name_the_argument():
    rng = np.random.default_rng(8)
    params = random_params(rng, 8)
    x = rng.standard_normal((2, 3, 8))
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        attention.forward(params, x[0], 2)
    with pytest.raises(ValueError, match="x has 6 features.*d_model=8"):
        attention.forward(params, x[..., :6], 2)
    with pytest.raises(ValueError, match="n_heads must divide d_model"):
        attention.forward(params, x, 3)
    with pytest.raises(ValueError, match="n_heads must be >= 1"):
        attention.forward(params, x, 0)
    with pytest.raises(TypeError, match="n_heads"):
        attention.forward(params, x, 2.0)
    with pytest.raises(TypeError, match="x has dtype float32"):
        attention.forward(params, x.astype(np.float32), 2)
    with pytest.raises(TypeError, match="x must be a numpy array"):
        attention.forward(params, x.tolist(), 2)
    with pytest.raises(ValueError, match=r"params is missing \['proj'\]"):
        attention.forward({"qkv": params["qkv"]}, x, 2)
    with pytest.raises(ValueError, match=r"params\['proj'\] must have shape"):
        attention.forward({"qkv": params["qkv"], "proj": params["proj"][:4]}, x, 2)
    with pytest.raises(ValueError, match="n_heads must divide d_model"):
        attention.init(rng, 10, 4)
    _, cache = attention.forward(params, x, 2)
    with pytest.raises(ValueError, match="dy must have shape"):
        attention.backward(rng.standard_normal((2, 4, 8)), cache)
    with pytest.raises(ValueError, match="x_t must have 2 dimensions"):
        attention.decode_step(params, x, 2)
    with pytest.raises(TypeError, match="kv must be None or the KVCache"):
        attention.decode_step(params, x[:, 0], 2, {"k": 1, "v": 2})
    _, kv = attention.decode_step(params, x[:, 0], 2)
    with pytest.raises(ValueError, match=r"kv.k must have shape"):
        attention.decode_step(params, x[:1, 1], 2, kv)       # batch of 1 against a cache of 2


def test_gradcheck_catches_a_wrong_backward():
    """The check is not vacuous: a backward whose proj gradient is 0.1% off fails on that row."""
    rng = np.random.default_rng(9)
    params = random_params(rng, 8)

    def slightly_wrong_backward(dy, cache):
        dx, grads = attention.backward(dy, cache)
        return dx, {**grads, "proj": 1.001 * grads["proj"]}

    rows = check_block(attention.forward, slightly_wrong_backward, params,
                       {"x": rng.standard_normal((2, 4, 8))}, n_heads=2)
    verdict = {r.name: r.passed for r in rows}
    assert verdict == {"x": True, "qkv": True, "proj": False}
