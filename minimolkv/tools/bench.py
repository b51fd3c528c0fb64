"""Benchmarks: how fast the tiny model trains, infers from lookup tables and decodes.

Letters: B batch, T sequence length, D d_model, L layers, H heads, V vocabulary,
Fd dense FFN hidden size, N experts, F expert hidden size, Dk MoLKV key size,
M = B·T tokens in a batch.

For each kind (dense, moe, mole, molkv) of one config, `run` measures

  * the train step (forward + backward, float32, batch B x context_len): the
    median of timed repeats after a few warm-up steps, as tokens/s, and its
    achieved GFLOP/s against NumPy's matmul peak measured in the same run;
  * the model forward in inference mode (from lookup tables) against the
    train-mode forward, same batch: MoLE and MoLKV skip their expert FFNs;
  * decoding: generate.step at positions T, T+1, ... with T tokens already in
    the caches (attention KV cache and MoLKV key-value expert cache), batch 1;
  * minor page faults per train step (from resource.getrusage): memory.py
    keeps them at 0.

FLOPs are counted analytically, matmul/einsum contractions only (2·m·n·k per
product; elementwise work such as gelu, softmax and rmsnorm is not counted).
The forward of one batch, per part:

    attention projections   L · 2·M·D·(3D + D)              qkv and proj
    attention scores/values L · 2 · 2·B·T·T·D               the full T x T, masked half included
    dense FFN               L · 2·M·D·Fd · 2                up and down
    LM head                 2·M·D·V
    moe                     L · (2·M·D·N  +  2·M·N·F·D · 2  +  2·M·N·D)
                            router, expert FFNs, mixing. ALL N experts are
                            computed for every token (our dense teaching MoE;
                            a real one runs top_k): we count what is computed.
    mole                    L · (2·M·D·N  +  2·M·N·F·D · 2  +  2·M·N·D)
                            router, expert FFNs, mixing
    molkv                   L · (2·M·D·Dk  +  2·M·N·F·(D + Dk + D)  +  2·B·T·(T·N)·(Dk + D))
                            query, expert FFNs (up, down_k, down_v), scores
                            and values over the (T, N) key-value experts
    ctxattn (the control)   L · (2·M·D·(2·Dk + D)  +  2·B·T·T·(Dk + D))
                            query, key, value from h; scores and values
    LUT inference           the expert FFN terms drop out (mole keeps router +
                            mixing, molkv keeps query + scores/values)

The train step counts 3x the forward: every product y = a·b has two gradient
products of the same size (da, db), so backward = 2x forward. (One small
exception: the gradient of the mixing weights' *other* factor, du = s ⊗ dy in
moe/mole, is an outer product of M·N·D multiplies, counted as 2·M·N·D.)

Timings depend on what else runs: run on an idle machine (the report says how
much CPU other processes took meanwhile). The goals are reported, never enforced.
"""

import ctypes
import dataclasses
import os
import time
from dataclasses import dataclass

import numpy as np

from minimolkv import generate, memory, model

GOAL_PEAK_FRACTION = 0.35      # train step >= 35 % of the matmul peak
GOAL_LUT_SPEEDUP = 5.0         # LUT forward >= 5x faster than the train-mode forward
GOAL_DECODE_RATIO = 1.2        # decode ms/token at the long T within 1.2x of the short T


@dataclass(frozen=True)
class BenchSettings:
    """How much to measure (the model's sizes are in model.Config)."""
    batch_size: int = 16              # B of the train step and the forwards
    warmup: int = 3                   # untimed calls before timing
    repeats: int = 10                 # timed calls; the median is reported
    matmul_n: int = 2048              # the peak: an n x n float32 matmul...
    matmul_repeats: int = 5           # ...best of this many
    decode_T: tuple = (16, 256)       # cache lengths at which one decode step is timed
    decode_repeats: int = 30


