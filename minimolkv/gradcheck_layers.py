"""The gradient check of every layer (gradcheck.py has the method): float64 set-ups with non-trivial values.

Each `check_<layer>(seed)` builds small random inputs and parameters (no
zeros, norm gains != 1), runs the layer's backward against centred
differences (see gradcheck.py) and returns one Row per tensor. The tests and
`python -m minimolkv gradcheck` both call these, so what an instructor sees
in the report is exactly what the tests assert.
"""

import numpy as np

from minimolkv import attention, ctxattn, model, moe, mole, molkv, ops
from minimolkv.gradcheck import MODEL_TOL, check_block, check_pair, compare


def gains(rng, n):
    """Norm gains away from 1 (and from 0), so a missing `* w` shows up."""
    return rng.uniform(0.5, 1.5, size=n)


def check_ops(seed=0):
    """Every primitive of ops.py: linear, embedding, rmsnorm, gelu, softmax, cross_entropy."""
    rng = np.random.default_rng(seed)
    B, T, D, F, V = 2, 3, 5, 4, 7
    rows = []
    rows += check_pair(ops.linear_forward, ops.linear_backward,
                       {"x": rng.standard_normal((B, T, D)), "w": rng.standard_normal((D, F))},
                       seed, prefix="linear.")
    ids = np.array([[1, 4, 1], [6, 1, 0]])                 # id 1 repeats: gradients must add up
    rows += check_pair(lambda table: ops.embedding_forward(ids, table), ops.embedding_backward,
                       {"table": rng.standard_normal((V, D))}, seed, prefix="embedding.")
    rows += check_pair(ops.rmsnorm_forward, ops.rmsnorm_backward,
                       {"x": rng.standard_normal((B, T, D)), "w": gains(rng, D)},
                       seed, prefix="rmsnorm.")
    rows += check_pair(ops.gelu_forward, ops.gelu_backward,
                       {"x": 2 * rng.standard_normal((B, T, D))}, seed, prefix="gelu.")
    rows += check_pair(ops.softmax_forward, ops.softmax_backward,
                       {"x": 2 * rng.standard_normal((B, T, D))}, seed, prefix="softmax.")
    targets = rng.integers(0, V, size=(B, T))
    rows += check_pair(lambda logits: ops.cross_entropy_forward(logits, targets),
                       ops.cross_entropy_backward,
                       {"logits": rng.standard_normal((B, T, V))}, seed, prefix="cross_entropy.")
    return rows


def mole_params(rng, D, F, N):
    """Non-trivial MoLE parameters (random gains, matrices of order 1/sqrt(fan-in))."""
    return {
        "norm": gains(rng, D),                                          # (D,)
        "router": rng.standard_normal((D, N)),                          # (D,N)
        "up": rng.standard_normal((N, D, F)) / np.sqrt(D),              # (N,D,F)
        "down": rng.standard_normal((N, F, D)) / np.sqrt(F),            # (N,F,D)
    }


def check_mole(seed=0):
    """The MoLE block: both inputs (h, e) and every parameter."""
    rng = np.random.default_rng(seed)
    B, T, D, F, N = 2, 4, 6, 5, 3
    params = mole_params(rng, D, F, N)
    emb = rng.standard_normal((9, D))
    ids = np.array([[3, 1, 3, 7], [0, 1, 8, 1]])                    # repeated ids
    inputs = {"h": rng.standard_normal((B, T, D)), "e": emb[ids]}
    return check_block(mole.forward, mole.backward, params, inputs, seed, prefix="mole.")


def check_attention(seed=0):
    """Causal multi-head self-attention: the input x and both projections."""
    rng = np.random.default_rng(seed)
    B, T, D, H = 2, 4, 8, 2
    params = {
        "qkv": rng.standard_normal((D, 3 * D)) / np.sqrt(D),          # (D,3D) scores of order 1
        "proj": rng.standard_normal((D, D)) / np.sqrt(D),             # (D,D)
    }
    inputs = {"x": rng.standard_normal((B, T, D))}
    return check_block(attention.forward, attention.backward, params, inputs, seed,
                       prefix="attention.", n_heads=H)


