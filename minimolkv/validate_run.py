"""Input validation of a whole model and a training run (model.init, forward, backward, build_luts,
generate; a run's Settings, DataSpec and saved optimizer state), by validate.py's rules and from
its basic checks; what a check compares against comes from the caller."""

import math

import numpy as np

from minimolkv.validate import init_args, one_of, param_dict, positive_int, token_ids, whole


def non_negative_int(value, name, note=""):
    """An integer >= 0 (numpy integers too); bool is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0{note}, got {value!r}")


# --- the model and generation: shapes come from the caller (model.param_shapes, lut_shapes) ---

def config(c, kinds, variants):
    """A model.Config's fields: sizes >= 1, d_ff >= 0, a known kind and variant, heads dividing d_model."""
    one_of(c.kind, "kind", kinds)
    one_of(c.variant, "variant", variants)
    for name in ("vocab_size", "context_len", "d_model", "n_layers", "n_heads",
                 "n_experts", "d_expert", "d_key", "top_k"):
        positive_int(getattr(c, name), name)
    non_negative_int(c.d_ff, "d_ff", " (0: no dense FFN)")
    positive_int(c.window, "window", allow_none=True)
    if c.d_model % c.n_heads:
        raise ValueError(f"n_heads={c.n_heads} must divide d_model={c.d_model}")
    if c.top_k > c.n_experts:
        raise ValueError(f"top_k={c.top_k} must be <= n_experts={c.n_experts}")


def model_init(seed, dtype):
    """model.init: an integer seed >= 0 and a float dtype, as every block's init."""
    non_negative_int(seed, "seed")
    init_args(dtype)


def model_cache(cache, cache_type, dloss):
    """model.backward: the whole `cache_type` of a training-mode forward with targets, a finite dloss."""
    if not isinstance(cache, cache_type) or cache.loss is None:
        got = "one without targets (loss None)" if isinstance(cache, cache_type) else type(cache).__name__
        raise TypeError(f"cache must be the {cache_type.__name__} of a training-mode model.forward (luts=None) "
                        f"with targets, got {got}")
    whole(cache, "cache")
    if not isinstance(cache.layers, list) or len(cache.layers) != cache.config.n_layers:
        raise ValueError(f"cache.layers must hold the {cache.config.n_layers} layers' caches, as forward made them")
    for l, layer in enumerate(cache.layers):
        whole(layer, f"cache.layers[{l}]")
    _number(dloss, "dloss", "a finite number", lambda v: True)


def model_params(params, config, expected):
    """params: exactly the dict model.init(config) makes (`expected` = model.param_shapes(config))."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be the dict from model.init, got {type(params).__name__}")
    extra = sorted(set(params) - set(expected))
    try:
        if extra:
            raise ValueError(f"unexpected {extra[0]!r}")
        return param_dict(params, expected)
    except ValueError as err:
        raise ValueError(f"params do not fit this config (kind={config.kind!r}): {err}") from None


def model_luts(config, luts, dtype, expected):
    """luts: exactly the tables model.build_luts makes (`expected` = model.lut_shapes(config)), in the
    parameters' dtype (never mixed: float32 parameters with float64 tables would compute in float64)."""
    if luts is None:
        return
    if not isinstance(luts, dict):
        raise TypeError(f"luts must be the dict from build_luts, got {type(luts).__name__}")
    if not expected:
        raise ValueError(f"luts are for mole and molkv models; this model's kind is {config.kind!r}")
    for name, shape in expected.items():
        if name not in luts:
            raise ValueError(f"luts were built for another config: no table {name!r} "
                             f"(this config has {sorted(expected)})")
        if tuple(luts[name].shape) != shape:
            raise ValueError(f"luts were built for another config: {name!r} has shape "
                             f"{tuple(luts[name].shape)}, this config needs {shape}")
        if getattr(luts[name], "dtype", None) != dtype:
            raise TypeError(f"luts[{name!r}] has dtype {getattr(luts[name], 'dtype', None)} but the "
                            f"parameters are {dtype}; dtypes are never mixed")


