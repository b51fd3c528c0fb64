"""NaN and inf stay where they are (docs/design.md, section 5, numerics).

A NaN or inf in an input reaches exactly the positions that see it, and no other:
masked scores are -inf whatever the product gave, a masked weight never multiplies
a NaN value, and a NaN loss comes back NaN. A NaN hunt then points at the right place.
"""

import numpy as np
import pytest

from minimolkv import ctxattn, model, molkv, ops

KINDS = [("dense", "recency"), ("moe", "recency"), ("mole", "recency"), ("ctxattn", "recency"),
         ("molkv", "joint"), ("molkv", "recency"), ("molkv", "gated")]


@pytest.mark.parametrize("kind,variant", KINDS)
def test_an_inf_embedding_stays_at_its_position(kind, variant):
    config = model.Config(kind=kind, variant=variant, vocab_size=16, context_len=8, d_model=8, n_heads=2,
                          d_ff=8, n_experts=2, d_expert=8, d_key=4, top_k=1)
    params = model.init(config, seed=1, dtype=np.float64)
    ids = np.array([[1, 2, 3, 4, 5, 9], [1, 2, 3, 4, 5, 6]])        # id 9 only at the last position of row 0
    clean, clean_logits, _ = model.forward(params, config, ids, ids)
    params["tok_emb"][9, 0] = np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        loss, logits, _ = model.forward(params, config, ids, ids)
    assert np.isnan(loss)                                           # NaN, not inf: the loss says what happened
    assert np.isnan(logits[0, -1]).all()                            # the position that holds the inf
    assert np.isfinite(logits[0, :-1]).all() and np.isfinite(logits[1]).all()   # nothing else
    # the careful path sums in another order: the same numbers to rounding
    np.testing.assert_allclose(logits[1], clean_logits[1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(logits[0, :-1], clean_logits[0, :-1], rtol=1e-12, atol=1e-14)
    assert np.isfinite(clean)


@pytest.mark.parametrize("block", ["molkv-joint", "molkv-recency", "molkv-gated", "ctxattn"])
def test_a_nan_reaches_only_the_positions_that_see_it(block):
    """With a window of 2 a NaN at position 3 reaches positions 3 and 4 only."""
    rng = np.random.default_rng(0)
    h, e = rng.standard_normal((2, 7, 8)), rng.standard_normal((2, 7, 8))
    if block == "ctxattn":
        params = ctxattn.init(rng, 8, 4)
        h[0, 3, 1] = np.nan
        forward = lambda: ctxattn.forward(params, h, window=2)[0]    # noqa: E731
    else:
        variant = block.split("-")[1]
        params = molkv.init(rng, 8, 8, 2, 4, variant=variant)
        if variant == "gated":
            params["gate"] = np.ones(1)                             # the context term on (0 at init)
        e[0, 3, 1] = np.nan
        forward = lambda: molkv.forward(params, h, e, window=2, variant=variant)[0]    # noqa: E731
    with np.errstate(invalid="ignore"):
        y = forward()
    seen = np.isnan(y[0]).any(axis=-1)                              # (T,) positions the NaN reached
    assert seen.tolist() == [False, False, False, True, True, False, False]
    assert np.isfinite(y[1]).all()


def test_the_careful_path_computes_the_plain_one():
    """ops.masked_attention (run only when the plain product came out non-finite) is the same
    math: on finite scores it gives the plain softmax and product."""
    rng = np.random.default_rng(0)
    offset, _ = ops.score_offset(5, 5, window=3, slopes=np.array([0.5, 0.25]))   # (5,5,2)
    offset = offset.reshape(5, 10)
    S = rng.standard_normal((2, 5, 10)) + offset
    v = rng.standard_normal((2, 10, 3))
    P, o = ops.masked_attention(S, np.isneginf(offset), v)
    plain, _ = ops.softmax_forward(S.copy())
    np.testing.assert_allclose(P, plain, rtol=1e-14, atol=0)
    np.testing.assert_allclose(o, plain @ v, rtol=1e-12, atol=1e-14)


def test_a_nan_logit_gives_a_nan_loss():
    logits = np.array([[0.0, 1.0, 2.0], [np.nan, 0.0, 0.0]])
    with np.errstate(invalid="ignore"):
        loss, _ = ops.cross_entropy_forward(logits, np.array([0, 1]))
    assert np.isnan(loss)
    masked, _ = ops.cross_entropy_forward(np.array([[-np.inf, -np.inf], [0.0, 0.0]]), np.array([0, 1]))
    assert masked == np.inf                                         # a fully masked row: log 0, as before
