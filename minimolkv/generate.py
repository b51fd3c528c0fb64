"""Generation with caches: one token at a time. Per new token and layer the work is
O(t·D) for attention and O(t·N·(Dk + D)) for MoLKV's expert cache (t positions
cached), instead of a whole forward; at each slide C/2 tokens are read again.

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

import numpy as np

from minimolkv import attention, ctxattn, ffn, moe, mole, molkv, ops, validate_run
from minimolkv.model import build_luts, layer_params, lut_shapes, param_shapes


def step(params, config, layers, tables, ids_t, t, states):
    """Feed one token per sequence: ids_t (B,) at position t -> logits (B,V).

    layers:  layer_params(params), looked up once per generate call
    tables:  layer_params(luts): per layer, each block's tables ({} for blocks without)
    states:  one dict per layer, {"attn": KVCache, <block name>: its decode state}; updated
    No input checks here: generate validates once, not per token.
    """
    x = params["tok_emb"][ids_t] + params["pos_emb"][t]                     # (B,D)
    for l, p in enumerate(layers):
        state = states[l]
        a_in, _ = ops.rmsnorm_forward(x, p["ln1"])                          # (B,D)
        a, state["attn"] = attention.decode_step(p["attn"], a_in, config.n_heads, state["attn"],
                                                 check=False)               # (B,D)
        x = x + a                                                           # (B,D)
        h, _ = ops.rmsnorm_forward(x, p["ln2"])                             # (B,D)
        # x += ffn(h) + experts(h, id); each block's decode state kept in state[<block name>]
        if config.d_ff:
            y, state["ffn"] = ffn.decode_step(p["ffn"], h, ids_t, {}, None, check=False)             # (B,D)
            x = x + y                                                       # (B,D)
        kind, c = config.kind, config
        if kind == "moe":
            y, state[kind] = moe.decode_step(p[kind], h, ids_t, {}, None, top_k=c.top_k, check=False)   # (B,D)
        elif kind == "mole":
            y, state[kind] = mole.decode_step(p[kind], h, ids_t, tables[l][kind], None, check=False)    # (B,D)
        elif kind == "molkv":
            y, state[kind] = molkv.decode_step(p[kind], h, ids_t, tables[l][kind], state.get(kind),
                                               window=c.window, variant=c.variant, check=False)        # (B,D)
        elif kind == "ctxattn":
            y, state[kind] = ctxattn.decode_step(p[kind], h, ids_t, {}, state.get(kind), window=c.window,
                                                 check=False)                                           # (B,D)
        if kind != "dense":
            x = x + y                                                       # (B,D)
    xf, _ = ops.rmsnorm_forward(x, params["ln_f"])                          # (B,D)
    return xf @ params["lm_head"]                                           # (B,V)


def sample(logits, temperature, top_k, rng):
    """logits (B,V) -> next ids (B,). temperature 0 is greedy (argmax)."""
    if temperature == 0:
        return np.argmax(logits, axis=-1)
    with np.errstate(over="ignore", invalid="ignore"):
        z = logits.astype(np.float64) / temperature                         # (B,V)
    if not np.all(np.isfinite(z)):                                          # a tiny temperature overflows:
        return np.argmax(logits, axis=-1)                                   # its limit is the argmax
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.sort(z, axis=-1)[:, -top_k][:, None]                       # (B,1)
        z = np.where(z < kth, -np.inf, z)                                   # keep the top_k
    p, _ = ops.softmax_forward(z)                                           # (B,V)
    u = rng.random((z.shape[0], 1))                                         # (B,1)
    ids = np.sum(np.cumsum(p, axis=-1) < u, axis=-1)                        # inverse-CDF draw
    return np.minimum(ids, z.shape[-1] - 1)


def prefill(params, config, layers, tables, visible):
    """Fresh states holding `visible` (B,t) at positions 0..t-1 -> (states, logits (B,V) of the last)."""
    states = [{"attn": None} for _ in range(config.n_layers)]
    for t in range(visible.shape[1]):
        logits = step(params, config, layers, tables, visible[:, t], t, states)   # (B,V)
    return states, logits


def generate(params, config, prompt_ids, n_tokens, *, temperature=1.0, top_k=None, seed=None,
             luts=None, on_token=None):
    """Continue `prompt_ids` ((T0,) or (B,T0)) by n_tokens -> ids ((T0+n,) or (B,T0+n)).

    MoLE/MoLKV always decode from lookup tables: pass `luts` from
    model.build_luts (or they are built here once). temperature=0 is greedy;
    top_k keeps the k most likely tokens; seed makes sampling reproducible.
    on_token(ids (B,)) is called with every new token (e.g. to print it).
    Past context_len tokens it slides (see the module docstring).
    """
    prompt = np.asarray(prompt_ids)
    single = prompt.ndim == 1
    prompt = prompt[None] if single else prompt
    validate_run.generate_args(params, config, prompt, n_tokens, temperature, top_k, luts,
                               param_shapes(config), lut_shapes(config))
    if luts is None:
        luts = build_luts(params, config, check=False)                      # {} for dense and moe
    layers = layer_params(params, config.n_layers)                          # looked up once, not per token
    tables = layer_params(luts, config.n_layers)
    rng = np.random.default_rng(seed)

    B, T0 = prompt.shape
    ids = np.empty((B, T0 + n_tokens), dtype=np.int64)                     # (B,T0+n) filled as we go
    ids[:, :T0] = prompt
    n = T0                                                                  # ids[:, :n] are known
    visible = ids[:, max(0, n - config.context_len):n]                      # (B,t) what the caches hold
    states, logits = prefill(params, config, layers, tables, visible)       # logits (B,V)
    t = visible.shape[1]                                                    # next free position
    while n < ids.shape[1]:
        nxt = sample(logits, temperature, top_k, rng)                       # (B,)
        ids[:, n] = nxt
        n += 1
        if on_token is not None:
            on_token(nxt)
        if n == ids.shape[1]:
            break
        if t == config.context_len:                                         # the caches are full: slide
            visible = ids[:, n - (config.context_len // 2 or 1):n]          # (B,C/2), nxt included
            states, logits = prefill(params, config, layers, tables, visible)
            t = visible.shape[1]
        else:
            logits = step(params, config, layers, tables, nxt, t, states)   # (B,V)
            t += 1
    return ids[0] if single else ids
