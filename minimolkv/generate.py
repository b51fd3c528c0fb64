"""Generation with caches: one token at a time, O(T) work per new token.

Letters: B batch, D d_model, V vocabulary, N experts, t the current position.

Per new token and layer the model keeps
  * the attention KV cache (keys and values of every earlier position), and
  * for MoLKV, the key-value *expert* cache: the N keys and N values looked up
    for every earlier token id (the last `window` tokens when a window is set).
MoLE needs no cache: its experts are one table lookup for the current id.

Each step runs exactly the model's forward for one position:
    x_t = tok_emb[id_t] + pos_emb[t]                                   (B,D)
    per layer: x_t += attn_step(rmsnorm(x_t, ln1));  h_t = rmsnorm(x_t, ln2)
               x_t += ffn(h_t) + experts_step(h_t, id_t)
    logits_t = rmsnorm(x_t, ln_f) @ lm_head                            (B,V)

The context limit: positions are learned up to context_len. When the sequence
fills the context, generation *slides*: the caches are dropped and the last
context_len // 2 tokens are read again from position 0, then decoding goes on.
"""

import math

import numpy as np

from minimolkv import attention, moe, mole, molkv, ops
from minimolkv.errors import check_ids, check_positive_int
from minimolkv.model import build_luts, check_luts, check_params_fit, ffn_forward, layer_luts, sub


def step(params, config, ids_t, t, caches, luts):
    """Feed one token per sequence: ids_t (B,) at position t -> logits (B,V).

    caches: a list (one per layer) of {"attn": ..., "experts": ...}; updated.
    No input checks here (generate checks once, not per token), except t.
    """
    if not 0 <= t < config.context_len:
        raise ValueError(f"t={t} is outside the learned positions [0, {config.context_len})")
    c = config
    x = params["tok_emb"][ids_t] + params["pos_emb"][t]                     # (B,D)
    for l in range(c.n_layers):
        pre = f"layers.{l}."
        a_in, _ = ops.rmsnorm_forward(x, params[pre + "ln1"])               # (B,D)
        a, caches[l]["attn"] = attention.decode_step(sub(params, pre + "attn."), a_in,
                                                     c.n_heads, caches[l]["attn"])  # (B,D)
        x = x + a                                                           # (B,D)
        h, _ = ops.rmsnorm_forward(x, params[pre + "ln2"])                  # (B,D)
        if c.d_ff:
            x = x + ffn_forward(sub(params, pre + "ffn."), h[:, None])[0][:, 0]  # (B,D)
        p = sub(params, pre + c.kind + ".")
        lut = layer_luts(c, luts, l)
        if c.kind == "moe":
            x = x + moe.forward(p, h[:, None], c.top_k)[0][:, 0]            # (B,1,D) -> (B,D)
        elif c.kind == "mole":
            x = x + mole.forward_lut(p, h[:, None], ids_t[:, None], lut)[:, 0]  # (B,1,D) -> (B,D)
        elif c.kind == "molkv":
            y, caches[l]["experts"] = molkv.decode_step(p, h, ids_t, lut[0], lut[1],
                                                        caches[l]["experts"], c.window)  # (B,D)
            x = x + y                                                       # (B,D)
    xf, _ = ops.rmsnorm_forward(x, params["ln_f"])                          # (B,D)
    return xf @ params["lm_head"]                                           # (B,V)


def sample(logits, temperature, top_k, rng):
    """logits (B,V) -> next ids (B,). temperature 0 is greedy (argmax)."""
    if temperature == 0:
        return np.argmax(logits, axis=-1)
    z = logits.astype(np.float64) / temperature                             # (B,V)
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.sort(z, axis=-1)[:, -top_k][:, None]                       # (B,1)
        z = np.where(z < kth, -np.inf, z)                                   # keep the top_k
    p, _ = ops.softmax_forward(z)                                           # (B,V)
    u = rng.random((z.shape[0], 1))                                         # (B,1)
    ids = np.sum(np.cumsum(p, axis=-1) < u, axis=-1)                        # inverse-CDF draw
    return np.minimum(ids, z.shape[-1] - 1)


def prefill(params, config, visible, luts):
    """Fresh caches holding `visible` (B,t) at positions 0..t-1 -> (caches, logits (B,V) of the last)."""
    caches = [{"attn": None, "experts": None} for _ in range(config.n_layers)]
    for t in range(visible.shape[1]):
        logits = step(params, config, visible[:, t], t, caches, luts)      # (B,V)
    return caches, logits


def generate(params, config, prompt_ids, n_tokens, temperature=1.0, top_k=None, seed=None,
             luts=None):
    """Continue `prompt_ids` ((T0,) or (B,T0)) by n_tokens -> ids ((T0+n,) or (B,T0+n)).

    MoLE/MoLKV always decode from lookup tables: pass `luts` from
    model.build_luts (or they are built here once). temperature=0 is greedy;
    top_k keeps the k most likely tokens; seed makes sampling reproducible.
    Past context_len tokens it slides (see the module docstring).
    """
    prompt = np.asarray(prompt_ids)
    single = prompt.ndim == 1
    prompt = prompt[None] if single else prompt
    check_ids(prompt, config.vocab_size, "prompt_ids")
    if prompt.ndim != 2 or prompt.shape[1] == 0:
        raise ValueError(f"prompt_ids must be a non-empty (T0,) or (B,T0) array, got shape {prompt.shape}")
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, (int, np.integer)):
        raise TypeError(f"n_tokens must be an integer >= 0, got {n_tokens!r}")
    if n_tokens < 0:
        raise ValueError(f"n_tokens must be an integer >= 0, got {n_tokens}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.number)) \
            or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    top_k = check_positive_int(top_k, "top_k", allow_none=True)
    check_params_fit(params, config)
    if config.kind in ("mole", "molkv"):
        luts = build_luts(params, config) if luts is None else luts
        check_luts(config, luts)
    rng = np.random.default_rng(seed)

    total = prompt.shape[1] + n_tokens
    ids = prompt                                                            # (B,T0)
    visible = ids[:, -config.context_len:]                                  # (B,t) what the caches hold
    caches, logits = prefill(params, config, visible, luts)                 # logits (B,V)
    t = visible.shape[1]                                                    # next free position
    while ids.shape[1] < total:
        nxt = sample(logits, temperature, top_k, rng)                       # (B,)
        ids = np.concatenate([ids, nxt[:, None]], axis=1)                   # (B,T+1)
        if ids.shape[1] == total:
            break
        if t == config.context_len:                                         # the caches are full: slide
            visible = ids[:, -(config.context_len // 2 or 1):]              # (B,C/2), nxt included
            caches, logits = prefill(params, config, visible, luts)
            t = visible.shape[1]
        else:
            logits = step(params, config, nxt, t, caches, luts)             # (B,V)
            t += 1
    return ids[0] if single else ids
