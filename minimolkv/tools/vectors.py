"""Reference vectors: every block's and every small model's numbers in float64, for porting.

    python -m minimolkv vectors --out DIR

writes one plain .npz per case (a block with its options, or a small model
of one kind) and a README.md of names, shapes and formulas. Someone porting
MoLKV to PyTorch, JAX or C loads a case, feeds `input.*` and `param.*` to
their code, and compares with `output.*`, `grad.*` (under the fixed upstream
gradient `upstream.*`), `lut.*` (the lookup tables) and `decode.*` (the
outputs of decoding the same inputs one position at a time).

docs/vectors/ holds the committed set; tests/test_vectors.py regenerates it
and compares every array bit for bit, so a change that moves any number of
any block shows up. Every option is named here explicitly (never a default),
so changing a default elsewhere leaves these files as they are.
"""

import os

import numpy as np

from minimolkv import attention, ctxattn, ffn, generate, model, moe, mole, molkv

SEED = 2024
B, T, D, F, N, DK, V, FD, H = 2, 5, 8, 6, 3, 4, 11, 12, 2     # batch, positions, sizes (see README)
IDS = np.array([[3, 1, 3, 7, 1], [0, 10, 4, 4, 2]])           # (B,T) repeated ids on purpose


def nontrivial(rng, params):
    """Values away from init's: vectors (norm gains, recency, gate) in [0.5, 1.5],
    matrices of order 1/sqrt(fan-in), so no term vanishes or cancels."""
    return {name: rng.uniform(0.5, 1.5, size=p.shape) if p.ndim == 1
            else rng.standard_normal(p.shape) / np.sqrt(p.shape[-2]) for name, p in params.items()}


# ----------------------------------------------------------------------------
# the cases
# ----------------------------------------------------------------------------

BLOCK_CASES = {   # file name: (module, init sizes, options given by keyword)
    "ffn": (ffn, dict(d_model=D, d_ff=FD), {}),
    "moe": (moe, dict(d_model=D, d_expert=F, n_experts=N), dict(top_k=2)),
    "mole": (mole, dict(d_model=D, d_expert=F, n_experts=N), {}),
    "ctxattn": (ctxattn, dict(d_model=D, d_key=DK), dict(window=None)),
    "ctxattn-window3": (ctxattn, dict(d_model=D, d_key=DK), dict(window=3)),
    **{f"molkv-{variant}{suffix}": (molkv, dict(d_model=D, d_expert=F, n_experts=N, d_key=DK, variant=variant),
                                    dict(window=window, variant=variant))
       for variant in ("joint", "recency", "gated") for suffix, window in (("", None), ("-window3", 3))},
}

MODEL_SIZES = dict(vocab_size=V, context_len=8, d_model=D, n_layers=2, n_heads=H, d_ff=FD,
                   n_experts=N, d_expert=F, d_key=DK, window=None, top_k=2)
MODEL_CASES = {   # file name: the Config fields besides MODEL_SIZES (variant named even where unread)
    "model-dense": dict(kind="dense", variant="joint"),
    "model-moe": dict(kind="moe", variant="joint"),
    "model-mole": dict(kind="mole", variant="joint"),
    "model-molkv-joint": dict(kind="molkv", variant="joint"),
    "model-molkv-recency": dict(kind="molkv", variant="recency"),
    "model-molkv-gated": dict(kind="molkv", variant="gated"),
    "model-ctxattn": dict(kind="ctxattn", variant="joint"),
}


def block_case(module, sizes, options):
    """{array name: array} of one block: forward, backward, tables, inference, decoding."""
    rng = np.random.default_rng(SEED)
    params = nontrivial(rng, module.init(rng, **sizes, dtype=np.float64))
    emb = rng.standard_normal((V, D))                                  # (V,D) the embedding table
    h = rng.standard_normal((B, T, D))                                 # (B,T,D)
    e = emb[IDS]                                                       # (B,T,D)
    dy = rng.standard_normal((B, T, D))                                # (B,T,D) the upstream gradient
    y, cache = module.forward(params, h, e, **options)
    dh, de, grads = module.backward(dy, cache)
    luts = module.build_lut(params, emb)
    y_lut = module.forward_lut(params, h, IDS, luts, **options)
    state, y_steps = None, []
    for t in range(T):
        y_t, state = module.decode_step(params, h[:, t], IDS[:, t], luts, state, **options)   # (B,D)
        y_steps.append(y_t)
    out = {"input.h": h, "input.ids": IDS, "input.emb": emb, "input.e": e,
           **{f"param.{k}": v for k, v in params.items()},
           "output.y": y, "upstream.dy": dy, "grad.h": dh}
    if de is not None:
        out["grad.e"] = de
    out.update({f"grad.{k}": g for k, g in grads.items()})
    out.update({f"lut.{k}": t for k, t in luts.items()})
    out.update({"output.y_lut": y_lut, "decode.y": np.stack(y_steps, axis=1)})
    return out


