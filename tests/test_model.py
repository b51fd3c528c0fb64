"""model.py + generate.py + params.py: the tiny LM of every kind through one code path."""

import dataclasses

import numpy as np
import pytest

from minimolkv import model
from minimolkv.gradcheck_layers import check_model, model_setup
from minimolkv.generate import generate
from minimolkv.gradcheck import MODEL_TOL, rel_error
from minimolkv.params import count_params

KINDS = model.KINDS                                         # dense, moe, mole, molkv, ctxattn
VARIANTS = [("molkv", "recency"), ("molkv", "gated")]          # MoLKV's other formulations


@pytest.mark.parametrize("kind", KINDS)
def test_whole_model_gradient(kind):
    rows = check_model(kind, seed=0)
    names = {r.name for r in rows}
    assert "tok_emb" in names and "lm_head" in names
    if kind != "dense":
        assert any(f".{kind}." in n for n in names)
    for row in rows:
        assert row.error < MODEL_TOL, f"{row.name}: {row.error:.2e}"


@pytest.mark.parametrize("kind, sizes", [("moe", {"d_ff": 0}), ("molkv", {"window": None}),
                                         ("mole", {"n_layers": 1}), ("molkv", {"variant": "recency"}),
                                         ("molkv", {"variant": "gated", "window": None}),
                                         ("ctxattn", {"window": 2})])
def test_whole_model_gradient_in_other_shapes(kind, sizes):
    """compare's MoE has no dense FFN; MoLKV without a window attends over everything."""
    for row in check_model(kind, seed=1, **sizes):
        assert row.error < MODEL_TOL, f"{row.name}: {row.error:.2e}"


@pytest.mark.parametrize("kind", KINDS)
def test_fresh_model_loss_is_about_ln_v(kind):
    config = model.Config(kind=kind)
    params = model.init(config, seed=0)
    ids = np.random.default_rng(0).integers(0, config.vocab_size, size=(4, 32))
    loss, logits, _ = model.forward(params, config, ids, ids)
    assert logits.shape == (4, 32, config.vocab_size) and logits.dtype == np.float32
    assert abs(loss - np.log(config.vocab_size)) < 0.1


@pytest.mark.parametrize("kind", ("mole", "molkv"))
def test_lut_mode_logits_equal_train_mode(kind):
    config, params, ids, _ = model_setup(kind)
    _, train_logits, _ = model.forward(params, config, ids)
    luts = model.build_luts(params, config)
    _, lut_logits, cache = model.forward(params, config, ids, luts=luts)
    assert cache is None                                   # inference mode: nothing kept for backward
    assert rel_error(train_logits, lut_logits) <= 1e-10


def greedy_by_full_reforward(params, config, prompt, n):
    ids = prompt.copy()
    for _ in range(n):
        _, logits, _ = model.forward(params, config, ids)
        ids = np.concatenate([ids, np.argmax(logits[:, -1], axis=-1)[:, None]], axis=1)
    return ids


@pytest.mark.parametrize("kind, variant", [(k, "joint") for k in KINDS] + VARIANTS)
def test_greedy_generate_equals_full_reforwards(kind, variant):
    config, params, _, _ = model_setup(kind, variant=variant)
    prompt = np.array([[1, 5, 1], [0, 10, 4]])
    fast = generate(params, config, prompt, n_tokens=5, temperature=0)
    slow = greedy_by_full_reforward(params, config, prompt, 5)
    np.testing.assert_array_equal(fast, slow)


def test_a_temperature_so_small_it_overflows_picks_the_argmax():
    import warnings

    from minimolkv.generate import sample
    logits = np.array([[0.5, 3.0, -1.0, 2.0], [-2.0, -1.0, -3.0, -0.5]])
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # and no overflow warning
        np.testing.assert_array_equal(sample(logits, 1e-320, None, rng), [1, 3])
        np.testing.assert_array_equal(sample(logits, 1e-300, 2, rng), [1, 3])


def test_generate_calls_on_token_with_every_new_token():
    config, params, _, _ = model_setup("mole")
    seen = []
    out = generate(params, config, np.array([1, 2]), 40, temperature=0.7, seed=1, on_token=seen.append)
    assert np.array_equal(np.concatenate(seen), out[2:])   # past the context: it slides, still streams


def test_seeded_sampling_is_reproducible_and_one_dim_prompts_work():
    config, params, _, _ = model_setup("molkv")
    a = generate(params, config, np.array([1, 2]), 6, temperature=1.0, top_k=5, seed=3)
    b = generate(params, config, np.array([1, 2]), 6, temperature=1.0, top_k=5, seed=3)
    assert a.shape == (8,) and np.array_equal(a, b)
    assert np.all((a >= 0) & (a < config.vocab_size))


def greedy_sliding_reference(params, config, prompt, n):
    """The sliding rule by full re-forwards: the model sees ids[:, start:], at most
    context_len tokens; when one more would not fit, start jumps so that the
    last context_len // 2 tokens are kept."""
    C = config.context_len
    ids, start = prompt.copy(), max(0, prompt.shape[1] - C)
    for _ in range(n):
        _, logits, _ = model.forward(params, config, ids[:, start:])
        ids = np.concatenate([ids, np.argmax(logits[:, -1], axis=-1)[:, None]], axis=1)
        if ids.shape[1] - start > C:
            start = ids.shape[1] - C // 2
    return ids


