"""mole.py: gradients, a naive reference, the lookup table, bad input."""

import numpy as np
import pytest

from minimolkv import mole
from minimolkv.gradcheck_layers import check_mole, mole_params
from minimolkv.gradcheck import LAYER_TOL, rel_error
from minimolkv.ops import gelu_forward

B, T, D, F, N, V = 2, 5, 6, 4, 3, 11


@pytest.fixture
def setup():
    rng = np.random.default_rng(7)
    params = mole_params(rng, D, F, N)
    emb = rng.standard_normal((V, D))
    ids = np.array([[1, 4, 1, 9, 1], [0, 10, 4, 4, 2]])              # repeated ids
    h = rng.standard_normal((B, T, D))
    return params, emb, ids, h


def test_gradients_of_every_parameter_and_both_inputs():
    for seed in (0, 1, 2):
        rows = check_mole(seed)
        assert {r.name for r in rows} == {"mole.h", "mole.e", "mole.norm", "mole.router",
                                          "mole.up", "mole.down"}
        for row in rows:
            assert row.error < LAYER_TOL, f"{row.name}: {row.error:.2e}"


def test_forward_matches_a_per_token_loop(setup):
    params, emb, ids, h = setup
    e = emb[ids]
    y, _ = mole.forward(params, h, e)
    for b in range(B):
        for t in range(T):
            logits = h[b, t] @ params["router"]
            s = np.exp(logits - logits.max()) / np.sum(np.exp(logits - logits.max()))
            e_hat = e[b, t] / np.sqrt(np.mean(e[b, t] ** 2) + 1e-5) * params["norm"]
            ref = np.zeros(D)
            for n in range(N):
                ref += s[n] * (gelu_forward(e_hat @ params["up"][n])[0] @ params["down"][n])
            np.testing.assert_allclose(y[b, t], ref, rtol=1e-12, atol=1e-14)


def test_lut_forward_equals_train_forward(setup):
    params, emb, ids, h = setup
    luts = mole.build_lut(params, emb)
    assert list(luts) == ["u"] and luts["u"].shape == (V, N, D)
    y_train, _ = mole.forward(params, h, emb[ids])
    y_lut = mole.forward_lut(params, h, ids, luts)
    assert rel_error(y_train, y_lut) <= 1e-12


def test_inference_needs_only_the_router(setup):
    """The table replaces norm, up and down: RAM holds the router alone."""
    params, emb, ids, h = setup
    luts = mole.build_lut(params, emb)
    y = mole.forward_lut({"router": params["router"]}, h, ids, luts)
    np.testing.assert_array_equal(y, mole.forward_lut(params, h, ids, luts))
    with pytest.raises(TypeError, match=r"luts\['u'\] has dtype float32"):
        mole.forward_lut(params, h, ids, {"u": luts["u"].astype(np.float32)})
    with pytest.raises(TypeError, match="emb has dtype float32"):
        mole.build_lut(params, emb.astype(np.float32))


def test_expert_output_depends_only_on_token_id(setup):
    """The same id at two positions gets the same expert outputs u, whatever h is."""
    params, emb, ids, h = setup
    _, cache = mole.forward(params, h, emb[ids])
    u = cache.u                                                        # (B,T,N,D)
    np.testing.assert_array_equal(u[0, 0], u[0, 2])                   # id 1 twice
    np.testing.assert_array_equal(u[1, 2], u[1, 3])                   # id 4 twice


def test_float32_parameters_compute_in_float32(setup):
    params, emb, ids, h = setup
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    y, _ = mole.forward(p32, h.astype(np.float32), emb[ids].astype(np.float32))
    assert y.dtype == np.float32


def test_bad_inputs_name_the_argument(setup):
    params, emb, ids, h = setup
    e = emb[ids]
    lut = mole.build_lut(params, emb)
    with pytest.raises(ValueError, match=r"ids holds token id 11, outside the vocabulary \[0, 11\)"):
        mole.forward_lut(params, h, np.where(ids == 9, 11, ids), lut)
    with pytest.raises(ValueError, match="ids holds token id -1"):
        mole.forward_lut(params, h, np.where(ids == 9, -1, ids), lut)
    with pytest.raises(TypeError, match="ids must hold integers"):
        mole.forward_lut(params, h, ids.astype(np.float64), lut)
    with pytest.raises(ValueError, match="ids must have shape"):
        mole.forward_lut(params, h, ids[:, :3], lut)
    with pytest.raises(ValueError, match="h and e must have the same shape"):
        mole.forward(params, h, e[:, :3])
    with pytest.raises(ValueError, match=r"e must have shape \(\*, \*, 6\)"):
        mole.forward(params, h, e[..., :4])
    with pytest.raises(ValueError, match=r"h must have shape \(\*, \*, 6\), got \(5, 6\)"):
        mole.forward(params, h[0], e)
    with pytest.raises(TypeError, match="h has dtype float32"):
        mole.forward(params, h.astype(np.float32), e)
    bad = dict(params, router=params["router"][:, :2])
    with pytest.raises(ValueError, match=r"params\['router'\] must have shape \(6, 3\)"):
        mole.forward(bad, h, e)
    with pytest.raises(ValueError, match=r"luts\['u'\] holds 2 experts but params\['router'\] routes to 3"):
        mole.forward_lut(params, h, ids, {"u": lut["u"][:, :2]})
    with pytest.raises(TypeError, match="luts must be the dict from build_lut"):
        mole.forward_lut(params, h, ids, lut["u"])
    with pytest.raises(TypeError, match="d_expert must be an integer"):
        mole.init(np.random.default_rng(0), 8, 2.5, 4)
    with pytest.raises(ValueError, match="n_experts must be >= 1"):
        mole.init(np.random.default_rng(0), 8, 4, 0)
