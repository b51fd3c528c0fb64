"""Input validation below the math: every bad input becomes one ValueError/TypeError
naming the argument, what was given and what is allowed.

Each public entry of the math makes its check under `if check:` as its first line, then runs
pure math (in a debugger, `n` steps over the check). Callers that validated already pass
check=False: nothing is checked twice or per step. This module imports nothing of the package:
what a check compares against (a block's param_shapes, its variants, its DecodeState, its cache
types) comes from the caller. validate_run.py: the model and a run."""

import numpy as np

FLOATS = (np.float32, np.float64)


# --- basic checks ---

def array(x, name, ndim=None, shape=None, floating=False):
    """x must be an ndarray of `ndim` dims and, where given, `shape` (None: any size in a
    position, e.g. (None, None, 64)); floating=True: the dtype must be float32 or float64."""
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
    """A layer's input: a non-empty float array of `shape` in the parameters' dtype (never mixed)."""
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
        raise TypeError(f"{name} must be an integer >= 1{' or None' if allow_none else ''}, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def one_of(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


# --- the blocks: sizes, parameters, inputs ---

def init_args(dtype, variants=(), **sizes):
    """A block init's sizes (integers >= 1; `variant` one of `variants`) and float dtype."""
    if "variant" in sizes:
        one_of(sizes.pop("variant"), "variant", variants)
    for name, value in sizes.items():
        positive_int(value, name)
    if "n_heads" in sizes and sizes["d_model"] % sizes["n_heads"]:
        raise ValueError(f"n_heads must divide d_model: got n_heads={sizes['n_heads']}, d_model={sizes['d_model']}")
    if np.dtype(dtype) not in FLOATS:
        raise TypeError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")


def gradient(dy, cache, types, made_by, output):
    """A backward's cache, one of `types` (the NamedTuples `made_by` returns) and whole, and its
    upstream gradient dy of the forward output's shape and dtype, output(cache)."""
    if not isinstance(cache, types):
        raise TypeError(f"cache must be the {' or '.join(t.__name__ for t in types)} returned by {made_by}, "
                        f"got {type(cache).__name__}")
    whole(cache, "cache")
    shape, dtype = output(cache)
    array(dy, "dy", shape=shape)
    if dy.dtype != dtype:
        raise TypeError(f"dy has dtype {dy.dtype} but the forward ran in {dtype}")


def whole(cache, name):
    """Every field of a cache (a NamedTuple) declared an array or a cache holds one, nested caches too."""
    for field, kind in type(cache).__annotations__.items():
        value = getattr(cache, field)
        if (kind is np.ndarray or hasattr(kind, "_fields")) and not isinstance(value, kind):
            raise TypeError(f"{name}.{field} must be {kind.__name__}, got {type(value).__name__}; pass forward's cache")
        if hasattr(value, "_fields"):                      # nested caches, declared or not (a layer's experts)
            whole(value, f"{name}.{field}")


# Where each block's param_shapes(*sizes) reads its sizes: {block: (anchors {key: ndim}, sizes(params))}.
SIZES = {
    "ffn": ({"up": 2}, lambda p: p["up"].shape),                                            # D, Fd
    "moe": ({"router": 2, "up": 3}, lambda p: (p["router"].shape[0], p["up"].shape[2], p["router"].shape[1])),
    "mole": ({"up": 3}, lambda p: (p["up"].shape[1], p["up"].shape[2], p["up"].shape[0])),  # D, F, N
    "molkv": ({"up": 3, "query": 2}, lambda p: (*p["up"].shape[1:], p["up"].shape[0], p["query"].shape[1])),  # D,F,N,Dk
    "ctxattn": ({"query": 2}, lambda p: p["query"].shape),                                  # D, Dk
    "attention": ({"qkv": 2}, lambda p: p["qkv"].shape[:1]),                                # D
}
E_UNREAD = {"ffn": "the FFN", "moe": "MoE", "ctxattn": "the control (ctxattn)"}   # e is not read


def block_params(block, params, param_shapes, *more):
    """A block's params against the caller's param_shapes(*sizes, *more), the sizes read off the
    anchors of SIZES, checked first (a bad dict never fails with an IndexError). Returns (D, dtype)."""
    anchors, sizes = SIZES[block]
    if not isinstance(params, dict) or any(k not in params for k in anchors):
        raise TypeError(f"params must be the dict from {block}.init (keys {', '.join(anchors)}, ...)")
    for key, ndim in anchors.items():
        array(params[key], f"params['{key}']", ndim=ndim, floating=True)
    args = tuple(sizes(params)) + more
    return args[0], param_dict(params, param_shapes(*args))


def block_input(block, params, param_shapes, h, e=None, *, name="h", window=None, top_k=None,
                variant=None, variants=None, more=()):
    """The check of a block's forward (h, e (B,T,D)) or decode step (name="h_t": h_t (B,D);
    attention: x, x_t): params against the caller's param_shapes(*sizes, *more), the
    inputs, the options (variant one of `variants`). Returns (D, dtype)."""
    if variants is not None:
        one_of(variant, "variant", variants)
        more = (variant,)
    D, dtype = block_params(block, params, param_shapes, *more)
    if block == "attention":
        init_args(dtype, d_model=D, n_heads=more[0])
    positive_int(window, "window", allow_none=True)
    if block in E_UNREAD or name != "h":
        hidden(h, D, dtype, name)
        if block in E_UNREAD and e is not None and not isinstance(e, np.ndarray):
            raise TypeError(f"e must be None or an array ({E_UNREAD[block]} does not read it), got {e!r}; "
                            "options such as top_k are keyword-only")
    else:                                                  # MoLE and MoLKV read h and e, both (B,T,D)
        float_input(h, "h", (None, None, D), dtype)
        float_input(e, "e", (None, None, D), dtype)
        if h.shape != e.shape:
            raise ValueError(f"h and e must have the same shape (B,T,D), got h {h.shape} and e {e.shape}")
    N = params["router"].shape[1] if block == "moe" else None
    if block == "moe" and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer))):
        raise TypeError(f"top_k must be an integer in [1, {N}], got {top_k!r}")
    if block == "moe" and not 1 <= top_k <= N:
        raise ValueError(f"top_k must be in [1, n_experts={N}], got {top_k}")
    return D, dtype


