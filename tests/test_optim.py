"""optim.py: AdamW against hand-computed numbers, the schedule, clipping, state round trip."""

import math

import numpy as np
import pytest

from minimolkv.optim import (adamw_init, adamw_step, clip_grad_norm, lr_schedule,
                             state_from_arrays, state_to_arrays)


def reference_adamw(p, grads_per_step, lr, beta1, beta2, eps, wd, decay):
    """AdamW element by element with Python floats, written from the paper's
    formulas independently of optim.py. p: list of floats; one grad list per step."""
    p = list(p)
    m = [0.0] * len(p)
    v = [0.0] * len(p)
    for t, g in enumerate(grads_per_step, start=1):
        for i in range(len(p)):
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] ** 2
            m_hat = m[i] / (1 - beta1 ** t)
            v_hat = v[i] / (1 - beta2 ** t)
            if decay:
                p[i] = p[i] - lr * wd * p[i]
            p[i] = p[i] - lr * m_hat / (math.sqrt(v_hat) + eps)
    return p


def test_one_step_by_hand():
    # w = 1, g = 0.5, lr = 0.1, wd = 0.1: at t = 1 m_hat = g and v_hat = g^2, so
    # w = 1 - 0.1*0.1*1 - 0.1 * 0.5 / (0.5 + 1e-8) = 1 - 0.01 - 0.1 = 0.89 (up to eps)
    params = {"w": np.array([[1.0, -2.0]]), "gain": np.array([1.0, -2.0])}
    grads = {"w": np.array([[0.5, 0.25]]), "gain": np.array([0.5, 0.25])}
    state = adamw_init(params)
    adamw_step(params, grads, state, lr=0.1, weight_decay=0.1)
    assert params["w"][0, 0] == pytest.approx(0.89, abs=1e-8)
    assert params["w"][0, 1] == pytest.approx(-2.0 + 0.02 - 0.1, abs=1e-8)   # decay pulls toward 0
    assert params["gain"][0] == pytest.approx(0.9, abs=1e-8)                 # no decay on a vector
    assert params["gain"][1] == pytest.approx(-2.1, abs=1e-8)
    assert state["t"] == 1