def model_forward(params, config, ids, targets, luts, shapes, table_shapes):
    """ids (B,T) within the vocabulary and the context, targets like ids, params and luts
    that fit the config (shapes, table_shapes: model.param_shapes, lut_shapes of it)."""
    token_ids(ids, config.vocab_size, "ids")
    if ids.ndim != 2 or 0 in ids.shape:
        raise ValueError(f"ids must be a (B,T) array of token ids, B >= 1 and T >= 1, got shape {ids.shape}")
    if ids.shape[1] > config.context_len:
        raise ValueError(f"ids has T={ids.shape[1]} tokens, longer than context_len={config.context_len}")
    if targets is not None:
        token_ids(targets, config.vocab_size, "targets")
        if targets.shape != ids.shape:
            raise ValueError(f"targets must have the shape of ids {ids.shape}, got {targets.shape}")
    model_luts(config, luts, model_params(params, config, shapes), table_shapes)


def generate_args(params, config, prompt, n_tokens, temperature, top_k, luts, shapes, table_shapes):
    """prompt (B,T0) non-empty ids, n_tokens >= 0, temperature finite >= 0, top_k None or >= 1."""
    token_ids(prompt, config.vocab_size, "prompt_ids")
    if prompt.ndim != 2 or 0 in prompt.shape:
        raise ValueError(f"prompt_ids must be a (T0,) or (B,T0) array, T0 >= 1 and B >= 1, got shape {prompt.shape}")
    non_negative_int(n_tokens, "n_tokens")
    _number(temperature, "temperature", "a finite number >= 0", lambda v: v >= 0)
    positive_int(top_k, "top_k", allow_none=True)
    model_luts(config, luts, model_params(params, config, shapes), table_shapes)


# --- training: settings, the data spec, a checkpoint's optimizer state ---

def _number(value, name, allowed, ok):
    """A real number (not bool) for which ok(value) holds; `allowed` says which in the message."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or not ok(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def settings(s):
    """train.Settings: counts >= 1, lr and clip finite > 0, min_lr_ratio in [0, 1],
    weight_decay finite >= 0, warmup an integer >= 0, a float dtype."""
    for name in ("steps", "batch_size", "eval_every", "eval_batches"):
        positive_int(getattr(s, name), name)
    for name in ("lr", "clip"):
        _number(getattr(s, name), name, "a finite number > 0", lambda v: v > 0)
    _number(s.min_lr_ratio, "min_lr_ratio", "a number in [0, 1]", lambda v: 0 <= v <= 1)
    _number(s.weight_decay, "weight_decay", "a finite number >= 0", lambda v: v >= 0)
    non_negative_int(s.warmup, "warmup")
    non_negative_int(s.seed, "seed")
    one_of(s.dtype, "dtype", ("float32", "float64"))


def data_spec(d):
    """data.DataSpec: a name (str), a tokenizer 'bpe' or 'byte', vocab_size >= 1, seed >= 0."""
    if not isinstance(d.name, str) or not d.name:
        raise ValueError(f"the data name must be 'shakespeare', 'stdlib', 'synthetic' or a path, got {d.name!r}")
    one_of(d.tokenizer, "tokenizer", ("bpe", "byte"))
    positive_int(d.vocab_size, "vocab_size")
    non_negative_int(d.seed, "seed")


def optimizer_state(opt, params, step):
    """A checkpoint's AdamW state must fit its parameters: one first and one second moment per
    parameter, of its shape and dtype, second moments >= 0, one AdamW step per step (t == step)."""
    for moment in ("m", "v"):
        if set(opt[moment]) != set(params):
            missing, extra = sorted(set(params) - set(opt[moment])), sorted(set(opt[moment]) - set(params))
            raise ValueError(f"the AdamW state does not fit the parameters: adamw.{moment} "
                             + (f"lacks {missing}" if missing else f"has extra {extra}")
                             + "; it must hold one array per parameter, named like them")
        for name, a in opt[moment].items():
            if a.shape != params[name].shape or a.dtype != params[name].dtype:
                raise ValueError(f"adamw.{moment}.{name} has shape {a.shape} dtype {a.dtype}; it must match "
                                 f"params.{name}, shape {params[name].shape} dtype {params[name].dtype}")
    negative = [name for name, v in opt["v"].items() if (v < 0).any()]
    if negative:
        raise ValueError(f"adamw.v.{negative[0]} holds negative values; second moments are >= 0")
    if opt["t"] != step:
        raise ValueError(f"adamw.t = {opt['t']} but the checkpoint is at step {step}; "
                         "AdamW takes one step per training step")
