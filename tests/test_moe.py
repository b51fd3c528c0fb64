"""Top-k routed MoE: gradients, a per-token loop reference, the dense limit, errors."""

import math

import numpy as np
import pytest

from minimolkv import moe, ops
from minimolkv.gradcheck_layers import check_moe
from minimolkv.gradcheck import LAYER_TOL, check_block


def random_params(rng, D, F, N):
    return {"router": 2 * rng.standard_normal((D, N)) / np.sqrt(D),
            "up": rng.standard_normal((N, D, F)) / np.sqrt(D),
            "down": rng.standard_normal((N, F, D)) / np.sqrt(F)}


def gelu(z):
    return 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))


def naive_moe(params, h, top_k):
    """One token at a time: sort the router probabilities, keep top_k, renormalise."""
    B, T, D = h.shape
    N = params["router"].shape[1]
    y = np.zeros((B, T, D))
    for b in range(B):
        for t in range(T):
            logits = h[b, t] @ params["router"]
            e = [math.exp(l - max(logits)) for l in logits]
            p = [v / sum(e) for v in e]
            chosen = sorted(range(N), key=lambda n: -p[n])[:top_k]
            mass = sum(p[n] for n in chosen)
            for n in chosen:
                ffn = gelu(h[b, t] @ params["up"][n]) @ params["down"][n]
                y[b, t] += p[n] / mass * ffn
    return y


def rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcheck(seed):
    rows = check_moe(seed)
    assert {r.name for r in rows} == {"moe.h", "moe.router", "moe.up", "moe.down"}
    for r in rows:
        assert r.passed and r.error < LAYER_TOL, r


@pytest.mark.parametrize("top_k", [1, 2, 3, 5])
def test_forward_matches_loop_reference(top_k):
    rng = np.random.default_rng(1)
    params = random_params(rng, 6, 4, 5)
    h = rng.standard_normal((2, 4, 6))
    y, cache = moe.forward(params, h, top_k=top_k)
    assert y.shape == h.shape
    assert rel(y, naive_moe(params, h, top_k)) < 1e-12
    assert np.all(cache.keep.sum(-1) == top_k)
    np.testing.assert_allclose(cache.g.sum(-1), 1.0, rtol=0, atol=1e-14)
    assert np.all(cache.g[~cache.keep] == 0)


def test_all_experts_is_the_dense_softmax_mixture():
    rng = np.random.default_rng(2)
    params = random_params(rng, 6, 4, 3)
    h = rng.standard_normal((2, 5, 6))
    y, _ = moe.forward(params, h, top_k=3)
    p = ops.softmax_forward(h @ params["router"])[0]                           # (B,T,N)
    u = np.stack([gelu(h @ params["up"][n]) @ params["down"][n] for n in range(3)], axis=2)
    assert rel(y, np.einsum("btn,btnd->btd", p, u)) < 1e-13


def test_top_1_is_the_argmax_expert_alone():
    rng = np.random.default_rng(3)
    params = random_params(rng, 6, 4, 4)
    h = rng.standard_normal((1, 6, 6))
    y, cache = moe.forward(params, h, top_k=1)
    best = np.argmax(h @ params["router"], axis=-1)                            # (B,T)
    for t in range(6):
        n = best[0, t]
        assert cache.keep[0, t, n]
        assert rel(y[0, t], gelu(h[0, t] @ params["up"][n]) @ params["down"][n]) < 1e-13


def test_selection_margin():
    p = np.array([[[0.5, 0.3, 0.2], [0.1, 0.45, 0.45]]])
    assert moe.selection_margin(p, 1) == pytest.approx(0.0)                    # 0.45 vs 0.45
    assert moe.selection_margin(p, 2) == pytest.approx(0.1)                    # 0.3 vs 0.2, 0.45 vs 0.1
    assert moe.selection_margin(p, 3) == np.inf


def test_unselected_experts_get_no_gradient():
    rng = np.random.default_rng(4)
    params = random_params(rng, 6, 4, 5)
    h = rng.standard_normal((1, 1, 6))                                         # one token
    y, cache = moe.forward(params, h, top_k=2)
    _, _, grads = moe.backward(rng.standard_normal(y.shape), cache)
    unused = ~cache.keep[0, 0]
    assert np.all(grads["up"][unused] == 0) and np.all(grads["down"][unused] == 0)
    assert np.all(np.abs(grads["up"][~unused]) > 0)