def attention_case():
    """Causal multi-head self-attention (H heads): forward, backward, decoding with the KV cache."""
    rng = np.random.default_rng(SEED)
    params = nontrivial(rng, attention.init(rng, D, H, dtype=np.float64))
    x = rng.standard_normal((B, T, D))                                 # (B,T,D)
    dy = rng.standard_normal((B, T, D))                                # (B,T,D)
    y, cache = attention.forward(params, x, H)
    dx, grads = attention.backward(dy, cache)
    kv, y_steps = None, []
    for t in range(T):
        y_t, kv = attention.decode_step(params, x[:, t], H, kv, max_len=T)   # (B,D)
        y_steps.append(y_t)
    return {"input.x": x, **{f"param.{k}": v for k, v in params.items()}, "output.y": y,
            "upstream.dy": dy, "grad.x": dx, **{f"grad.{k}": g for k, g in grads.items()},
            "decode.y": np.stack(y_steps, axis=1)}


def model_case(fields):
    """A small model: loss, logits, every gradient under a random dloss, tables, decoding logits."""
    config = model.Config(**MODEL_SIZES, **fields)
    rng = np.random.default_rng(SEED)
    params = nontrivial(rng, model.init(config, seed=SEED, dtype=np.float64))
    targets = rng.integers(0, V, size=IDS.shape)                       # (B,T)
    dloss = np.float64(rng.standard_normal())                          # the upstream gradient of the loss
    loss, logits, cache = model.forward(params, config, IDS, targets)
    grads = model.backward(cache, dloss)
    luts = model.build_luts(params, config)
    logits_lut = model.forward(params, config, IDS, luts=luts)[1] if luts else logits   # dense, moe: no tables
    states, steps = generate.prefill(params, config, model.layer_params(params, config.n_layers),
                                     model.layer_params(luts, config.n_layers), IDS[:, :1])
    decode_logits = [steps]
    layers, tables = model.layer_params(params, config.n_layers), model.layer_params(luts, config.n_layers)
    for t in range(1, T):
        decode_logits.append(generate.step(params, config, layers, tables, IDS[:, t], t, states))   # (B,V)
    return {"input.ids": IDS, "input.targets": targets, **{f"param.{k}": v for k, v in params.items()},
            "output.loss": np.float64(loss), "output.logits": logits, "upstream.dloss": dloss,
            **{f"grad.{k}": g for k, g in grads.items()}, **{f"lut.{k}": t for k, t in luts.items()},
            "output.logits_lut": logits_lut, "decode.logits": np.stack(decode_logits, axis=1)}


def all_cases():
    """{case name: {array name: float64 or int64 array}} of every case, in reading order."""
    cases = {"attention": attention_case()}
    cases.update({name: block_case(*spec) for name, spec in BLOCK_CASES.items()})
    cases.update({name: model_case(fields) for name, fields in MODEL_CASES.items()})
    return {name: {k: np.asarray(v) for k, v in arrays.items()} for name, arrays in cases.items()}


# ----------------------------------------------------------------------------
# writing: the .npz files and the README
# ----------------------------------------------------------------------------