def check_moe(seed=0, min_gap=1e-3):
    """The top-k MoE block: h and every parameter, with a selection far from ties.

    The top-k selection has no gradient and the output jumps where it changes,
    so the inputs are redrawn until every token's k-th and (k+1)-th router
    probabilities differ by at least `min_gap` (a step h = 1e-5 moves them by
    ~1e-5), and every forward of the check asserts the selection is unchanged.
    """
    rng = np.random.default_rng(seed)
    B, T, D, F, N, k = 2, 3, 6, 5, 4, 2
    for _ in range(100):
        params = {
            "router": 2 * rng.standard_normal((D, N)) / np.sqrt(D),   # (D,N) spread-out probabilities
            "up": rng.standard_normal((N, D, F)) / np.sqrt(D),        # (N,D,F)
            "down": rng.standard_normal((N, F, D)) / np.sqrt(F),      # (N,F,D)
        }
        inputs = {"h": rng.standard_normal((B, T, D))}
        _, cache = moe.forward(params, inputs["h"], top_k=k)
        if moe.selection_margin(cache.p, k) >= min_gap:
            break
    else:
        raise RuntimeError(f"no draw with a top-k gap >= {min_gap} in 100 tries (seed {seed})")
    selected = cache.keep

    def forward_same_selection(params, h, top_k):
        y, c = moe.forward(params, h, top_k=top_k)
        if not np.array_equal(c.keep, selected):
            raise AssertionError("the top-k selection changed under a gradient-check step")
        return y, c

    return check_block(forward_same_selection, moe.backward, params, inputs, seed,
                       prefix="moe.", top_k=k)


def model_setup(kind, seed=0, **sizes):
    """A tiny float64 model of `kind` with non-trivial parameters, a batch and targets.
    `sizes` override the Config (e.g. d_ff=0: the MoE baseline without a dense FFN)."""
    rng = np.random.default_rng(seed)
    config = model.Config(**{**dict(vocab_size=11, context_len=8, d_model=8, n_layers=2, n_heads=2,
                                    d_ff=12, kind=kind, n_experts=3, d_expert=6, d_key=4, top_k=2,
                                    window=3 if kind in ("molkv", "ctxattn") else None), **sizes})
    params = model.init(config, seed, dtype=np.float64)
    for name, value in params.items():
        params[name] = gains(rng, value.shape) if value.ndim == 1 else \
            rng.standard_normal(value.shape) / np.sqrt(value.shape[-2])
    ids = np.array([[1, 5, 1, 9, 3, 1], [0, 10, 4, 4, 2, 7]])       # repeated ids
    targets = rng.integers(0, config.vocab_size, size=ids.shape)
    return config, params, ids, targets


def moe_selections(cache):
    """The (B,T,N) top-k masks of every MoE layer in a model cache."""
    return [layer.experts.keep for layer in cache.layers]


def check_model(kind, seed=0, max_entries=6, **sizes):
    """The whole LM's loss gradient: sampled entries of every parameter tensor.

    The upstream gradient is a random scalar dloss. For kind="moe" the seed
    is advanced until every layer's top-k selection is >= 1e-3 from a tie, and
    every forward of the check asserts the selections are unchanged.
    """
    for attempt in range(100):
        config, params, ids, targets = model_setup(kind, seed + 1000 * attempt, **sizes)
        loss, _, cache = model.forward(params, config, ids, targets)
        if kind != "moe" or min(moe.selection_margin(layer.experts.p, config.top_k)
                                for layer in cache.layers) >= 1e-3:
            break
    else:
        raise RuntimeError(f"no model draw with a top-k gap >= 1e-3 in 100 tries (seed {seed})")
    base = moe_selections(cache) if kind == "moe" else None
    dloss = np.random.default_rng(seed).standard_normal()           # random upstream gradient
    grads = model.backward(cache, dloss)

    def loss_fn():
        loss, _, c = model.forward(params, config, ids, targets)
        if base is not None and not all(np.array_equal(a, b) for a, b in zip(base, moe_selections(c))):
            raise AssertionError("a top-k selection changed under a gradient-check step")
        return loss

    return compare(loss_fn, params, grads, dloss, tol=MODEL_TOL, max_entries=max_entries, seed=seed)