def block_lut(block, params, param_shapes, emb, *more):
    """build_lut: the block's params and the embedding table emb (V,D)."""
    D, dtype = block_params(block, params, param_shapes, *more)
    float_input(emb, "emb", (None, D), dtype)


def hidden(h, D, dtype, name="h"):
    """h (B,T,D), or a decode step's h_t (B,D), checked for its dims first (the message says which)."""
    array(h, name, ndim=2 if name.endswith("_t") else 3, floating=True)
    if h.shape[-1] != D:
        raise ValueError(f"{name} has {h.shape[-1]} features (last dim of shape {h.shape}), "
                         f"but the params have d_model={D}")
    float_input(h, name, h.shape[:-1] + (D,), dtype)


def lut_input(params, key, luts, widths, h, ids, *, step=False, extras=None):
    """forward_lut (h (B,T,D), ids (B,T)) or, step=True, decode_step (h_t (B,D), ids_t (B,)).
    At inference only `key` (router or query) and the variant's small `extras(D, N)`
    {key: shape} stay in RAM; the tables replace the rest. widths: {table: its last
    dim from (D, key's width)}. Returns (D, N, key's width, dtype)."""
    if not isinstance(params, dict) or key not in params:
        raise TypeError(f"params must be a dict holding {key!r}; at inference nothing else "
                        "is needed (the tables replace the expert FFNs)")
    array(params[key], f"params['{key}']", ndim=2, floating=True)
    (D, width), dtype = params[key].shape, params[key].dtype
    if not isinstance(luts, dict) or any(t not in luts for t in widths):
        raise TypeError(f"luts must be the dict from build_lut, with tables {list(widths)}, got {type(luts).__name__}")
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
            raise TypeError(f"{name} has dtype {table.dtype} but the parameters are {dtype}; dtypes are never mixed")
    V, N = luts[first].shape[:2]
    if key == "router" and N != width:
        raise ValueError(f"luts['{first}'] holds {N} experts but params['router'] routes to {width}")
    extra = extras(D, N) if extras else {}
    if extra and param_dict({k: params[k] for k in extra if k in params}, extra) != dtype:
        raise TypeError("params mixes dtypes; use one dtype for all")
    t = "_t" if step else ""                               # a decode step's h_t (B,D), ids_t (B,)
    float_input(h, "h" + t, (None,) * (2 - step) + (D,), dtype)
    token_ids(ids, V, "ids" + t, shape=h.shape[:-1])
    return D, N, width, dtype


