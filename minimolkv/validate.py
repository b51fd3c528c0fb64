"""Input validation: every bad input becomes a ValueError/TypeError that names
the argument, says what was given and what is allowed.

Each public entry of the math modules (a block's init/forward/backward/...,
the model's forward, generate) makes exactly one call into this module, as
its first line, and then runs pure math: in a debugger, `n` steps over the
check and `s` on the next line lands in the math. Code that has validated
already (the model calling its blocks, generate calling the model) calls the
math with check=False, so nothing is checked twice.

Layout: the basic checks first (array, float_input, token_ids, param_dict,
positive_int), then one function per public entry of the blocks, named after it.
The model's, generation's and a training run's checks are in validate_run.py,
built from these.
"""


import numpy as np

FLOATS = (np.float32, np.float64)


# ----------------------------------------------------------------------------
# basic checks
# ----------------------------------------------------------------------------

def array(x, name, ndim=None, shape=None, floating=False):
    """x must be an ndarray of `ndim` dims and, where given, `shape`; `shape` may
    hold None for "any size" in a position, e.g. (None, None, 64).
    floating=True: the dtype must be float32 or float64."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if floating and x.dtype not in FLOATS:
        raise TypeError(f"{name} must be float32 or float64, got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {x.shape}")
    if shape is not None:
        if len(shape) != x.ndim or any(s is not None and s != g for s, g in zip(shape, x.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {x.shape}")


def float_input(x, name, shape, dtype):
    """A layer's input: a non-empty float array of `shape` (None = any size) in
    the parameters' dtype -- dtypes are never mixed silently."""
    array(x, name, shape=shape, floating=True)
    if x.dtype != dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the parameters are {dtype}; "
                        "convert one of them, dtypes are never mixed")
    if 0 in x.shape:
        raise ValueError(f"{name} must not be empty, got shape {x.shape}")


