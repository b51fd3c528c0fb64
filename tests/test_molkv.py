"""molkv.py: gradients, a naive reference, lookup tables, decoding, MoLE as a special case,
the three variants, bad input."""

import tracemalloc

import numpy as np
import pytest

from minimolkv import lut, mole, molkv
from minimolkv.gradcheck_layers import check_molkv, mole_params, molkv_params
from minimolkv.gradcheck import LAYER_TOL, rel_error
from minimolkv.ops import gelu_forward

B, T, D, F, N, Dk, V = 3, 7, 6, 4, 3, 4, 11
WINDOWS = [None, 1, 3, T, T + 4]
VARIANTS = molkv.VARIANTS


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


def with_variant(params, variant, seed=11):
    """The fixture's parameters plus the variant's own (non-trivial) ones."""
    extra = molkv_params(np.random.default_rng(seed), D, F, N, Dk, variant)
    return {**params, **{k: v for k, v in extra.items() if k not in params}}


def decode_all(params, h, ids, luts, window, variant="joint"):
    """Step decode_step through the sequence; stack the outputs -> (B,T,D)."""
    state, ys = None, []
    for t in range(h.shape[1]):
        y_t, state = molkv.decode_step(params, h[:, t], ids[:, t], luts, state, window=window, variant=variant)
        kept = t + 1 if window is None else min(t + 1, window)
        assert state.k.shape[1] == kept and state.v.shape[1] == kept
        ys.append(y_t)
    return np.stack(ys, axis=1)


def softplus(x):
    return np.log1p(np.exp(x))


def reference(params, h, e, window, variant):
    """One position at a time, from the math in molkv.py's docstring."""
    y = np.zeros_like(h)
    for b in range(h.shape[0]):
        k, v = {}, {}                                                    # (j, n) -> key (Dk,), value (D,)
        for j in range(h.shape[1]):
            e_hat = e[b, j] / np.sqrt(np.mean(e[b, j] ** 2) + 1e-5) * params["norm"]
            for n in range(N):
                a = gelu_forward(e_hat @ params["up"][n])[0]
                k[j, n] = a @ params["down_k"][n]
                v[j, n] = a @ params["down_v"][n]
        for t in range(h.shape[1]):
            q = h[b, t] @ params["query"]
            own = variant != "gated"                                     # gated: earlier tokens only
            seen = [(j, n) for j in range(h.shape[1]) for n in range(N)
                    if (j <= t if own else j < t) and (window is None or j > t - window)]
            scores = np.array([q @ k[j, n] / np.sqrt(Dk) for j, n in seen])
            if variant == "recency":
                scores -= np.array([softplus(params["recency"][n]) * (t - j) for j, n in seen])
            weights = np.exp(scores - scores.max()) / np.sum(np.exp(scores - scores.max())) if seen else []
            y[b, t] = sum((w * v[j, n] for w, (j, n) in zip(weights, seen)), np.zeros(D))
            if variant == "gated":
                logits = h[b, t] @ params["router"]
                s = np.exp(logits - logits.max()) / np.sum(np.exp(logits - logits.max()))
                y[b, t] = sum(s[n] * v[t, n] for n in range(N)) + np.tanh(params["gate"][0]) * y[b, t]
    return y


# ----------------------------------------------------------------------------
# gradients and the forward math
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("window", [None, 1, 3, 5, 9])              # the check has T = 5
def test_gradients_of_every_parameter_and_both_inputs(window, variant):
    rows = check_molkv(0, window, variant)
    extra = {"joint": set(), "recency": {"molkv.recency"}, "gated": {"molkv.router", "molkv.gate"}}[variant]
    assert {r.name for r in rows} == {"molkv.h", "molkv.e", "molkv.norm", "molkv.query",
                                      "molkv.up", "molkv.down_k", "molkv.down_v"} | extra
    for row in rows:
        assert row.error < LAYER_TOL, f"window={window} {variant} {row.name}: {row.error:.2e}"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("window", WINDOWS)
