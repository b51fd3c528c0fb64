"""Input validation: every bad input becomes a ValueError/TypeError that names
the argument, says what was given and what is allowed.

The layers call these at their public entry points so that a reader never
meets a bare NumPy broadcasting error from deep inside a forward pass.
"""

import numpy as np


def check_array(x, name, ndim=None, shape=None, floating=False):
    """Check that `x` is an ndarray of `ndim` dims and, where given, `shape`.

    `shape` may hold None for "any size" in a position, e.g. (None, None, 64).
    With `floating=True` the dtype must be float32 or float64.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if floating and x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {x.shape}")
    if shape is not None:
        ok = len(shape) == x.ndim and all(s is None or s == g for s, g in zip(shape, x.shape))
        if not ok:
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {x.shape}")
    return x


def check_input(x, name, shape, dtype):
    """A layer's input: a float array of `shape` (None = any size, but never 0)
    in the parameters' dtype — dtypes are never mixed silently."""
    check_array(x, name, shape=shape, floating=True)
    if x.dtype != dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the parameters are {dtype}; "
                        "convert one of them, dtypes are never mixed")
    if 0 in x.shape:
        raise ValueError(f"{name} must not be empty, got shape {x.shape}")
    return x


def check_ids(ids, vocab_size, name="ids"):
    """Token ids: an integer array with every value in [0, vocab_size)."""
    if not isinstance(ids, np.ndarray):
        raise TypeError(f"{name} must be a numpy integer array, got {type(ids).__name__}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{name} must hold integers (token ids), got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = ids[(ids < 0) | (ids >= vocab_size)].ravel()[0]
        raise ValueError(f"{name} holds token id {bad}, outside the vocabulary [0, {vocab_size})")
    return ids


def check_params(params, shapes, name="params"):
    """Check a parameter dict against {key: expected shape}; one dtype for all."""
    if not isinstance(params, dict):
        raise TypeError(f"{name} must be a dict of arrays, got {type(params).__name__}")
    missing = [k for k in shapes if k not in params]
    if missing:
        raise ValueError(f"{name} is missing {missing}; expected keys {list(shapes)}")
    dtypes = set()
    for key, shape in shapes.items():
        check_array(params[key], f"{name}['{key}']", shape=shape, floating=True)
        dtypes.add(params[key].dtype)
    if len(dtypes) > 1:
        raise TypeError(f"{name} mixes dtypes {sorted(map(str, dtypes))}; use one dtype for all")
    return dtypes.pop()


def check_positive_int(value, name, allow_none=False):
    """An integer >= 1 (numpy integers too); bool is refused."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        allowed = "an integer >= 1" + (" or None" if allow_none else "")
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)