def token_ids(ids, vocab_size, name="ids", shape=None):
    """Token ids: an integer array (of `shape`, if given) with every value in [0, vocab_size)."""
    if not isinstance(ids, np.ndarray):
        raise TypeError(f"{name} must be a numpy integer array, got {type(ids).__name__}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{name} must hold integers (token ids), got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = ids[(ids < 0) | (ids >= vocab_size)].ravel()[0]
        raise ValueError(f"{name} holds token id {bad}, outside the vocabulary [0, {vocab_size})")
    if shape is not None and ids.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, one id per position, got {ids.shape}")


def param_dict(params, shapes, name="params"):
    """A parameter dict against {key: expected shape}; one float dtype for all. Returns the dtype."""
    if not isinstance(params, dict):
        raise TypeError(f"{name} must be a dict of arrays, got {type(params).__name__}")
    missing = [k for k in shapes if k not in params]
    if missing:
        raise ValueError(f"{name} is missing {missing}; expected keys {list(shapes)}")
    for key, shape in shapes.items():
        array(params[key], f"{name}['{key}']", shape=shape, floating=True)
    dtypes = {params[key].dtype for key in shapes}
    if len(dtypes) > 1:
        raise TypeError(f"{name} mixes dtypes {sorted(map(str, dtypes))}; use one dtype for all")
    return dtypes.pop()


def positive_int(value, name, allow_none=False):
    """An integer >= 1 (numpy integers too; returned as int); bool is refused."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        allowed = "an integer >= 1" + (" or None" if allow_none else "")
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def one_of(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _anchored(params, anchors, block):
    """The arrays whose shapes give a block's sizes must exist with these ndims, before
    the sizes are read off them (so a bad dict never fails with a bare IndexError)."""
    if not isinstance(params, dict) or any(k not in params for k in anchors):
        raise TypeError(f"params must be the dict from {block}.init (keys {', '.join(anchors)}, ...)")
    for key, ndim in anchors.items():
        array(params[key], f"params['{key}']", ndim=ndim, floating=True)


def _same_shape(h, e):
    if h.shape != e.shape:
        raise ValueError(f"h and e must have the same shape (B,T,D), got h {h.shape} and e {e.shape}")


# ----------------------------------------------------------------------------
# the blocks: parameters, then one function per public entry
# ----------------------------------------------------------------------------

def init_args(dtype, **sizes):
    """A block init's sizes (integers >= 1; `variant` a MoLKV variant) and float dtype."""
    for name, value in sizes.items():
        if name == "variant":
            from minimolkv.molkv import VARIANTS
            one_of(value, "variant", VARIANTS)
        else:
            positive_int(value, name)
    if "n_heads" in sizes and sizes["d_model"] % sizes["n_heads"]:
        raise ValueError(f"n_heads must divide d_model: got n_heads={sizes['n_heads']}, "
                         f"d_model={sizes['d_model']}")
    if np.dtype(dtype) not in FLOATS:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")


def gradient(dy, shape, dtype):
    """A backward's upstream gradient: the forward output's shape and dtype."""
    array(dy, "dy", shape=shape)
    if dy.dtype != dtype:
        raise TypeError(f"dy has dtype {dy.dtype} but the forward ran in {dtype}")


def ffn_params(params):
    from minimolkv.ffn import param_shapes          # (the blocks import this module: import at call time)
    _anchored(params, {"up": 2}, "ffn")
    D, F = params["up"].shape
    return D, param_dict(params, param_shapes(D, F))


def moe_params(params):
    from minimolkv.moe import param_shapes
    _anchored(params, {"router": 2, "up": 3}, "moe")
    D, N = params["router"].shape
    return D, N, param_dict(params, param_shapes(D, params["up"].shape[2], N))


def mole_params(params):
    from minimolkv.mole import param_shapes
    _anchored(params, {"up": 3}, "mole")
    N, D, F = params["up"].shape
    return D, param_dict(params, param_shapes(D, F, N))


def molkv_params(params, variant):
    from minimolkv.molkv import VARIANTS, param_shapes
    one_of(variant, "variant", VARIANTS)
    _anchored(params, {"up": 3, "query": 2}, "molkv")
    N, D, F = params["up"].shape
    return D, param_dict(params, param_shapes(D, F, N, params["query"].shape[1], variant))


def _unread_e(e, block):
    """The FFN and MoE take `e` for the common interface but do not read it."""
    if e is not None and not isinstance(e, np.ndarray):
        raise TypeError(f"e must be None or an array ({block} does not read it), got {e!r}; "
                        "options such as top_k are keyword-only")


def ctxattn_params(params):
    from minimolkv.ctxattn import param_shapes
    _anchored(params, {"query": 2}, "ctxattn")
    D, Dk = params["query"].shape
    return D, param_dict(params, param_shapes(D, Dk))


def ctxattn_forward(params, h, e, window):
    D, dtype = ctxattn_params(params)
    _hidden(h, D, dtype)
    _unread_e(e, "the control (ctxattn)")
    positive_int(window, "window", allow_none=True)


def ffn_forward(params, h, e):
    D, dtype = ffn_params(params)
    _hidden(h, D, dtype)
    _unread_e(e, "the FFN")


def moe_forward(params, h, e, top_k):
    D, N, dtype = moe_params(params)
    _hidden(h, D, dtype)
    _unread_e(e, "MoE")
    _top_k(top_k, N)


def _top_k(top_k, N):
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        raise TypeError(f"top_k must be an integer in [1, {N}], got {top_k!r}")
    if not 1 <= top_k <= N:
        raise ValueError(f"top_k must be in [1, n_experts={N}], got {top_k}")


def _step(h_t, D, dtype):
    """h_t (B,D): one decoding step's hidden state, named as the decode steps name it."""
    array(h_t, "h_t", ndim=2, floating=True)
    float_input(h_t, "h_t", (None, D), dtype)


def ffn_decode(params, h_t):
    D, dtype = ffn_params(params)
    _step(h_t, D, dtype)


def moe_decode(params, h_t, top_k):
    D, N, dtype = moe_params(params)
    _step(h_t, D, dtype)
    _top_k(top_k, N)


def ctxattn_decode(params, h_t, state, window):
    """ctxattn.decode_step: h_t (B,D), and the DecodeState it returned, for the same batch and window."""
    D, dtype = ctxattn_params(params)
    _step(h_t, D, dtype)
    positive_int(window, "window", allow_none=True)
    if state is None:
        return
    from minimolkv.ctxattn import DecodeState
    if not isinstance(state, DecodeState):
        raise TypeError("state must be None or the DecodeState returned by decode_step")
    B, Dk = h_t.shape[0], params["query"].shape[1]
    if state.k_buffer.shape[0] != B:
        raise ValueError(f"state holds {state.k_buffer.shape[0]} sequences but h_t has {B}; "
                         "start a new state (None) for a new batch")
    if state.window != window:
        raise ValueError(f"window={window} but state was built with window={state.window}; "
                         "use the same for every step")
    array(state.k_buffer, "state.k_buffer", shape=(B, None, 1, Dk))
    array(state.v_buffer, "state.v_buffer", shape=(B, state.k_buffer.shape[1], 1, D))
    if state.k_buffer.dtype != dtype:
        raise TypeError(f"state holds {state.k_buffer.dtype} keys but the parameters are {dtype}")


def _hidden(h, D, dtype, name="h"):
    """h (B,T,D): checked for its dims first, so the message says which is wrong."""
    array(h, name, ndim=3, floating=True)
    if h.shape[-1] != D:
        raise ValueError(f"{name} has {h.shape[-1]} features (last dim of shape {h.shape}), "
                         f"but the params have d_model={D}")
    float_input(h, name, (None, None, D), dtype)


def mole_forward(params, h, e):
    D, dtype = mole_params(params)
    float_input(h, "h", (None, None, D), dtype)
    float_input(e, "e", (None, None, D), dtype)
    _same_shape(h, e)


def molkv_forward(params, h, e, window, variant):
    D, dtype = molkv_params(params, variant)
    positive_int(window, "window", allow_none=True)
    float_input(h, "h", (None, None, D), dtype)
    float_input(e, "e", (None, None, D), dtype)
    _same_shape(h, e)


def mole_lut(params, emb):
    D, dtype = mole_params(params)
    float_input(emb, "emb", (None, D), dtype)


def molkv_lut(params, emb):
    D, dtype = molkv_params(params, "joint")                 # the tables need only the joint parameters
    float_input(emb, "emb", (None, D), dtype)


def _inference(params, key, luts, widths):
    """At inference only `key` (router or query) and the variant's small extras stay in
    RAM; the tables replace the rest. widths: {table: its last dim from (D, key's width)}.
    Returns (D, N, key's width, dtype, V)."""
    if not isinstance(params, dict) or key not in params:
        raise TypeError(f"params must be a dict holding {key!r}; at inference nothing else "
                        "is needed (the tables replace the expert FFNs)")
    array(params[key], f"params['{key}']", ndim=2, floating=True)
    D, width = params[key].shape
    dtype = params[key].dtype
    if not isinstance(luts, dict) or any(t not in luts for t in widths):
        raise TypeError(f"luts must be the dict from build_lut, with tables {list(widths)}, "
                        f"got {type(luts).__name__}")
    first = next(iter(widths))
    for t, want in widths.items():
        table, name = luts[t], f"luts['{t}']"
        if not hasattr(table, "shape") or not hasattr(table, "dtype"):
            raise TypeError(f"{name} must be an array, np.memmap or LookupTable, got {type(table).__name__}")
        shape, last = tuple(table.shape), want(D, width)
        if len(shape) != 3 or shape[2] != last or shape[:2] != tuple(luts[first].shape[:2]):
            raise ValueError(f"{name} must have shape (V, N, {last}) with the V and N of "
                             f"luts['{first}'] {tuple(luts[first].shape)}, got {shape}")
        if table.dtype != dtype:
            raise TypeError(f"{name} has dtype {table.dtype} but the parameters are {dtype}; "
                            "dtypes are never mixed")
    V, N = luts[first].shape[:2]
    return D, N, width, dtype, V


def mole_inference(params, h, ids, luts, step=False):
    """forward_lut (h (B,T,D), ids (B,T)), or with step=True decode_step (h_t (B,D), ids_t (B,))."""
    D, N, width, dtype, V = _inference(params, "router", luts, {"u": lambda D, N: D})
    if N != width:
        raise ValueError(f"luts['u'] holds {N} experts but params['router'] routes to {width}")
    if step:
        _step(h, D, dtype)
        token_ids(ids, V, "ids_t", shape=h.shape[:1])
    else:
        float_input(h, "h", (None, None, D), dtype)
        token_ids(ids, V, "ids", shape=h.shape[:2])


def _molkv_extras(params, variant, D, N, dtype):
    """The variant's parameters that stay in RAM beside the query."""
    extra = {"recency": {"recency": (N,)}, "gated": {"router": (D, N), "gate": (1,)}}.get(variant, {})
    if extra and param_dict({k: params[k] for k in extra if k in params}, extra) != dtype:
        raise TypeError("params mixes dtypes; use one dtype for all")


def molkv_inference(params, h, ids, luts, window, variant):
    from minimolkv.molkv import VARIANTS
    one_of(variant, "variant", VARIANTS)
    D, N, Dk, dtype, V = _inference(params, "query", luts, {"k": lambda D, Dk: Dk, "v": lambda D, Dk: D})
    _molkv_extras(params, variant, D, N, dtype)
    positive_int(window, "window", allow_none=True)
    float_input(h, "h", (None, None, D), dtype)
    token_ids(ids, V, "ids", shape=h.shape[:2])


def molkv_decode(params, h_t, ids_t, luts, state, window, variant):
    from minimolkv.molkv import VARIANTS
    one_of(variant, "variant", VARIANTS)
    D, N, Dk, dtype, V = _inference(params, "query", luts, {"k": lambda D, Dk: Dk, "v": lambda D, Dk: D})
    _molkv_extras(params, variant, D, N, dtype)
    positive_int(window, "window", allow_none=True)
    float_input(h_t, "h_t", (None, D), dtype)
    B = h_t.shape[0]
    token_ids(ids_t, V, "ids_t", shape=(B,))
    if state is None:
        return
    from minimolkv.molkv import DecodeState
    if not isinstance(state, DecodeState):
        raise TypeError("state must be None or the DecodeState returned by decode_step")
    if state.k.shape[0] != B:
        raise ValueError(f"state holds {state.k.shape[0]} sequences but h_t has {B}; "
                         "start a new state (None) for a new batch")
    if (state.window, state.variant) != (window, variant):
        raise ValueError(f"window={window}, variant={variant!r} but state was built with "
                         f"window={state.window}, variant={state.variant!r}; use the same for every step")
    array(state.k, "state.k", shape=(B, None, N, Dk))
    array(state.v, "state.v", shape=(B, state.k.shape[1], N, D))
    if state.k.dtype != dtype or state.v.dtype != dtype:
        raise TypeError(f"state holds {state.k.dtype} keys and {state.v.dtype} values but the parameters "
                        f"are {dtype}; use one dtype")


def attention_params(params, n_heads):
    from minimolkv.attention import param_shapes
    _anchored(params, {"qkv": 2}, "attention")
    D = params["qkv"].shape[0]
    dtype = param_dict(params, param_shapes(D, n_heads))
    init_args(dtype, d_model=D, n_heads=n_heads)
    return D, dtype


def attention_forward(params, x, n_heads):
    D, dtype = attention_params(params, n_heads)
    _hidden(x, D, dtype, name="x")


def attention_decode(params, x_t, n_heads, kv, max_len):
    D, dtype = attention_params(params, n_heads)
    array(x_t, "x_t", ndim=2, floating=True)
    float_input(x_t, "x_t", (None, D), dtype)
    positive_int(max_len, "max_len", allow_none=True)
    if kv is None:
        return
    from minimolkv.attention import KVCache
    if not isinstance(kv, KVCache):
        raise TypeError("kv must be None or the KVCache returned by decode_step")
    array(kv.k, "kv.k", shape=(x_t.shape[0], n_heads, None, D // n_heads))
    array(kv.v, "kv.v", shape=kv.k.shape)
    if max_len is not None and kv.k.shape[2] >= max_len:
        raise ValueError(f"the cache already holds {kv.k.shape[2]} tokens, max_len={max_len}")


def cross_entropy(logits, targets):
    array(logits, "logits", floating=True)
    if logits.ndim < 1 or logits.shape[-1] == 0:
        raise ValueError(f"logits must have a last axis of V >= 1 classes, got shape {logits.shape}")
    token_ids(targets, logits.shape[-1], "targets", shape=logits.shape[:-1])