def test_float64_and_float32_dtypes():
    rng = np.random.default_rng(5)
    params = moe.init(rng, 8, 6, 4)
    assert {k: v.shape for k, v in params.items()} == {"router": (8, 4), "up": (4, 8, 6),
                                                       "down": (4, 6, 8)}
    assert all(v.dtype == np.float64 for v in params.values())
    p32 = moe.init(rng, 8, 6, 4, dtype=np.float32)
    assert all(v.dtype == np.float32 for v in p32.values())


def test_float32_stays_float32():
    rng = np.random.default_rng(6)
    params = moe.init(rng, 8, 6, 4, dtype=np.float32)
    h = rng.standard_normal((2, 3, 8)).astype(np.float32)
    y, cache = moe.forward(params, h, top_k=2)
    dh, de, grads = moe.backward(rng.standard_normal(y.shape).astype(np.float32), cache)
    assert de is None                                                          # MoE does not read e
    assert y.dtype == dh.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())


def test_bad_inputs_name_the_argument():
    rng = np.random.default_rng(7)
    params = random_params(rng, 6, 4, 3)
    h = rng.standard_normal((2, 3, 6))
    with pytest.raises(ValueError, match=r"top_k must be in \[1, n_experts=3\], got 0"):
        moe.forward(params, h, top_k=0)
    with pytest.raises(ValueError, match=r"top_k must be in \[1, n_experts=3\], got 4"):
        moe.forward(params, h, top_k=4)
    with pytest.raises(TypeError, match="top_k must be an integer"):
        moe.forward(params, h, top_k=1.5)
    with pytest.raises(TypeError, match="e must be None or an array .* keyword-only"):
        moe.forward(params, h, 2)                          # top_k passed where e goes
    with pytest.raises(ValueError, match="h must have 3 dimensions"):
        moe.forward(params, h[0], top_k=2)
    with pytest.raises(ValueError, match="h has 5 features.*d_model=6"):
        moe.forward(params, h[..., :5], top_k=2)
    with pytest.raises(TypeError, match="h has dtype float32"):
        moe.forward(params, h.astype(np.float32), top_k=2)
    with pytest.raises(ValueError, match=r"params is missing \['down'\]"):
        moe.forward({"router": params["router"], "up": params["up"]}, h, top_k=2)
    with pytest.raises(ValueError, match=r"params\['down'\] must have shape \(3, 4, 6\)"):
        moe.forward({**params, "down": params["down"][:, :3]}, h, top_k=2)
    with pytest.raises(TypeError, match="mixes dtypes"):
        moe.forward({**params, "up": params["up"].astype(np.float32)}, h, top_k=2)
    with pytest.raises(ValueError, match="d_expert must be >= 1"):
        moe.init(rng, 6, 0, 3)
    _, cache = moe.forward(params, h, top_k=2)
    with pytest.raises(ValueError, match="dy must have shape"):
        moe.backward(rng.standard_normal((2, 3, 5)), cache)


def test_gradcheck_catches_a_wrong_backward():
    """The check is not vacuous: a backward handed a cache whose kept mass Z is
    1 (the renormalisation g = pk / Z forgotten on the way back) fails on the
    router and h rows, while the expert weights, which never see Z, still pass."""
    rng = np.random.default_rng(8)
    params = random_params(rng, 6, 4, 4)
    h = rng.standard_normal((2, 3, 6))
    _, cache = moe.forward(params, h, top_k=2)
    assert moe.selection_margin(cache.p, 2) > 1e-3

    def backward_forgetting_z(dy, cache):
        return moe.backward(dy, cache._replace(kept_mass=np.ones_like(cache.kept_mass)))

    rows = check_block(moe.forward, backward_forgetting_z, params, {"h": h}, top_k=2)
    verdict = {r.name: r.passed for r in rows}
    assert verdict == {"h": False, "router": False, "up": True, "down": True}


def test_near_a_tie_the_numerical_gradient_jumps():
    """The top-k selection is a kink: with two experts exactly tied for the
    single slot, a step of 1e-5 in the router swaps the winner and the
    centred difference is huge, so the check fails. Hence check_moe keeps
    every token's k-th and (k+1)-th probabilities >= 1e-3 apart."""
    rng = np.random.default_rng(9)
    params = random_params(rng, 6, 4, 2)
    params["router"][:, 1] = params["router"][:, 0]                            # experts 0 and 1 tie
    h = rng.standard_normal((1, 2, 6))
    _, cache = moe.forward(params, h, top_k=1)
    assert moe.selection_margin(cache.p, 1) == 0.0
    rows = check_block(moe.forward, moe.backward, params, {"h": h}, top_k=1)
    assert not {r.name: r.passed for r in rows}["router"]
