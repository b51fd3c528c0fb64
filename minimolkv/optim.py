"""AdamW, the warmup + cosine learning-rate schedule, and global-norm clipping.

Plain functions over dicts of arrays. `params` and `grads` are dicts with the
same keys and shapes (flat, or nested one level or more: a nested dict is read
as if its keys were joined with dots, "layers.0" + "w" -> "layers.0.w").
Updates happen in place, so the model keeps holding the same arrays.

The optimizer state is a dict:
    {"t": number of steps taken,
     "m": {name: first moment,  same shape and dtype as the parameter},
     "v": {name: second moment, same shape and dtype as the parameter}}
state_to_arrays / state_from_arrays turn it into flat arrays for an .npz
checkpoint and back, bit for bit.
"""

import math

import numpy as np

from minimolkv import validate


def _leaves(tree, prefix=""):
    """(dotted name, array) for every array in a dict of arrays, nested or not."""
    if not isinstance(tree, dict):
        raise TypeError(f"expected a dict of arrays, got {type(tree).__name__}")
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _leaves(value, name + ".")
        else:
            if not isinstance(value, np.ndarray):
                raise TypeError(f"'{name}' must be a numpy array, got {type(value).__name__}")
            yield name, value


def _named(tree, what):
    try:
        return dict(_leaves(tree))
    except TypeError as err:
        raise TypeError(f"{what}: {err}") from None