def molkv_params(rng, D, F, N, Dk, variant="joint"):
    """Non-trivial MoLKV parameters (random gains; query scaled so the scores are of order 1-3;
    "recency": slopes m of order 0.3-1; "gated": a gate of tanh about +-0.5, not 0)."""
    params = {
        "norm": gains(rng, D),                                          # (D,)
        "query": 2 * rng.standard_normal((D, Dk)) / np.sqrt(D),         # (D,Dk)
        "up": rng.standard_normal((N, D, F)) / np.sqrt(D),              # (N,D,F)
        "down_k": rng.standard_normal((N, F, Dk)) / np.sqrt(F),         # (N,F,Dk)
        "down_v": rng.standard_normal((N, F, D)) / np.sqrt(F),          # (N,F,D)
    }
    if variant == "recency":
        params["recency"] = rng.uniform(-1.0, 0.5, size=N)              # (N,) m = softplus: 0.3-1
    if variant == "gated":
        params["router"] = rng.standard_normal((D, N))                  # (D,N)
        params["gate"] = rng.choice([-1, 1]) * rng.uniform(0.4, 0.7, size=1)   # (1,)
    return params


def check_molkv(seed=0, window=None, variant="joint"):
    """The MoLKV block for one window and variant: both inputs (h, e) and every parameter."""
    rng = np.random.default_rng(seed)
    B, T, D, F, N, Dk = 2, 5, 6, 4, 3, 4
    params = molkv_params(rng, D, F, N, Dk, variant)
    h = rng.standard_normal((B, T, D))                                  # (B,T,D)
    e = rng.standard_normal((B, T, D))                                  # (B,T,D)
    e[0, 3] = e[0, 1]            # one token twice: both positions' experts are attended to
    return check_block(molkv.forward, molkv.backward, params, {"h": h, "e": e}, seed,
                       prefix="molkv.", window=window, variant=variant)


def check_ctxattn(seed=0, window=None):
    """The control block (attention with recency over keys and values from h): h and every parameter."""
    rng = np.random.default_rng(seed)
    B, T, D, Dk = 2, 5, 6, 4
    params = {
        "query": 2 * rng.standard_normal((D, Dk)) / np.sqrt(D),         # (D,Dk) scores of order 1-3
        "key": rng.standard_normal((D, Dk)) / np.sqrt(D),               # (D,Dk)
        "value": rng.standard_normal((D, D)) / np.sqrt(D),              # (D,D)
        "recency": rng.uniform(-1.0, 0.5, size=1),                      # (1,) m of order 0.3-1
    }
    return check_block(ctxattn.forward, ctxattn.backward, params, {"h": rng.standard_normal((B, T, D))},
                       seed, prefix="ctxattn.", window=window)


# Every check the CLI runs, in reading order: {title: function(seed) -> rows}.
CHECKS = {
    "ops": check_ops,
    "attention": check_attention,
    "mole": check_mole,
    "moe": check_moe,
    "molkv (window=None)": lambda seed: check_molkv(seed, None),
    "molkv (window=1)": lambda seed: check_molkv(seed, 1),
    "molkv (window=3)": lambda seed: check_molkv(seed, 3),
    "molkv (recency)": lambda seed: check_molkv(seed, None, "recency"),
    "molkv (recency, window=3)": lambda seed: check_molkv(seed, 3, "recency"),
    "molkv (gated)": lambda seed: check_molkv(seed, None, "gated"),
    "molkv (gated, window=3)": lambda seed: check_molkv(seed, 3, "gated"),
    "model (dense)": lambda seed: check_model("dense", seed),
    "model (moe)": lambda seed: check_model("moe", seed),
    "model (mole)": lambda seed: check_model("mole", seed),
    "model (molkv)": lambda seed: check_model("molkv", seed, variant="joint"),   # Config's default is recency
    "model (molkv, recency)": lambda seed: check_model("molkv", seed, variant="recency"),
    "model (molkv, gated)": lambda seed: check_model("molkv", seed, variant="gated"),
    "ctxattn": check_ctxattn,
    "ctxattn (window=3)": lambda seed: check_ctxattn(seed, 3),
    "model (ctxattn)": lambda seed: check_model("ctxattn", seed),
}
