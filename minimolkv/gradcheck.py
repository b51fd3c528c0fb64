"""Numerical gradient checks and their per-tensor report.

How a check works (the same recipe for every layer):

1. Build float64 inputs and *non-trivial* parameters (no zeros, norm gains
   != 1) from a seeded generator.
2. Draw a *random* upstream gradient `dout` with the output's shape. Never
   all-ones: softmax's input gradient is exactly 0 under all-ones (each row
   of p sums to 1), so a wrong softmax backward passes; and a backward that
   forgets to multiply by dout is invisible when dout is 1 (lesson 00 shows both).
3. Analytic gradient: run forward, then backward(dout).
4. Numerical gradient of  L(x) = sum(forward(x) * dout)  by centred
   differences,  (L(x + h) - L(x - h)) / 2h  with h = 1e-5, one entry at a time.
5. Compare with  rel_error(a, b) = max|a - b| / max(1e-8, max(|a| + |b|)).

The result is one Row per tensor: name, shape, worst relative error, pass/fail.
The layer-specific set-ups live in `minimolkv/gradcheck_layers.py`.
"""

from dataclasses import dataclass

import numpy as np

H = 1e-5            # centred-difference step
# Why these tolerances. A centred difference has two errors: truncation,
# about h^2 |f'''| / 6 ~ 1e-11 relative for functions of order 1, and
# rounding, about eps |f| / h = 1e-16 / 1e-5 ~ 1e-11. A correct layer
# therefore agrees to 1e-9 .. 1e-12 (the report shows it), and a wrong one --
# a forgotten term, a transposed matrix -- is off by 1e-3 or more.
LAYER_TOL = 1e-7    # one layer in float64: 100x above what a correct layer shows, far below a bug
# The whole model's check differentiates one scalar, the mean loss over B*T
# tokens: nudging one parameter by h moves it by ~1e-7, so L(x+h) - L(x-h)
# cancels most of its digits (rounding ~ eps |L| / h ~ 5e-11 absolute) while
# many gradient entries are themselves ~1e-4 (a mean over tokens). That costs
# about two digits, hence 100x looser. Measured worst: ~1e-8.
MODEL_TOL = 1e-5    # the whole model in float64


@dataclass
class Row:
    """One line of the report: a tensor and how well its gradient matched."""
    name: str
    shape: tuple
    error: float          # max relative error over the checked entries
    tol: float
    checked: int          # how many entries were perturbed

    @property
    def passed(self):
        return bool(self.error < self.tol)


def rel_error(a, b):
    """max|a - b| / max(1e-8, max(|a| + |b|)) — one number for a whole tensor."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(1e-8, float(np.max(np.abs(a) + np.abs(b)))))


def numerical_gradient(f, x, dout, indices=None, h=H):
    """Centred-difference gradient of  sum(f() * dout)  with respect to x.

    f      a function of no arguments that reads x (perturbed here in place)
    x      float64 array
    dout   the upstream gradient, same shape as f()'s output
    indices  flat indices into x to check (default: every entry)
    Returns the numerical gradient at those indices, shape (len(indices),).
    """
    if x.dtype != np.float64:
        raise TypeError(f"gradient checks run in float64, got a {x.dtype} tensor")
    flat = x.reshape(-1)                    # a view: writing flat[i] perturbs x
    if indices is None:
        indices = np.arange(flat.size)
    grad = np.empty(len(indices))
    for k, i in enumerate(indices):
        old = flat[i]
        flat[i] = old + h
        plus = np.sum(f() * dout)
        flat[i] = old - h
        minus = np.sum(f() * dout)
        flat[i] = old                       # restore exactly
        grad[k] = (plus - minus) / (2 * h)
    return grad


def compare(f, tensors, analytic, dout, tol=LAYER_TOL, max_entries=None, seed=0):
    """Check analytic gradients against numerical ones, one Row per tensor.

    f         function of no arguments -> output array (reads `tensors`)
    tensors   {name: float64 array}, the arrays to perturb (inputs and params)
    analytic  {name: gradient array}, the backward's answer, same shapes
    dout      the random upstream gradient used for `analytic`
    max_entries  check at most this many randomly chosen entries per tensor
    """
    rng = np.random.default_rng(seed)
    rows = []
    for name, x in tensors.items():
        g = np.asarray(analytic[name])
        if g.shape != x.shape:
            raise ValueError(f"gradient of {name} has shape {g.shape}, its tensor {x.shape}")
        idx = np.arange(x.size)
        if max_entries is not None and x.size > max_entries:
            idx = np.sort(rng.choice(x.size, size=max_entries, replace=False))
        num = numerical_gradient(f, x, dout, idx)
        rows.append(Row(name, x.shape, rel_error(g.reshape(-1)[idx], num), tol, len(idx)))
    return rows


def check_pair(forward, backward, inputs, seed=0, tol=LAYER_TOL, prefix=""):
    """Check a primitive pair  out, cache = forward(*inputs);  backward(dout, cache).

    `inputs` is an ordered dict {name: array}; backward must return one
    gradient per input, in the same order (a bare array when there is one).
    """
    rng = np.random.default_rng(seed)
    args = list(inputs.values())
    out, cache = forward(*args)
    dout = rng.standard_normal(np.shape(out))
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    analytic = {prefix + k: g for k, g in zip(inputs, grads)}
    tensors = {prefix + k: v for k, v in inputs.items()}
    return compare(lambda: forward(*args)[0], tensors, analytic, dout, tol)


def check_block(forward, backward, params, inputs, seed=0, tol=LAYER_TOL,
                prefix="", **kwargs):
    """Check a block  y, cache = forward(params, *inputs, **kwargs);
    (*d_inputs, grads) = backward(dy, cache).

    Every input in the ordered dict `inputs` and every parameter is checked.
    """
    rng = np.random.default_rng(seed)
    args = list(inputs.values())
    y, cache = forward(params, *args, **kwargs)
    dy = rng.standard_normal(y.shape)
    *d_inputs, grads = backward(dy, cache)
    analytic = {prefix + k: g for k, g in zip(inputs, d_inputs)}
    analytic.update({prefix + k: grads[k] for k in params})
    tensors = {prefix + k: v for k, v in inputs.items()}
    tensors.update({prefix + k: v for k, v in params.items()})
    return compare(lambda: forward(params, *args, **kwargs)[0], tensors, analytic, dy, tol)


def format_table(rows, title=None):
    """The report: one line per tensor, like `cmp` in makemore part 4."""
    width = max([len(r.name) for r in rows] + [6])
    lines = [title] if title else []
    lines.append(f"{'tensor':<{width}}  {'shape':<16} {'checked':>7}  {'max rel err':>11}  result")
    for r in rows:
        shape = str(tuple(r.shape)).replace(" ", "")
        verdict = "ok" if r.passed else f"FAIL (tol {r.tol:.0e})"
        lines.append(f"{r.name:<{width}}  {shape:<16} {r.checked:>7}  {r.error:>11.2e}  {verdict}")
    return "\n".join(lines)