def test_forward_matches_a_per_position_loop(setup, window, variant):
    params, emb, ids, h = setup
    params = with_variant(params, variant)
    y, _ = molkv.forward(params, h, emb[ids], window=window, variant=variant)
    np.testing.assert_allclose(y, reference(params, h, emb[ids], window, variant), rtol=1e-12, atol=1e-14)


def test_a_window_of_at_least_T_is_no_window(setup):
    params, emb, ids, h = setup
    y_all, _ = molkv.forward(params, h, emb[ids])
    for window in (T, T + 4):
        np.testing.assert_array_equal(molkv.forward(params, h, emb[ids], window=window)[0], y_all)


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
    arrays = [getattr(part, f) for part in cache if isinstance(part, tuple) and hasattr(part, "_fields")
              for f in part._fields]
    assert sum(np.size(a) == b * t * t * n for a in arrays if isinstance(a, np.ndarray)) == 1
    assert peak < 4 * one, f"peak {peak / one:.2f} (B,T,T,N) tensors"


def test_float32_stays_float32(setup):
    params, emb, ids, h = setup
    for variant in VARIANTS:
        p64 = with_variant(params, variant)
        p32 = {k: v.astype(np.float32) for k, v in p64.items()}
        e32, h32 = emb[ids].astype(np.float32), h.astype(np.float32)
        y, cache = molkv.forward(p32, h32, e32, window=3, variant=variant)
        dh, de, grads = molkv.backward(np.ones_like(y), cache)
        assert y.dtype == dh.dtype == de.dtype == np.float32
        assert all(g.dtype == np.float32 for g in grads.values())
        luts = molkv.build_lut(p32, emb.astype(np.float32))
        assert luts["k"].dtype == luts["v"].dtype == np.float32
        assert molkv.forward_lut(p32, h32, ids, luts, window=3, variant=variant).dtype == np.float32
        assert decode_all(p32, h32, ids, luts, 3, variant).dtype == np.float32
        np.testing.assert_allclose(y, molkv.forward(p64, h, emb[ids], window=3, variant=variant)[0],
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("window", [None, 2])
def test_huge_scores_give_no_nan_or_inf(setup, window):
    params, emb, ids, h = setup
    e = emb[ids]
    k = molkv.build_lut(params, e.reshape(-1, D))["k"]                  # (B*T,N,Dk): every position's keys

    def scores(query):                                                   # (B,T,T,N), unmasked
        return np.einsum("btk,bjnk->btjn", h @ query / np.sqrt(Dk), k.reshape(B, T, N, Dk))

    big = dict(params, query=params["query"] * (1e4 / np.abs(scores(params["query"])).max()))
    S = scores(big["query"])
    assert S.max() > 1e3 and S.min() < -1e3                              # the scores reach about ±1e4
    y, cache = molkv.forward(big, h, e, window=window)
    dh, de, grads = molkv.backward(np.random.default_rng(0).standard_normal(y.shape), cache)
    for x in [y, dh, de, cache.attend.P, *grads.values()]:
        assert np.all(np.isfinite(x))
    assert np.allclose(cache.attend.P.sum(axis=(2, 3)), 1.0)


# ----------------------------------------------------------------------------
# lookup tables and decoding
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("window", [None, 1, 3])
def test_lut_forward_and_decoding_equal_train_forward(setup, window, variant):
    params, emb, ids, h = setup
    params = with_variant(params, variant)
    luts = molkv.build_lut(params, emb)
    assert luts["k"].shape == (V, N, Dk) and luts["v"].shape == (V, N, D)
    y_train, _ = molkv.forward(params, h, emb[ids], window=window, variant=variant)
    y_lut = molkv.forward_lut(params, h, ids, luts, window=window, variant=variant)
    assert rel_error(y_train, y_lut) <= 1e-12
    assert rel_error(y_lut, decode_all(params, h, ids, luts, window, variant)) <= 1e-12


def test_inference_needs_only_the_query_and_the_variants_small_parameters(setup):
    params, emb, ids, h = setup
    for variant, keep in (("joint", ["query"]), ("recency", ["query", "recency"]),
                          ("gated", ["query", "router", "gate"])):
        full = with_variant(params, variant)
        luts = molkv.build_lut(full, emb)
        small = {k: full[k] for k in keep}
        np.testing.assert_array_equal(molkv.forward_lut(small, h, ids, luts, variant=variant),
                                      molkv.forward_lut(full, h, ids, luts, variant=variant))


def test_mole_is_molkv_with_window_1_identity_query_and_router_keys(setup):
    params, emb, ids, h = setup
    mp = mole_params(np.random.default_rng(3), D, F, N)                  # a MoLE layer
    kp = dict(molkv_params(np.random.default_rng(4), D, F, N, D), query=np.eye(D))  # Dk = D
    u = mole.build_lut(mp, emb)["u"]                                     # (V,N,D) MoLE's table
    keys = np.sqrt(D) * mp["router"].T                                   # (N,D) key n: sqrt(D) router[:, n]
    luts = {"k": np.broadcast_to(keys, (V, N, D)).copy(), "v": u}        # the same keys for every id
    y_mole = mole.forward_lut(mp, h, ids, {"u": u})
    assert rel_error(y_mole, molkv.forward_lut(kp, h, ids, luts, window=1)) <= 1e-12
    assert rel_error(y_mole, decode_all(kp, h, ids, luts, window=1)) <= 1e-12


def test_gated_with_gate_0_is_exactly_mole(setup):
    """variant="gated" at its init (gate 0) is MoLE: the router over the current token's
    values, whose table is MoLE's u; the context term is multiplied by tanh(0) = 0."""
    params, emb, ids, h = setup
    gp = dict(with_variant(params, "gated"), gate=np.zeros(1))
    mp = {"norm": gp["norm"], "router": gp["router"], "up": gp["up"], "down": gp["down_v"]}
    y_mole, _ = mole.forward(mp, h, emb[ids])
    y_gated, _ = molkv.forward(gp, h, emb[ids], variant="gated")
    np.testing.assert_array_equal(y_gated, y_mole)


def test_recency_penalty_orders_the_weights_by_distance(setup):
    """With equal scores (a zero query) the weights fall off as exp(-m (t - j)) per expert."""
    params, emb, ids, h = setup
    p = dict(with_variant(params, "recency"), query=np.zeros((D, Dk)))
    _, cache = molkv.forward(p, h, emb[ids], variant="recency")
    P = cache.attend.P[0, T - 1]                                         # (T,N) the last query's row
    m = softplus(p["recency"])                                           # (N,)
    expected = np.exp(-m[None, :] * (T - 1 - np.arange(T))[:, None])     # (T,N) unnormalised
    np.testing.assert_allclose(P, expected / expected.sum(), rtol=1e-12)


def test_tables_on_disk_decode_like_tables_in_memory(setup, tmp_path):
    params, emb, ids, h = setup
    luts = molkv.build_lut(params, emb)
    lut.save_lut(tmp_path / "k.npy", luts["k"])
    lut.save_lut(tmp_path / "v.npy", luts["v"])
    disk = {"k": lut.open_lut(tmp_path / "k.npy", shape=(V, N, Dk), dtype=np.float64),
            "v": lut.open_lut(tmp_path / "v.npy", shape=(V, N, D), dtype=np.float64)}
    assert isinstance(disk["k"], np.memmap)
    for window in (None, 3):
        np.testing.assert_array_equal(decode_all(params, h, ids, disk, window),
                                      decode_all(params, h, ids, luts, window))
        np.testing.assert_array_equal(molkv.forward_lut(params, h, ids, disk, window=window),
                                      molkv.forward_lut(params, h, ids, luts, window=window))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bytes_read_per_token_are_N_times_Dk_plus_D(setup, dtype):
    params, emb, ids, h = setup
    params = {k: v.astype(dtype) for k, v in params.items()}
    h = h.astype(dtype)
    luts = molkv.build_lut(params, emb.astype(dtype))
    tables = {name: lut.LookupTable(t) for name, t in luts.items()}
    per_token = N * (Dk + D) * np.dtype(dtype).itemsize
    assert tables["k"].bytes_per_token + tables["v"].bytes_per_token == per_token
    decode_all(params, h, ids, tables, window=3)                         # one lookup per token
    assert tables["k"].tokens_read == tables["v"].tokens_read == B * T
    assert (tables["k"].bytes_read + tables["v"].bytes_read) / (B * T) == per_token
    for t in tables.values():
        t.reset()
    molkv.forward_lut(params, h, ids, tables)
    assert (tables["k"].bytes_read + tables["v"].bytes_read) == B * T * per_token


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------

def test_bad_window_and_variant_are_refused_everywhere(setup):
    params, emb, ids, h = setup
    luts = molkv.build_lut(params, emb)
    calls = [lambda **o: molkv.forward(params, h, emb[ids], **o),
             lambda **o: molkv.forward_lut(params, h, ids, luts, **o),
             lambda **o: molkv.decode_step(params, h[:, 0], ids[:, 0], luts, None, **o)]
    for call in calls:
        with pytest.raises(ValueError, match="window must be >= 1, got 0"):
            call(window=0)
        with pytest.raises(ValueError, match="window must be >= 1, got -2"):
            call(window=-2)
        for bad in (2.0, True, "3"):
            with pytest.raises(TypeError, match="window must be an integer >= 1 or None"):
                call(window=bad)
        with pytest.raises(ValueError, match="variant must be one of"):
            call(variant="alibi")
        with pytest.raises(ValueError, match=r"params is missing \['recency'\]"):
            call(variant="recency")
    with pytest.raises(TypeError, match="takes 3 positional arguments"):
        molkv.forward(params, h, emb[ids], 3)                            # options are keyword-only


def test_bad_inputs_name_the_argument(setup):
    params, emb, ids, h = setup
    e = emb[ids]
    luts = molkv.build_lut(params, emb)
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
        molkv.forward_lut(params, h, np.where(ids == 9, 11, ids), luts)
    with pytest.raises(ValueError, match="ids must have shape"):
        molkv.forward_lut(params, h, ids[:, :3], luts)
    with pytest.raises(ValueError, match=r"luts\['v'\] must have shape \(V, N, 6\)"):
        molkv.forward_lut(params, h, ids, dict(luts, v=luts["v"][:, :, :4]))
    with pytest.raises(ValueError, match=r"luts\['v'\] must have shape .* the V and N of luts\['k'\]"):
        molkv.forward_lut(params, h, ids, dict(luts, v=luts["v"][:5]))
    with pytest.raises(TypeError, match=r"luts\['k'\] has dtype float32"):
        molkv.forward_lut(params, h, ids, dict(luts, k=luts["k"].astype(np.float32)))
    with pytest.raises(TypeError, match="luts must be the dict from build_lut"):
        molkv.forward_lut(params, h, ids, (luts["k"], luts["v"]))
    with pytest.raises(ValueError, match=r"emb must have shape \(\*, 6\)"):
        molkv.build_lut(params, emb[:, :4])


def test_bad_decoding_inputs_name_the_argument(setup):
    params, emb, ids, h = setup
    luts = molkv.build_lut(params, emb)
    _, state = molkv.decode_step(params, h[:, 0], ids[:, 0], luts, None, window=3)
    with pytest.raises(ValueError, match=r"ids_t must have shape \(3,\)"):
        molkv.decode_step(params, h[:, 1], ids[:2, 1], luts, state, window=3)
    with pytest.raises(ValueError, match="ids_t holds token id 11"):
        molkv.decode_step(params, h[:, 1], np.full(B, 11), luts, state, window=3)
    with pytest.raises(ValueError, match="state holds 3 sequences but h_t has 2"):
        molkv.decode_step(params, h[:2, 1], ids[:2, 1], luts, state, window=3)
    with pytest.raises(ValueError, match="state was built with window=3"):
        molkv.decode_step(params, h[:, 1], ids[:, 1], luts, state, window=None)
    with pytest.raises(TypeError, match="state must be None or the DecodeState returned by decode_step"):
        molkv.decode_step(params, h[:, 1], ids[:, 1], luts, (state.k, state.v), window=3)
    with pytest.raises(ValueError, match="h_t must have shape"):
        molkv.decode_step(params, h[:, 1, :4], ids[:, 1], luts, state, window=3)
