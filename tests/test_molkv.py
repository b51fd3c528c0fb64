"""molkv.py: gradients, a naive reference, lookup tables, decoding, MoLE as a special case, bad input."""

import tracemalloc

import numpy as np
import pytest

from minimolkv import lut, mole, molkv
from minimolkv.checks import check_molkv, mole_params, molkv_params
from minimolkv.gradcheck import LAYER_TOL, rel_error
from minimolkv.ops import gelu_forward

B, T, D, F, N, Dk, V = 3, 7, 6, 4, 3, 4, 11
WINDOWS = [None, 1, 3, T, T + 4]


@pytest.fixture
def setup():
    rng = np.random.default_rng(7)
    params = molkv_params(rng, D, F, N, Dk)
    emb = rng.standard_normal((V, D))                                   # (V,D)
    ids = np.array([[1, 4, 1, 9, 1, 2, 4],
                    [0, 10, 4, 4, 2, 2, 7],
                    [5, 5, 5, 3, 8, 6, 0]])                             # (B,T) repeated ids
    h = rng.standard_normal((B, T, D))                                  # (B,T,D)
    return params, emb, ids, h


def decode_all(params, h, ids, lut_k, lut_v, window):
    """Step decode_step through the sequence; stack the outputs -> (B,T,D)."""
    state, ys = None, []
    for t in range(h.shape[1]):
        y_t, state = molkv.decode_step(params, h[:, t], ids[:, t], lut_k, lut_v, state, window)
        kept = t + 1 if window is None else min(t + 1, window)
        assert state["k"].shape[1] == kept and state["v"].shape[1] == kept
        ys.append(y_t)
    return np.stack(ys, axis=1)


# ----------------------------------------------------------------------------
# gradients and the forward math
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("window", [None, 1, 3, 5, 9])              # the check has T = 5
def test_gradients_of_every_parameter_and_both_inputs(window):
    rows = check_molkv(0, window)
    assert {r.name for r in rows} == {"molkv.h", "molkv.e", "molkv.norm", "molkv.query",
                                      "molkv.up", "molkv.down_k", "molkv.down_v"}
    for row in rows:
        assert row.error < LAYER_TOL, f"window={window} {row.name}: {row.error:.2e}"


@pytest.mark.parametrize("window", WINDOWS)
def test_forward_matches_a_per_position_loop(setup, window):
    params, emb, ids, h = setup
    e = emb[ids]
    y, _ = molkv.forward(params, h, e, window)
    for b in range(B):
        K, Vv = {}, {}                                                   # (j, n) -> key (Dk,), value (D,)
        for j in range(T):
            e_hat = e[b, j] / np.sqrt(np.mean(e[b, j] ** 2) + 1e-5) * params["norm"]
            for n in range(N):
                a = gelu_forward(e_hat @ params["up"][n])[0]
                K[j, n] = a @ params["down_k"][n]
                Vv[j, n] = a @ params["down_v"][n]
        for t in range(T):
            q = h[b, t] @ params["query"]
            seen = [(j, n) for j in range(T) for n in range(N)
                    if j <= t and (window is None or j > t - window)]
            scores = np.array([q @ K[j, n] / np.sqrt(Dk) for j, n in seen])
            weights = np.exp(scores - scores.max()) / np.sum(np.exp(scores - scores.max()))
            ref = sum(w * Vv[j, n] for w, (j, n) in zip(weights, seen))
            np.testing.assert_allclose(y[b, t], ref, rtol=1e-12, atol=1e-14)


def test_a_window_of_at_least_T_is_no_window(setup):
    params, emb, ids, h = setup
    y_all, _ = molkv.forward(params, h, emb[ids])
    for window in (T, T + 4):
        np.testing.assert_array_equal(molkv.forward(params, h, emb[ids], window)[0], y_all)