@pytest.mark.parametrize("kind", ("dense", "molkv"))
@pytest.mark.parametrize("prompt_len", (3, 10))           # shorter and longer than context_len 8
def test_generation_past_the_context_slides(kind, prompt_len):
    config, params, _, _ = model_setup(kind)
    prompt = np.arange(prompt_len)[None] % config.vocab_size
    out = generate(params, config, prompt, n_tokens=20, temperature=0)
    assert out.shape == (1, prompt_len + 20)
    np.testing.assert_array_equal(out, greedy_sliding_reference(params, config, prompt, 20))


def test_param_shapes_are_the_shapes_init_makes():
    """param_shapes computes them without allocating; it must never drift from init."""
    for kind in KINDS:
        for variant in ("joint", "recency", "gated") if kind == "molkv" else ("joint",):
            for d_ff in (0, 24):
                config = model.Config(kind=kind, variant=variant, d_ff=d_ff, vocab_size=50, d_model=16,
                                      n_heads=2, d_expert=8, d_key=4, n_layers=2)
                params = model.init(config, seed=0)
                assert model.param_shapes(config) == {k: v.shape for k, v in params.items()}
                assert model.lut_shapes(config) == {k: v.shape for k, v in model.build_luts(params, config).items()}


def test_count_params_follows_the_formulas():
    c = model.Config(kind="molkv", vocab_size=100, d_model=16, n_layers=3, n_heads=2,
                     d_ff=32, n_experts=4, d_expert=8, d_key=4)
    n = count_params(c)
    assert n["lut"] == 3 * 100 * 4 * (4 + 16) and n["loaded"] == 3 * 4 * (4 + 16)
    dense = count_params(dataclasses.replace(c, kind="dense"))
    assert n["ram"] == dense["ram"] + 3 * 16 * 4 + 3 * 4      # the query and recency's N slopes stay in RAM
    joint = count_params(dataclasses.replace(c, variant="joint"))
    assert joint["ram"] == dense["ram"] + 3 * 16 * 4          # joint: only the query
    mole = count_params(dataclasses.replace(c, kind="mole"))
    assert mole["ram"] == dense["ram"] + 3 * 16 * 4           # only the router stays in RAM
    moe = count_params(dataclasses.replace(c, kind="moe", top_k=2))
    assert moe["activated"] == dense["activated"] + 3 * (16 * 4 + 2 * 2 * 16 * 8)


def test_bad_inputs_name_the_problem():
    config, params, ids, targets = model_setup("molkv")
    with pytest.raises(ValueError, match="longer than context_len=8"):
        model.forward(params, config, np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match=r"ids holds token id 11, outside the vocabulary \[0, 11\)"):
        model.forward(params, config, ids + 10)
    with pytest.raises(TypeError, match="ids must hold integers"):
        model.forward(params, config, ids.astype(float))
    with pytest.raises(ValueError, match="kind must be one of"):
        model.Config(kind="moa")
    with pytest.raises(ValueError, match="n_heads=3 must divide d_model=64"):
        model.Config(n_heads=3)
    with pytest.raises(ValueError, match="top_k=5 must be <= n_experts=4"):
        model.Config(top_k=5)
    with pytest.raises(ValueError, match="targets must have the shape"):
        model.forward(params, config, ids, targets[:, :2])
    other = dataclasses.replace(config, d_key=5)
    with pytest.raises(ValueError, match="luts were built for another config"):
        model.forward(params, config, ids, luts=model.build_luts(model.init(other, 0, np.float64), other))
    with pytest.raises(ValueError, match="params do not fit this config"):
        model.forward(params, dataclasses.replace(config, kind="mole"), ids)
    with pytest.raises(ValueError, match="n_tokens must be an integer"):
        generate(params, config, np.array([1]), -1)
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        generate(params, config, np.array([1]), 3, temperature=float("nan"))
    with pytest.raises(ValueError, match="params do not fit this config"):
        generate({k: v for k, v in params.items() if k != "ln_f"}, config, np.array([1]), 3)
    with pytest.raises(TypeError, match="mixes dtypes"):
        model.forward(dict(params, ln_f=params["ln_f"].astype(np.float32)), config, ids)
    with pytest.raises(TypeError, match="ModelCache of a training-mode model.forward"):
        model.backward(model.forward(params, config, ids, targets, luts=model.build_luts(params, config))[2])


@pytest.mark.parametrize("kind", KINDS)
def test_every_residual_write_starts_at_the_same_scale(kind):
    """A fair comparison starts every kind alike: 0.02/sqrt(2L) for each matrix
    that adds into the residual stream, 0.02 for every other matrix."""
    config = model.Config(kind=kind, d_model=128, d_ff=256, d_expert=128, n_layers=3)
    params = model.init(config, seed=0, dtype=np.float64)
    for name, value in params.items():
        if value.ndim < 2 or name in ("tok_emb", "pos_emb", "lm_head"):
            continue
        _, _, block, param = name.split(".")                    # layers.l.<block>.<param>
        writer = param == ("proj" if block == "attn" else model.BLOCKS[block].residual)
        expected = 0.02 / np.sqrt(2 * 3) if writer else 0.02
        assert abs(value.std() / expected - 1) < 0.1, f"{name}: std {value.std():.4f}, expected {expected:.4f}"