@pytest.mark.parametrize("steps", [1, 3])
def test_adamw_matches_reference_matrix_and_vector(steps):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 4))                       # matrix: decayed
    b0 = rng.standard_normal(5)                            # vector: not decayed
    gs_w = [rng.standard_normal((3, 4)) for _ in range(steps)]
    gs_b = [rng.standard_normal(5) for _ in range(steps)]
    hyper = dict(lr=0.05, beta1=0.8, beta2=0.9, eps=1e-6, weight_decay=0.3)
    params = {"w": w0.copy(), "b": b0.copy()}
    state = adamw_init(params)
    for gw, gb in zip(gs_w, gs_b):
        adamw_step(params, {"w": gw, "b": gb}, state, **hyper)
    args = (hyper["lr"], hyper["beta1"], hyper["beta2"], hyper["eps"], hyper["weight_decay"])
    want_w = reference_adamw(w0.ravel(), [g.ravel() for g in gs_w], *args, decay=True)
    want_b = reference_adamw(b0, gs_b, *args, decay=False)
    np.testing.assert_allclose(params["w"].ravel(), want_w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(params["b"], want_b, rtol=1e-12, atol=1e-12)


def test_zero_gradient_decays_only_matrices():
    params = {"m": np.full((2, 2), 2.0), "g": np.full(2, 2.0), "t": np.full((1, 2, 2), 2.0)}
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    state = adamw_init(params)
    adamw_step(params, grads, state, lr=0.5, weight_decay=0.1)
    np.testing.assert_array_equal(params["m"], 2.0 * (1 - 0.05))
    np.testing.assert_array_equal(params["t"], 2.0 * (1 - 0.05))
    np.testing.assert_array_equal(params["g"], 2.0)


def test_float32_stays_float32_in_place_and_nested():
    w = np.ones((2, 3), dtype=np.float32)
    params = {"layers.0": {"w": w}, "norm": np.ones(3, dtype=np.float32)}
    grads = {"layers.0": {"w": np.full((2, 3), 0.1, np.float32)}, "norm": np.full(3, 0.1, np.float32)}
    state = adamw_init(params)
    assert set(state["m"]) == {"layers.0.w", "norm"}
    adamw_step(params, grads, state, lr=1e-2)
    assert params["layers.0"]["w"] is w and w.dtype == np.float32
    assert params["norm"].dtype == np.float32
    assert all(a.dtype == np.float32 for a in list(state["m"].values()) + list(state["v"].values()))
    assert np.all(w < 1.0)


def test_adamw_bad_inputs():
    params = {"w": np.ones((2, 2))}
    state = adamw_init(params)
    with pytest.raises(ValueError, match="lacks \\['w'\\]"):
        adamw_step(params, {"x": np.ones((2, 2))}, state, lr=0.1)
    with pytest.raises(ValueError, match="grads\\['w'\\] has shape \\(2, 3\\)"):
        adamw_step(params, {"w": np.ones((2, 3))}, state, lr=0.1)
    with pytest.raises(ValueError, match="dtype float32"):
        adamw_step(params, {"w": np.ones((2, 2), np.float32)}, state, lr=0.1)
    with pytest.raises(ValueError, match="beta2"):
        adamw_step(params, {"w": np.ones((2, 2))}, state, lr=0.1, beta2=1.0)
    with pytest.raises(ValueError, match="lr"):
        adamw_step(params, {"w": np.ones((2, 2))}, state, lr=-1)
    with pytest.raises(TypeError, match="'w' must be a numpy array"):
        adamw_init({"w": [1.0, 2.0]})
    with pytest.raises(TypeError, match="float32 or float64"):
        adamw_init({"w": np.ones(2, dtype=np.int64)})
    assert state["t"] == 0                                 # failed calls changed nothing
    np.testing.assert_array_equal(params["w"], 1.0)


def test_schedule_values():
    lr, warm, total = 1.0, 10, 111                         # decay over steps 10..110: 100 intervals
    assert lr_schedule(0, total, lr, warm) == pytest.approx(0.1)          # warmup start: lr / warm
    assert lr_schedule(4, total, lr, warm) == pytest.approx(0.5)
    assert lr_schedule(warm - 1, total, lr, warm) == pytest.approx(1.0)   # warmup end
    assert lr_schedule(warm, total, lr, warm) == pytest.approx(1.0)       # cosine starts at lr
    assert lr_schedule(60, total, lr, warm) == pytest.approx(0.55)        # halfway: (lr + min_lr) / 2
    assert lr_schedule(35, total, lr, warm) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_schedule(total - 1, total, lr, warm) == pytest.approx(0.1)  # final step: min_lr
    assert lr_schedule(total + 50, total, lr, warm) == pytest.approx(0.1)
    assert lr_schedule(total - 1, total, 3e-3, warm, min_lr_ratio=0.0) == pytest.approx(0.0)
    decay = [lr_schedule(s, total, lr, warm) for s in range(warm, total)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert lr_schedule(0, 5, 2.0, 0) == pytest.approx(2.0)                # no warmup
    assert lr_schedule(4, 5, 2.0, 0) == pytest.approx(0.2)


def test_schedule_bad_inputs():
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_schedule(0, 10, 1.0, 10)
    with pytest.raises(ValueError, match="step"):
        lr_schedule(-1, 10, 1.0, 2)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        lr_schedule(0, 10, 1.0, 2, min_lr_ratio=2.0)
    with pytest.raises(ValueError, match="max_steps"):
        lr_schedule(0, 0, 1.0, 0)


def test_clip_grad_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": {"c": np.array([[0.0, 4.0]], dtype=np.float64)}}
    norm = clip_grad_norm(grads, 1.0)
    assert norm == pytest.approx(5.0)                      # global over all arrays
    np.testing.assert_allclose(grads["a"], [0.6, 0.0])
    np.testing.assert_allclose(grads["b"]["c"], [[0.0, 0.8]])
    assert math.sqrt(np.sum(grads["a"] ** 2) + np.sum(grads["b"]["c"] ** 2)) == pytest.approx(1.0)

    small = {"a": np.array([0.3, 0.4], dtype=np.float32)}
    assert clip_grad_norm(small, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(small["a"], np.array([0.3, 0.4], dtype=np.float32))

    big32 = {"a": np.full(4, 10.0, dtype=np.float32)}
    clip_grad_norm(big32, 2.0)
    assert big32["a"].dtype == np.float32
    assert float(np.linalg.norm(big32["a"].astype(np.float64))) == pytest.approx(2.0, rel=1e-6)

    bad = {"a": np.array([np.inf, 1.0])}
    assert clip_grad_norm(bad, 1.0) == math.inf
    assert bad["a"][1] == 1.0                              # left alone
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(grads, 0.0)


def test_state_round_trip_through_npz_is_bit_identical(tmp_path):
    rng = np.random.default_rng(1)
    params = {"w": rng.standard_normal((4, 3)).astype(np.float32),
              "g": rng.standard_normal(3).astype(np.float32)}
    grads_seq = [{k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
                 for _ in range(5)]
    state = adamw_init(params)
    for grads in grads_seq[:3]:
        adamw_step(params, grads, state, lr=1e-2)

    path = tmp_path / "ckpt.npz"
    np.savez(path, **{f"params.{k}": v for k, v in params.items()}, **state_to_arrays(state))
    with np.load(path, allow_pickle=False) as f:
        loaded = {k: f[k] for k in f.files}
    params2 = {k: loaded[f"params.{k}"] for k in params}
    state2 = state_from_arrays(loaded)                     # params.* keys are ignored
    assert state2["t"] == 3 and set(state2["m"]) == {"w", "g"}

    for grads in grads_seq[3:]:
        adamw_step(params, grads, state, lr=1e-2)
        adamw_step(params2, {k: v.copy() for k, v in grads.items()}, state2, lr=1e-2)
    for k in params:
        np.testing.assert_array_equal(params[k], params2[k])
        np.testing.assert_array_equal(state["m"][k], state2["m"][k])
        np.testing.assert_array_equal(state["v"][k], state2["v"][k])
        assert params2[k].dtype == np.float32 and state2["v"][k].dtype == np.float32
    assert state2["t"] == 5
    with pytest.raises(ValueError, match="adamw.t"):
        state_from_arrays({"params.w": np.ones(2)})