QUICK = BenchSettings(batch_size=4, warmup=1, repeats=3, matmul_n=512, matmul_repeats=5,
                 decode_T=(4, 16), decode_repeats=5)
QUICK_SIZES = dict(vocab_size=64, context_len=16, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                   n_experts=2, d_expert=16, d_key=8)      # a tiny model for --quick and the tests


# ----------------------------------------------------------------------------
# FLOPs, counted analytically
# ----------------------------------------------------------------------------

def forward_flops(config, batch_size, seq_len, lut=False):
    """{part: FLOPs} of one model forward on a (batch_size, seq_len) batch.

    lut=True: inference from lookup tables (mole, molkv skip the expert FFNs).
    Formulas in the module docstring.
    """
    c = config
    B, T, D, L, N, F, Dk = batch_size, seq_len, c.d_model, c.n_layers, c.n_experts, c.d_expert, c.d_key
    M = B * T
    parts = {
        "attention projections": L * 2 * M * D * (3 * D + D),
        "attention scores/values": L * 2 * (2 * B * T * T * D),
        "dense FFN": L * 2 * M * D * c.d_ff * 2,
        "LM head": 2 * M * D * c.vocab_size,
    }
    expert_ffn = {"moe": 2 * M * N * F * D * 2, "mole": 2 * M * N * F * D * 2,
                  "molkv": 2 * M * N * F * (D + Dk + D)}
    if c.kind in ("moe", "mole"):
        parts["router"] = L * 2 * M * D * N
        parts["expert mixing"] = L * 2 * M * N * D
    elif c.kind == "molkv":
        parts["query"] = L * 2 * M * D * Dk
        parts["expert scores/values"] = L * 2 * B * T * (T * N) * (Dk + D)
    elif c.kind == "ctxattn":
        parts["context q/k/v"] = L * 2 * M * D * (2 * Dk + D)
        parts["context scores/values"] = L * 2 * B * T * T * (Dk + D)
    if c.kind in expert_ffn and not (lut and c.kind in ("mole", "molkv")):
        parts["expert FFNs"] = L * expert_ffn[c.kind]
    return parts


def train_step_flops(config, batch_size, seq_len):
    """FLOPs of forward + backward: 3x the train-mode forward (backward = 2x)."""
    return 3 * sum(forward_flops(config, batch_size, seq_len).values())


# ----------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------

def call_times(fn, warmup, repeats):
    """Seconds of each of `repeats` calls of fn(), after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_time(fn, warmup, repeats):
    """Seconds per call of fn(): the median of `repeats` calls after `warmup` untimed ones."""
    return float(np.median(call_times(fn, warmup, repeats)))


def matmul_rate(m, k, n, repeats):
    """GFLOP/s of an (m,k) @ (k,n) float32 matmul, best of `repeats` (after one warm-up)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    return 2 * m * k * n / min(call_times(lambda: a @ b, 1, repeats)) / 1e9


def decode_step_time(params, config, luts, T, repeats, rng):
    """Seconds per generate.step around position T, batch 1: the caches are filled
    with T tokens (untimed), then the steps at positions T, T+1, ..., T+repeats-1
    are timed one by one, as decoding runs them (so a cache buffer that doubles
    now and then costs what it costs on average); the median is returned.
    config.context_len must be at least T + repeats.
    """
    ids = rng.integers(0, config.vocab_size, size=(1, T + repeats))          # (1,T+repeats)
    layers = model.layer_params(params, config.n_layers)
    tables = model.layer_params(luts, config.n_layers)
    states = [{"attn": None} for _ in range(config.n_layers)]
    for t in range(T):
        generate.step(params, config, layers, tables, ids[:, t], t, states)
    times = []
    for t in range(T, T + repeats):
        start = time.perf_counter()
        generate.step(params, config, layers, tables, ids[:, t], t, states)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def block_times(params, config, luts, ids, settings):
    """(train-mode, LUT) seconds of layer 0's expert block alone, on the batch ids (B,T)."""
    c = config
    p = model.layer_params(params, c.n_layers)[0][c.kind]
    tables = model.layer_params(luts, c.n_layers)[0][c.kind]
    block, opts = model.BLOCKS[c.kind].module, model.options(c, c.kind)
    rng = np.random.default_rng(1)
    h = rng.standard_normal(ids.shape + (c.d_model,)).astype(np.float32)    # (B,T,D) any hidden state
    e = params["tok_emb"][ids]                                               # (B,T,D)
    train = lambda: block.forward(p, h, e, **opts)                           # noqa: E731
    lut = lambda: block.forward_lut(p, h, ids, tables, **opts)               # noqa: E731
    return (median_time(train, settings.warmup, settings.repeats),
            median_time(lut, settings.warmup, settings.repeats))