def molkv_lut(params, h, ids, luts, window, variant, variants, state_type, *, state=None, step=False):
    """molkv.forward_lut, or step=True decode_step with its `state` (None or the
    `state_type` it returned, for the same batch, window and variant)."""
    one_of(variant, "variant", variants)
    extras = {"recency": lambda D, N: {"recency": (N,)}, "gated": lambda D, N: {"router": (D, N), "gate": (1,)}}
    D, N, Dk, dtype = lut_input(params, "query", luts, {"k": lambda D, Dk: Dk, "v": lambda D, Dk: D}, h, ids,
                                step=step, extras=extras.get(variant))
    positive_int(window, "window", allow_none=True)
    if step:
        decode_state(state, state_type, h.shape[0], dtype, (N, Dk, D), {"window": window, "variant": variant})


def ctxattn_decode(params, h_t, state, window, param_shapes, state_type):
    """ctxattn.decode_step: h_t (B,D), and the state it returned, for the same batch and window."""
    D, dtype = block_input("ctxattn", params, param_shapes, h_t, name="h_t", window=window)
    decode_state(state, state_type, h_t.shape[0], dtype, (1, params["query"].shape[1], D), {"window": window})


def decode_state(state, state_type, B, dtype, sizes, asked):
    """A decode step's state: None or the `state_type` decode_step returned, for the same batch B and options
    `asked` (window, variant), holding k_buffer (B,room,N,Dk), v_buffer (B,room,N,D) of `dtype`; sizes (N, Dk, D)."""
    if state is None:
        return
    if not isinstance(state, state_type):
        raise TypeError(f"state must be None or the {state_type.__name__} returned by decode_step")
    room = buffered(state, "state", 1).shape[:2]
    if room[0] != B:
        raise ValueError(f"state holds {room[0]} sequences but h_t has {B}; start a new state (None) for a new batch")
    built = {k: getattr(state, k) for k in asked}
    if built != asked:
        raise ValueError(f"{', '.join(f'{k}={v!r}' for k, v in asked.items())} but state was built with "
                         f"{', '.join(f'{k}={v!r}' for k, v in built.items())}; use the same for every step")
    for name, width in (("k_buffer", sizes[1]), ("v_buffer", sizes[2])):
        array(getattr(state, name), f"state.{name}", shape=room + (sizes[0], width))
        if getattr(state, name).dtype != dtype:
            raise TypeError(f"state.{name} holds {getattr(state, name).dtype} but the parameters are {dtype}; use one")


def buffered(state, name, axis):
    """A decode state's k_buffer, v_buffer (4 dims) and length, an integer in [0, the positions
    k_buffer holds on `axis`]: a step reads and appends there. Returns k_buffer."""
    for buffer in ("k_buffer", "v_buffer"):
        array(getattr(state, buffer), f"{name}.{buffer}", ndim=4)
    a, length = state.k_buffer, state.length
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or not 0 <= length <= a.shape[axis]:
        raise ValueError(f"{name}.length must be an integer in [0, {a.shape[axis]}] (the positions its buffers "
                         f"hold), got {length!r}; pass the {name} decode_step returned, unchanged")
    return a


def attention_decode(kv, kv_type, x_t, n_heads, max_len):
    """attention.decode_step's KV cache: None or the `kv_type` it returned, not yet full."""
    positive_int(max_len, "max_len", allow_none=True)
    if kv is None:
        return
    if not isinstance(kv, kv_type):
        raise TypeError("kv must be None or the KVCache returned by decode_step")
    buffered(kv, "kv", 2)
    array(kv.k, "kv.k", shape=(x_t.shape[0], n_heads, None, x_t.shape[1] // n_heads))
    array(kv.v, "kv.v", shape=kv.k.shape)
    if max_len is not None and kv.k.shape[2] >= max_len:
        raise ValueError(f"the cache already holds {kv.k.shape[2]} tokens, max_len={max_len}")


def cross_entropy(logits, targets):
    array(logits, "logits", floating=True)
    if logits.ndim < 1 or 0 in logits.shape:
        raise ValueError(f"logits must be (..., V): at least one token and V >= 1 classes, got shape {logits.shape}")
    token_ids(targets, logits.shape[-1], "targets", shape=logits.shape[:-1])