def test_cache_keeps_one_TxT_tensor_and_peak_memory_stays_small():
    """Only P is cached; forward + backward never holds more than ~3 (B,T,T,N) tensors."""
    b, t, d, f, n, dk = 2, 128, 8, 4, 4, 4                               # (B,T,T,N) dominates
    rng = np.random.default_rng(0)
    params = molkv_params(rng, d, f, n, dk)
    h, e, dy = (rng.standard_normal((b, t, d)) for _ in range(3))
    one = b * t * t * n * 8                                              # bytes of one (B,T,T,N) float64
    tracemalloc.start()
    try:
        y, cache = molkv.forward(params, h, e)
        molkv.backward(dy, cache)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    arrays = [v for part in cache.values() if isinstance(part, dict) for v in part.values()]
    assert sum(np.size(a) == b * t * t * n for a in arrays) == 1
    assert peak < 4 * one, f"peak {peak / one:.2f} (B,T,T,N) tensors"


def test_float32_stays_float32(setup):
    params, emb, ids, h = setup
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    e32, h32 = emb[ids].astype(np.float32), h.astype(np.float32)
    y, cache = molkv.forward(p32, h32, e32, 3)
    dh, de, grads = molkv.backward(np.ones_like(y), cache)
    assert y.dtype == dh.dtype == de.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())
    lut_k, lut_v = molkv.build_lut(p32, emb.astype(np.float32))
    assert lut_k.dtype == lut_v.dtype == np.float32
    assert molkv.forward_lut(p32, h32, ids, lut_k, lut_v, 3).dtype == np.float32
    np.testing.assert_allclose(y, molkv.forward(params, h, emb[ids], 3)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("window", [None, 2])
def test_huge_scores_give_no_nan_or_inf(setup, window):
    params, emb, ids, h = setup
    e = emb[ids]
    lut_k, _ = molkv.build_lut(params, e.reshape(-1, D))                 # (B*T,N,Dk): every position's keys

    def scores(query):                                                   # (B,T,T,N), unmasked
        return np.einsum("btk,bjnk->btjn", h @ query / np.sqrt(Dk), lut_k.reshape(B, T, N, Dk))

    big = dict(params, query=params["query"] * (1e4 / np.abs(scores(params["query"])).max()))
    S = scores(big["query"])
    assert np.isclose(S.max(), 1e4) or np.isclose(S.min(), -1e4)        # the scores reach ±1e4
    assert S.max() > 1e3 and S.min() < -1e3
    y, cache = molkv.forward(big, h, e, window)
    dh, de, grads = molkv.backward(np.random.default_rng(0).standard_normal(y.shape), cache)
    for x in [y, dh, de, cache["attend"]["P"], *grads.values()]:
        assert np.all(np.isfinite(x))
    assert np.allclose(cache["attend"]["P"].sum(axis=(2, 3)), 1.0)


# ----------------------------------------------------------------------------
# lookup tables and decoding
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("window", [None, 1, 3])
def test_lut_forward_equals_train_forward(setup, window):
    params, emb, ids, h = setup
    lut_k, lut_v = molkv.build_lut(params, emb)
    assert lut_k.shape == (V, N, Dk) and lut_v.shape == (V, N, D)
    y_train, _ = molkv.forward(params, h, emb[ids], window)
    y_lut = molkv.forward_lut(params, h, ids, lut_k, lut_v, window)
    assert rel_error(y_train, y_lut) <= 1e-12


@pytest.mark.parametrize("window", [None, 1, 3])
def test_decoding_step_by_step_reproduces_forward_lut(setup, window):
    params, emb, ids, h = setup
    lut_k, lut_v = molkv.build_lut(params, emb)
    y_lut = molkv.forward_lut(params, h, ids, lut_k, lut_v, window)
    y_dec = decode_all(params, h, ids, lut_k, lut_v, window)
    assert rel_error(y_lut, y_dec) <= 1e-12


def test_mole_is_molkv_with_window_1_identity_query_and_router_keys(setup):
    params, emb, ids, h = setup
    mp = mole_params(np.random.default_rng(3), D, F, N)                  # a MoLE layer
    kp = dict(molkv_params(np.random.default_rng(4), D, F, N, D), query=np.eye(D))  # Dk = D
    lut_v = mole.build_lut(mp, emb)                                      # (V,N,D) MoLE's table
    keys = np.sqrt(D) * mp["router"].T                                   # (N,D) key n: sqrt(D) router[:, n]
    lut_k = np.broadcast_to(keys, (V, N, D)).copy()                     # (V,N,D) the same for every id
    y_mole = mole.forward_lut(mp, h, ids, lut_v)
    assert rel_error(y_mole, molkv.forward_lut(kp, h, ids, lut_k, lut_v, window=1)) <= 1e-12
    assert rel_error(y_mole, decode_all(kp, h, ids, lut_k, lut_v, window=1)) <= 1e-12


def test_tables_on_disk_decode_like_tables_in_memory(setup, tmp_path):
    params, emb, ids, h = setup
    lut_k, lut_v = molkv.build_lut(params, emb)
    lut.save_lut(tmp_path / "k.npy", lut_k)
    lut.save_lut(tmp_path / "v.npy", lut_v)
    disk_k = lut.open_lut(tmp_path / "k.npy", shape=(V, N, Dk), dtype=np.float64)
    disk_v = lut.open_lut(tmp_path / "v.npy", shape=(V, N, D), dtype=np.float64)
    assert isinstance(disk_k, np.memmap)
    for window in (None, 3):
        np.testing.assert_array_equal(decode_all(params, h, ids, disk_k, disk_v, window),
                                      decode_all(params, h, ids, lut_k, lut_v, window))
        np.testing.assert_array_equal(molkv.forward_lut(params, h, ids, disk_k, disk_v, window),
                                      molkv.forward_lut(params, h, ids, lut_k, lut_v, window))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bytes_read_per_token_are_N_times_Dk_plus_D(setup, dtype):
    params, emb, ids, h = setup
    params = {k: v.astype(dtype) for k, v in params.items()}
    h = h.astype(dtype)
    lut_k, lut_v = molkv.build_lut(params, emb.astype(dtype))
    table_k, table_v = lut.LookupTable(lut_k), lut.LookupTable(lut_v)
    per_token = N * (Dk + D) * np.dtype(dtype).itemsize
    assert table_k.bytes_per_token + table_v.bytes_per_token == per_token
    decode_all(params, h, ids, table_k, table_v, window=3)               # one lookup per token
    assert table_k.tokens_read == table_v.tokens_read == B * T
    assert (table_k.bytes_read + table_v.bytes_read) / (B * T) == per_token
    table_k.reset(), table_v.reset()
    molkv.forward_lut(params, h, ids, table_k, table_v)
    assert (table_k.bytes_read + table_v.bytes_read) == B * T * per_token


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------

def test_bad_window_is_refused_everywhere(setup):
    params, emb, ids, h = setup
    lut_k, lut_v = molkv.build_lut(params, emb)
    calls = [lambda w: molkv.forward(params, h, emb[ids], w),
             lambda w: molkv.forward_lut(params, h, ids, lut_k, lut_v, w),
             lambda w: molkv.decode_step(params, h[:, 0], ids[:, 0], lut_k, lut_v, None, w)]
    for call in calls:
        with pytest.raises(ValueError, match="window must be >= 1, got 0"):
            call(0)
        with pytest.raises(ValueError, match="window must be >= 1, got -2"):
            call(-2)
        for bad in (2.0, True, "3"):
            with pytest.raises(TypeError, match="window must be an integer >= 1 or None"):
                call(bad)


def test_bad_inputs_name_the_argument(setup):
    params, emb, ids, h = setup
    e = emb[ids]
    lut_k, lut_v = molkv.build_lut(params, emb)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="d_key must be >= 1, got 0"):
        molkv.init(rng, D, F, N, 0)
    with pytest.raises(TypeError, match="d_key must be an integer"):
        molkv.init(rng, D, F, N, 4.0)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        molkv.init(rng, D, F, N, Dk, dtype=np.int32)
    with pytest.raises(ValueError, match="h and e must have the same shape"):
        molkv.forward(params, h, e[:, :3])
    with pytest.raises(ValueError, match=r"e must have shape \(\*, \*, 6\)"):
        molkv.forward(params, h, e[..., :4])
    with pytest.raises(TypeError, match="e has dtype float32"):
        molkv.forward(params, h, e.astype(np.float32))
    with pytest.raises(ValueError, match=r"params\['down_k'\] must have shape \(3, 4, 4\)"):
        molkv.forward(dict(params, down_k=params["down_k"][:, :, :2]), h, e)
    with pytest.raises(ValueError, match=r"params\['norm'\] must have shape \(6\)"):
        molkv.forward(dict(params, norm=params["norm"][:4]), h, e)
    with pytest.raises(TypeError, match="params mixes dtypes"):
        molkv.forward(dict(params, query=params["query"].astype(np.float32)), h, e)
    with pytest.raises(ValueError, match=r"dy must have shape \(3, 7, 6\)"):
        molkv.backward(np.ones((B, T, Dk)), molkv.forward(params, h, e)[1])
    with pytest.raises(ValueError, match=r"ids holds token id 11, outside the vocabulary \[0, 11\)"):
        molkv.forward_lut(params, h, np.where(ids == 9, 11, ids), lut_k, lut_v)
    with pytest.raises(ValueError, match="ids must have shape"):
        molkv.forward_lut(params, h, ids[:, :3], lut_k, lut_v)
    with pytest.raises(ValueError, match=r"lut_v must have shape \(V, N=3, 6\)"):
        molkv.forward_lut(params, h, ids, lut_k, lut_v[:, :, :4])
    with pytest.raises(ValueError, match=r"lut_v must have shape .* same V as lut_k"):
        molkv.forward_lut(params, h, ids, lut_k, lut_v[:5])
    with pytest.raises(TypeError, match="lut_k has dtype float32"):
        molkv.forward_lut(params, h, ids, lut_k.astype(np.float32), lut_v)
    with pytest.raises(ValueError, match=r"emb must have shape \(\*, 6\)"):
        molkv.build_lut(params, emb[:, :4])