# ----------------------------------------------------------------------------
# the machine
# ----------------------------------------------------------------------------

def _openblas():
    """NumPy's loaded OpenBLAS as (get_num_threads, get_config) ctypes functions, or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
        for path in sorted(paths):
            lib = ctypes.CDLL(path)                    # already loaded: the same library handle
            for prefix in ("scipy_openblas_", "openblas_"):
                for suffix in ("64_", ""):
                    if hasattr(lib, prefix + "get_num_threads" + suffix):
                        threads = getattr(lib, prefix + "get_num_threads" + suffix)
                        config = getattr(lib, prefix + "get_config" + suffix, None)
                        if config is not None:
                            config.restype = ctypes.c_char_p
                        return threads, config
    except (OSError, ValueError):
        pass
    return None


def minor_faults():
    """Minor page faults of this process so far (resource.getrusage; None where there is none):
    a fault per page that freed-and-reallocated memory touches again (memory.py)."""
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    except (ImportError, AttributeError, OSError):
        return None


def cpu_seconds():
    """(CPU-seconds the whole machine has been busy, CPU-seconds of this process) so far.

    From /proc/stat (Linux; None elsewhere): the difference over a run tells how
    much of the CPUs *other* processes took meanwhile, i.e. how noisy the timings are.
    """
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]        # user nice system idle iowait ...
        busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
        return busy / os.sysconf("SC_CLK_TCK"), sum(os.times()[:2])
    except (OSError, ValueError, IndexError):
        return None


def environment():
    """NumPy version, BLAS, BLAS threads, CPUs and the load average (best effort)."""
    blas = "unknown BLAS"
    try:
        dep = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{dep.get('name', '?')} {dep.get('version', '')}".strip()
    except Exception:                                  # older numpy: no mode="dicts"
        pass
    threads, source = None, "unknown"
    found = _openblas()
    if found is not None:
        threads, source = int(found[0]()), "from OpenBLAS"
        if found[1] is not None:
            blas += f" ({found[1]().decode(errors='replace').strip()})"
    else:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            if os.environ.get(var, "").isdigit():
                threads, source = int(os.environ[var]), f"from {var}"
                break
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return {"numpy": np.__version__, "blas": blas, "threads": threads, "threads_source": source,
            "cpus": cpus, "load": load}


# ----------------------------------------------------------------------------
# the whole benchmark
# ----------------------------------------------------------------------------

def run(config, settings=BenchSettings(), kinds=model.KINDS, log=print):
    """Measure every kind of `config` (its kind is replaced). Returns a results dict
    for bench_report.format_report; `log` gets one progress line per measurement."""
    s = settings
    memory.keep_freed_memory()                                               # as every entry point does
    env = environment()
    cpu_start, wall_start = cpu_seconds(), time.perf_counter()
    B, T = s.batch_size, config.context_len
    log(f"numpy {env['numpy']}, {env['blas']}; BLAS threads {env['threads']} ({env['threads_source']}), "
        f"{env['cpus']} CPUs, load average {env['load']}")
    log(f"matmul peak: {s.matmul_n}x{s.matmul_n} float32, best of {s.matmul_repeats} ...")
    peak = matmul_rate(s.matmul_n, s.matmul_n, s.matmul_n, s.matmul_repeats)
    shape = (B * T, config.d_model, max(config.d_ff, config.d_expert))     # the FFN up-projection's shape
    at_shape = matmul_rate(*shape, 10 * s.matmul_repeats)
    log(f"  {peak:.1f} GFLOP/s; at the model's shape {shape[0]}x{shape[1]} @ {shape[1]}x{shape[2]}: "
        f"{at_shape:.1f} GFLOP/s")
    decode_config = dataclasses.replace(config, context_len=max(config.context_len,
                                                                max(s.decode_T) + s.decode_repeats))
    rows = {}
    for i, kind in enumerate(kinds):
        c = dataclasses.replace(config, kind=kind)
        params = model.init(c, seed=0)                                       # float32
        rng = np.random.default_rng(0)
        ids = rng.integers(0, c.vocab_size, size=(B, T))                     # (B,T)
        targets = rng.integers(0, c.vocab_size, size=(B, T))                 # (B,T)
        tag = f"[{i + 1}/{len(kinds)}] {kind}:"
        log(f"{tag} train step (forward + backward), {s.repeats} timed of {B}x{T} tokens ...")
        train_step = lambda: model.backward(model.forward(params, c, ids, targets)[2])   # noqa: E731
        call_times(train_step, s.warmup, 0)
        faults = minor_faults()
        step = float(np.median(call_times(train_step, 0, s.repeats)))
        flops = train_step_flops(c, B, T)
        row = {"step_s": step, "tokens_per_s": B * T / step, "train_flops": flops,
               "gflops": flops / step / 1e9, "peak_fraction": flops / step / 1e9 / peak,
               "faults_per_step": None if faults is None else (minor_faults() - faults) / s.repeats}
        log(f"{tag} forward, train mode ...")
        row["fwd_s"] = median_time(lambda: model.forward(params, c, ids), s.warmup, s.repeats)
        luts = model.build_luts(params, c)
        if luts:                                                             # mole, molkv
            log(f"{tag} forward from lookup tables, and the expert block alone ...")
            row["lut_fwd_s"] = median_time(lambda: model.forward(params, c, ids, luts=luts),
                                           s.warmup, s.repeats)
            row["lut_speedup"] = row["fwd_s"] / row["lut_fwd_s"]
            row["lut_flop_ratio"] = sum(forward_flops(c, B, T).values()) / \
                sum(forward_flops(c, B, T, lut=True).values())
            row["block_s"], row["block_lut_s"] = block_times(params, c, luts, ids, s)
            row["block_speedup"] = row["block_s"] / row["block_lut_s"]
        log(f"{tag} decode, one step at T = {', '.join(map(str, s.decode_T))} ...")
        dc = dataclasses.replace(decode_config, kind=kind)
        dparams = model.init(dc, seed=0)
        dluts = model.build_luts(dparams, dc)
        row["decode_ms"] = {t: 1e3 * decode_step_time(dparams, dc, dluts, t, s.decode_repeats, rng)
                            for t in s.decode_T}
        lo, hi = row["decode_ms"][min(s.decode_T)], row["decode_ms"][max(s.decode_T)]
        row["decode_ratio"] = hi / lo
        rows[kind] = row
    cpu_end, wall = cpu_seconds(), time.perf_counter() - wall_start
    others = None                                        # share of all CPUs other processes used
    if cpu_start is not None and cpu_end is not None:
        others = max(0.0, (cpu_end[0] - cpu_start[0]) - (cpu_end[1] - cpu_start[1])) / (wall * env["cpus"])
    return {"env": env, "others_cpu": others, "wall_s": wall, "config": config, "settings": s,
            "peak_gflops": peak, "shape": shape, "shape_gflops": at_shape, "rows": rows}