def _check_number(value, name, low, high=math.inf, high_open=False):
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if not ok or not (low <= value and (value < high if high_open else value <= high)):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be a number in [{low}, {high}{bracket}, got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------
# AdamW (Loshchilov & Hutter): Adam plus weight decay applied to the weights
# directly, not through the gradient
# ----------------------------------------------------------------------------

def adamw_init(params):
    """Zero moments for every parameter array, step count 0."""
    named = _named(params, "params")
    for name, p in named.items():
        if p.dtype not in (np.float32, np.float64):
            raise TypeError(f"params['{name}'] must be float32 or float64, got dtype {p.dtype}")
    return {"t": 0,
            "m": {name: np.zeros_like(p) for name, p in named.items()},
            "v": {name: np.zeros_like(p) for name, p in named.items()}}


def adamw_step(params, grads, state, lr, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, *, check=True):
    """One AdamW step: updates params and state in place, returns nothing.

    For every parameter p with gradient g, at step t = 1, 2, ...:
        m = beta1 m + (1 - beta1) g                 first moment
        v = beta2 v + (1 - beta2) g^2               second moment
        m_hat = m / (1 - beta1^t)                   bias corrections: m and v
        v_hat = v / (1 - beta2^t)                   start at 0
        p = p - lr * weight_decay * p               only if p.ndim >= 2 (matrices);
                                                    never norm gains or other vectors
        p = p - lr * m_hat / (sqrt(v_hat) + eps)
    The decay uses p before this step's Adam update (as torch.optim.AdamW).
    Arithmetic stays in each parameter's dtype.
    check=False: the caller has checked these once already (train's first step does), and
    params and grads are flat dicts (the model's): nothing is walked or checked per step.
    """
    if check:
        params, grads = _named(params, "params"), _named(grads, "grads")
        _check_step(params, grads, state, lr, beta1, beta2, eps, weight_decay)

    state["t"] += 1
    t = state["t"]
    correction1 = 1.0 - beta1 ** t                          # scalar
    correction2 = 1.0 - beta2 ** t                          # scalar
    for name, p in params.items():
        g, m, v = grads[name], state["m"][name], state["v"][name]     # all shaped like p
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * (g * g)
        m_hat = m / correction1
        v_hat = v / correction2
        if p.ndim >= 2:
            p *= 1.0 - lr * weight_decay                    # decoupled weight decay
        p -= lr * m_hat / (np.sqrt(v_hat) + eps)


def _check_step(named_p, named_g, state, lr, beta1, beta2, eps, weight_decay):
    """adamw_step's inputs: matching keys, shapes and dtypes; numbers in range."""
    if not (isinstance(state, dict) and {"t", "m", "v"} <= set(state)):
        raise TypeError(f"state must be the dict made by adamw_init, got {type(state).__name__}")
    for what, names in (("grads", set(named_g)), ("state", set(state["m"]))):
        if names != set(named_p):
            raise ValueError(f"{what} must have the keys of params; it lacks "
                             f"{sorted(set(named_p) - names)} and has extra {sorted(names - set(named_p))}")
    _check_number(lr, "lr", 0.0)
    _check_number(beta1, "beta1", 0.0, 1.0, high_open=True)
    _check_number(beta2, "beta2", 0.0, 1.0, high_open=True)
    _check_number(eps, "eps", 0.0)
    _check_number(weight_decay, "weight_decay", 0.0)
    for name, p in named_p.items():
        others = (("grads", named_g[name]), ("state m", state["m"][name]), ("state v", state["v"][name]))
        for what, a in others:
            if a.shape != p.shape or a.dtype != p.dtype:
                raise ValueError(f"{what}['{name}'] has shape {a.shape} dtype {a.dtype}; "
                                 f"params['{name}'] has shape {p.shape} dtype {p.dtype}")


def state_to_arrays(state, prefix="adamw."):
    """The state as a flat {str: ndarray} for np.savez: prefix+"t", prefix+"m."+name, prefix+"v."+name.

    The prefix lets the same .npz hold the parameters too.
    """
    arrays = {f"{prefix}t": np.array(state["t"], dtype=np.int64)}
    for name in state["m"]:
        arrays[f"{prefix}m.{name}"] = state["m"][name]
        arrays[f"{prefix}v.{name}"] = state["v"][name]
    return arrays


def state_from_arrays(arrays, prefix="adamw."):
    """Inverse of state_to_arrays; `arrays` may be a dict or a loaded .npz. Keys
    without the prefix are ignored. The arrays are copied, values unchanged."""
    if f"{prefix}t" not in arrays:
        raise ValueError(f"arrays holds no optimizer state: key '{prefix}t' is missing")
    t = np.asarray(arrays[f"{prefix}t"])
    if t.shape != () or not np.issubdtype(t.dtype, np.integer) or t < 0:
        raise ValueError(f"'{prefix}t' must be one integer >= 0 (the step count), got {t.dtype} {t.shape}")
    state = {"t": int(t), "m": {}, "v": {}}
    for key in arrays:
        for moment in ("m", "v"):
            if key.startswith(f"{prefix}{moment}."):
                state[moment][key[len(prefix) + 2:]] = np.array(arrays[key])
    if set(state["m"]) != set(state["v"]):
        raise ValueError(f"arrays holds first and second moments for different parameters: "
                         f"{sorted(set(state['m']) ^ set(state['v']))}")
    return state


# ----------------------------------------------------------------------------
# learning-rate schedule and gradient clipping
# ----------------------------------------------------------------------------

def lr_schedule(step, max_steps, lr, warmup_steps, min_lr_ratio=0.1, *, check=True):
    """Learning rate for `step` (counted from 0): linear warmup, then cosine decay.

        step < warmup_steps:  lr * (step + 1) / warmup_steps   (lr at the last warmup step)
        afterwards:           min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2,
                              progress = (step - warmup_steps) / (max_steps - 1 - warmup_steps)
                              going 0 -> 1, so the last step, max_steps - 1, uses min_lr
        min_lr = min_lr_ratio * lr; steps past the end stay at min_lr.
    check=False: the caller has checked the arguments once (train's first step does).
    """
    if check:
        _check_schedule(step, max_steps, lr, warmup_steps, min_lr_ratio)
    min_lr = lr * min_lr_ratio
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_steps = max_steps - 1 - warmup_steps
    progress = min(1.0, (step - warmup_steps) / decay_steps) if decay_steps > 0 else 1.0
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _check_schedule(step, max_steps, lr, warmup_steps, min_lr_ratio):
    """lr_schedule's arguments: integers and numbers in range."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    max_steps = validate.positive_int(max_steps, "max_steps")
    _check_number(lr, "lr", 0.0)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, (int, np.integer)) \
            or not 0 <= warmup_steps < max_steps:
        raise ValueError(f"warmup_steps must be an integer in [0, max_steps={max_steps}), "
                         f"got {warmup_steps!r}")
    _check_number(min_lr_ratio, "min_lr_ratio", 0.0, 1.0)


def clip_grad_norm(grads, max_norm, *, check=True):
    """Scale all gradients together so their global L2 norm is at most max_norm.

    Returns the norm before clipping (a float; summed in float64). Gradients
    are scaled in place by max_norm / norm when norm > max_norm. A non-finite
    norm (inf/nan gradients) is returned as is and nothing is scaled, so the
    caller can see it and skip the step.
    check=False: grads is a flat dict and max_norm was checked once (train's first step).
    """
    if check:
        grads = _named(grads, "grads")
        if _check_number(max_norm, "max_norm", 0.0) <= 0:
            raise ValueError(f"max_norm must be > 0, got {max_norm}")
    total = 0.0
    for g in grads.values():
        total += float(np.sum(np.square(g, dtype=np.float64)))   # summed in float64
    norm = math.sqrt(total)
    if math.isfinite(norm) and norm > max_norm:
        scale = max_norm / norm
        for g in grads.values():
            g *= scale                                       # in place, dtype kept
    return norm