def test_bad_decoding_inputs_name_the_argument(setup):
    params, emb, ids, h = setup
    lut_k, lut_v = molkv.build_lut(params, emb)
    _, state = molkv.decode_step(params, h[:, 0], ids[:, 0], lut_k, lut_v, None, 3)
    with pytest.raises(ValueError, match=r"ids_t must have shape \(B,\) = \(3,\)"):
        molkv.decode_step(params, h[:, 1], ids[:2, 1], lut_k, lut_v, state, 3)
    with pytest.raises(ValueError, match="ids_t holds token id 11"):
        molkv.decode_step(params, h[:, 1], np.full(B, 11), lut_k, lut_v, state, 3)
    with pytest.raises(ValueError, match="state holds 3 sequences but h_t has 2"):
        molkv.decode_step(params, h[:2, 1], ids[:2, 1], lut_k, lut_v, state, 3)
    with pytest.raises(ValueError, match="state was built with window=3"):
        molkv.decode_step(params, h[:, 1], ids[:, 1], lut_k, lut_v, state, None)
    with pytest.raises(TypeError, match="state must be None or the dict returned by decode_step"):
        molkv.decode_step(params, h[:, 1], ids[:, 1], lut_k, lut_v, (state["k"], state["v"]), 3)
    with pytest.raises(ValueError, match="h_t must have shape"):
        molkv.decode_step(params, h[:, 1, :4], ids[:, 1], lut_k, lut_v, state, 3)
