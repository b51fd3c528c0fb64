"""The text report of `python -m minimolkv bench`: the tables and the goals.

bench.run measures; format_report(results) turns its dict into the printed
report (environment and noise note, train step, FLOPs by part, LUT forward,
decode, goals).
"""

import dataclasses
import math

from minimolkv.tools.bench import GOAL_DECODE_RATIO, GOAL_LUT_SPEEDUP, GOAL_PEAK_FRACTION, forward_flops


def _table(header, rows):
    """Left-aligned first column, right-aligned others."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)   # noqa: E731
                              for i, (v, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _noise_note(others, threads):
    if others is None:
        return "Timings are noisy when anything else runs: run on an idle machine."
    if others < 0.05:
        return (f"Other processes used {100 * others:.0f}% of the CPUs during the run: the machine looked "
                "idle (good: benchmarks need an idle machine).")
    hint = "" if threads == 1 else (" Multi-threaded BLAS suffers most when another process holds a core; "
                                    "OPENBLAS_NUM_THREADS=1 gives steadier single-core numbers.")
    return (f"Other processes used {100 * others:.0f}% of the CPUs during the run: the machine was BUSY, "
            f"so these numbers are noisy: rerun on an idle machine.{hint}")


def _met(ok):
    return "yes" if ok else "NO"


def _header(results):
    c, s, env = results["config"], results["settings"], results["env"]
    m, k, n = results["shape"]
    return [
        f"minimolkv bench — numpy {env['numpy']}, {env['blas']}",
        f"BLAS threads: {env['threads']} ({env['threads_source']}); CPUs: {env['cpus']}; "
        f"load average (1 min) at the start {env['load']}; {results['wall_s']:.0f} s in all",
        _noise_note(results["others_cpu"], env["threads"]),
        f"Config: V={c.vocab_size} T={c.context_len} D={c.d_model} L={c.n_layers} H={c.n_heads} "
        f"d_ff={c.d_ff} N={c.n_experts} F={c.d_expert} Dk={c.d_key} window={c.window} top_k={c.top_k} "
        f"molkv variant={c.variant}; "
        "float32",
        f"Matmul peak: {s.matmul_n}x{s.matmul_n} float32 @, best of {s.matmul_repeats}: "
        f"{results['peak_gflops']:.1f} GFLOP/s. At this model's FFN shape "
        f"{m}x{k} @ {k}x{n}: {results['shape_gflops']:.1f} GFLOP/s "
        f"({100 * results['shape_gflops'] / results['peak_gflops']:.0f}% of the peak).",
    ]


def _train_table(results):
    r, s, B, T = results["rows"], results["settings"], results["settings"].batch_size, results["config"].context_len
    return [
        f"Train step = forward + backward on {B}x{T} tokens, median of {s.repeats} after {s.warmup} "
        "warm-up. GFLOP = matmul FLOPs (3x forward); moe counts all N experts (computed densely here).",
        _table(["kind", "tokens/s", "step ms", "GFLOP", "GFLOP/s", "% peak", "page faults/step"],
               [[k, f"{v['tokens_per_s']:,.0f}", f"{1e3 * v['step_s']:.1f}", f"{v['train_flops'] / 1e9:.3f}",
                 f"{v['gflops']:.1f}", f"{100 * v['peak_fraction']:.1f}",
                 "-" if v["faults_per_step"] is None else f"{v['faults_per_step']:,.0f}"] for k, v in r.items()]),
    ]


def _flops_table(results):
    """Forward MFLOP per part (train mode), one column per kind."""
    c, B, r = results["config"], results["settings"].batch_size, results["rows"]
    per_kind = {k: forward_flops(dataclasses.replace(c, kind=k), B, c.context_len) for k in r}
    parts = list(dict.fromkeys(p for f in per_kind.values() for p in f))
    return [
        f"Forward matmul MFLOP by part, {B}x{c.context_len} tokens (formulas in bench.py's docstring):",
        _table(["part"] + list(r), [[p] + [f"{per_kind[k][p] / 1e6:.3g}" if p in per_kind[k] else "-"
                                           for k in r] for p in parts]),
    ]


def _lut_table(results):
    r, B, T = results["rows"], results["settings"].batch_size, results["config"].context_len
    rows = [[k, f"{1e3 * v['fwd_s']:.2f}", f"{1e3 * v['lut_fwd_s']:.2f}", f"{v['lut_speedup']:.2f}x",
             f"{v['lut_flop_ratio']:.2f}x", f"{1e3 * v['block_s']:.2f}", f"{1e3 * v['block_lut_s']:.2f}",
             f"{v['block_speedup']:.1f}x"] for k, v in r.items() if "lut_fwd_s" in v]
    return [
        f"Forward on {B}x{T} tokens, train mode vs from lookup tables (model.forward with luts). 'FLOPs' = "
        "the train/LUT ratio of matmul FLOPs; 'block' = layer 0's expert block alone.",
        _table(["kind", "train ms", "LUT ms", "speed-up", "FLOPs", "block ms", "block LUT ms", "block speed-up"],
               rows or [["(no mole/molkv)"] + [""] * 7]),
    ]


def _decode_table(results):
    r, s = results["rows"], results["settings"]
    t_lo, t_hi = min(s.decode_T), max(s.decode_T)
    return [
        f"Decode: generate.step at positions T .. T+{s.decode_repeats - 1} after T tokens, batch 1, "
        f"median of the {s.decode_repeats} steps (mole/molkv from lookup tables).",
        _table(["kind"] + [f"ms/token T={t}" for t in s.decode_T] + [f"T={t_hi} / T={t_lo}"],
               [[k] + [f"{v['decode_ms'][t]:.3f}" for t in s.decode_T] + [f"{v['decode_ratio']:.2f}x"]
                for k, v in r.items()]),
    ]


def _goals_table(results):
    r, s = results["rows"], results["settings"]
    t_lo, t_hi = min(s.decode_T), max(s.decode_T)

    def cells(fmt, key, ok):                        # one cell per kind; "-" where not measured
        return [fmt(r[k][key]) + " " + _met(ok(r[k][key])) if key in r[k] else "-" for k in r]

    rows = [
        [f"train step >= {100 * GOAL_PEAK_FRACTION:.0f}% of matmul peak"] +
        cells(lambda x: f"{100 * x:.1f}%", "peak_fraction", lambda x: x >= GOAL_PEAK_FRACTION),
        [f"LUT forward >= {GOAL_LUT_SPEEDUP:.0f}x faster"] +
        cells(lambda x: f"{x:.2f}x", "lut_speedup", lambda x: x >= GOAL_LUT_SPEEDUP),
        ["  (train/LUT forward FLOP ratio)"] +
        [f"{r[k]['lut_flop_ratio']:.2f}x" if "lut_flop_ratio" in r[k] else "-" for k in r],
        [f"  expert block alone >= {GOAL_LUT_SPEEDUP:.0f}x"] +
        cells(lambda x: f"{x:.1f}x", "block_speedup", lambda x: x >= GOAL_LUT_SPEEDUP),
        [f"decode T={t_hi} within {GOAL_DECODE_RATIO:g}x of T={t_lo}"] +
        cells(lambda x: f"{x:.2f}x", "decode_ratio", lambda x: x <= GOAL_DECODE_RATIO),
    ]
    out = ["Goals (reported, never enforced):", _table(["goal"] + list(r), rows)]
    if any(v.get("lut_flop_ratio", math.inf) < GOAL_LUT_SPEEDUP for v in r.values()):
        out.append("By matmul FLOPs the whole-model LUT goal is out of reach at these sizes: attention, the "
                   "dense FFN and the head remain (Amdahl); it needs the expert FFNs to dominate the model.")
    return out


def format_report(results):
    """The tables and the goals, as one printable string."""
    sections = [_header(results), _train_table(results), _flops_table(results), _lut_table(results),
                _decode_table(results), _goals_table(results)]
    return "\n\n".join("\n".join(lines) for lines in sections)