README_HEAD = f"""# Reference vectors

Written by `python -m minimolkv vectors --out DIR` (minimolkv/tools/vectors.py);
tests/test_vectors.py regenerates them and compares every array bit for bit.
All floats are float64, ids int64. Load a case with `np.load("molkv-joint.npz")`.

Sizes: B={B} batch, T={T} positions, D={D} d_model, F={F} expert hidden size,
N={N} experts, Dk={DK} key size, V={V} vocabulary, Fd={FD} dense FFN hidden size,
H={H} heads. The ids are `{IDS.tolist()}` (repeated on purpose). Parameters are
not init's: vectors (norm gains, recency, gate) are drawn in [0.5, 1.5] and
matrices ~ N(0, 1/fan-in), so no term vanishes. The formulas are those of
docs/design.md section 3 (pinned: the code computes exactly that).

Names in every file:

* `input.*` what the block or model reads: `h` (B,T,D) the normalized hidden
  state, `e = emb[ids]` (B,T,D) the raw token embeddings (with `emb` (V,D)
  and `ids` (B,T)); attention reads `x` (B,T,D); a model reads `ids` and
  `targets` (B,T).
* `param.*` the parameters, named as in the code (`param.query` (D,Dk);
  a model's names are flat: `param.layers.0.molkv.down_v`).
* `output.y` (B,T,D) the block's forward; a model's `output.loss` (scalar,
  mean cross-entropy) and `output.logits` (B,T,V).
* `upstream.dy` (B,T,D) the fixed random upstream gradient (a model's:
  `upstream.dloss`, a scalar multiplying the loss); `grad.*` the gradients
  under it, of every input (`grad.h`, `grad.e`; `grad.x`) and every parameter
  (`grad.<param name>`). `grad.e` is absent where the block does not read e.
* `lut.*` the lookup tables `build_lut(params, emb)` (MoLE: `u` (V,N,D);
  MoLKV: `k` (V,N,Dk), `v` (V,N,D)); `output.y_lut` (`output.logits_lut`)
  the same forward computed from the tables (equal to `output.y` to rounding).
* `decode.y` (B,T,D) (a model's `decode.logits` (B,T,V)): position t's output
  when the inputs are fed one position at a time, t = 0..T-1, with the
  decoding caches (key-value expert cache, attention KV cache).

## The formulas (no biases; `rmsnorm(x, w) = x / sqrt(mean(x**2) + 1e-5) * w`, tanh GELU)

    ffn      y = gelu(h @ up) @ down
    moe      p = softmax(h @ router); keep the top_k; g = p·keep / sum(p·keep)
             y = sum_n g[n] gelu(h @ up[n]) @ down[n]
    mole     ê = rmsnorm(e, norm); s = softmax(h @ router); u[n] = gelu(ê @ up[n]) @ down[n]
             y = sum_n s[n] u[n];  lut.u[i, n] = u[n] at e = emb[i]
    molkv    ê = rmsnorm(e, norm); a[n] = gelu(ê @ up[n]); k[n] = a[n] @ down_k[n];
             v[n] = a[n] @ down_v[n]; q = h @ query
             S[t,j,n] = q[t]·k[j,n] / sqrt(Dk), -inf unless t - window < j <= t
             joint:   P = softmax of S over (j, n) jointly; y[t] = sum_{{j,n}} P[t,j,n] v[j,n]
             recency: S[t,j,n] -= softplus(recency[n]) (t - j), then as joint
             gated:   P over j < t only; y[t] = sum_n softmax(h @ router)[t,n] v[t,n]
                      + tanh(gate) sum_{{j<t,n}} P[t,j,n] v[j,n]
             lut.k[i], lut.v[i] = k, v at e = emb[i]
    ctxattn  q = h @ query, k = h @ key, v = h @ value; S[t,j] = q[t]·k[j] / sqrt(Dk)
             - softplus(recency) (t - j), masked as molkv; y = softmax_j(S) v
    attention  causal multi-head self-attention, qkv = x @ qkv split in H heads of D/H,
             softmax(q k^T / sqrt(D/H) + causal mask) v, heads merged, @ proj
    model    e = tok_emb[ids]; x = e + pos_emb[:T]; per layer
             x += attention(rmsnorm(x, ln1)); h = rmsnorm(x, ln2); x += ffn(h) + block(h, e);
             logits = rmsnorm(x, ln_f) @ lm_head; loss = mean cross-entropy(logits, targets)

## The cases
"""


def readme(cases):
    """README.md: the head above, then every case's options and arrays with their shapes."""
    lines = [README_HEAD]
    for name, arrays in cases.items():
        if name in BLOCK_CASES:
            module, sizes, options = BLOCK_CASES[name]
            what = f"block `{module.__name__.split('.')[-1]}`, options {options or 'none'}"
        elif name in MODEL_CASES:
            what = f"model.Config({', '.join(f'{k}={v!r}' for k, v in {**MODEL_SIZES, **MODEL_CASES[name]}.items())})"
        else:
            what = f"block `attention`, n_heads={H}"
        lines.append(f"### {name}.npz\n\n{what}\n")
        lines += [f"    {key:<34} {str(a.shape):<14} {a.dtype}" for key, a in arrays.items()]
        lines.append("")
    return "\n".join(lines)


def file_names():
    """The names write() gives its files: README.md and one <case>.npz per case."""
    return ["README.md"] + [name + ".npz" for name in ("attention", *BLOCK_CASES, *MODEL_CASES)]


def write(out_dir):
    """Write every case's .npz and README.md into out_dir; returns the case names."""
    os.makedirs(out_dir, exist_ok=True)
    cases = all_cases()
    for name, arrays in cases.items():
        np.savez(os.path.join(out_dir, name + ".npz"), **arrays)
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(readme(cases))
    return list(cases)
