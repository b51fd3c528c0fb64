"""bench.py: the quick benchmark runs and reports every kind; the FLOP counter matches a hand count."""

import dataclasses
import math

from minimolkv import model
from minimolkv.tools import bench, bench_report
from minimolkv.__main__ import main


def test_quick_bench_reports_every_kind_with_finite_positive_numbers():
    lines = []
    results = bench.run(model.Config(**bench.QUICK_SIZES), bench.QUICK, log=lines.append)
    assert lines and results["peak_gflops"] > 0 and results["shape_gflops"] > 0
    assert list(results["rows"]) == list(model.KINDS)
    for kind, row in results["rows"].items():
        numbers = [row["step_s"], row["tokens_per_s"], row["train_flops"], row["gflops"],
                   row["peak_fraction"], row["fwd_s"], row["decode_ratio"], *row["decode_ms"].values()]
        if kind in ("mole", "molkv"):
            numbers += [row[k] for k in ("lut_fwd_s", "lut_speedup", "lut_flop_ratio", "block_s",
                                         "block_lut_s", "block_speedup")]
        else:
            assert "lut_fwd_s" not in row                  # dense and moe have no lookup tables
        assert all(math.isfinite(x) and x > 0 for x in numbers), (kind, row)
    report = bench_report.format_report(results)
    header, train, flops, lut, decode, goals = report.split("\n\n")
    first_cells = lambda section: [line.split()[0] for line in section.splitlines()[3:]]  # noqa: E731
    assert first_cells(train) == first_cells(decode) == list(model.KINDS)
    assert first_cells(lut) == ["mole", "molkv"]
    assert flops.splitlines()[1].split()[1:] == goals.splitlines()[1].split()[1:] == list(model.KINDS)
    assert "idle machine" in report and "Goals" in report and "GFLOP/s" in report


def test_bench_command_quick(capsys):
    assert main(["bench", "--quick", "--kinds", "dense", "molkv"]) == 0
    out = capsys.readouterr().out
    assert "tokens/s" in out and "ms/token" in out and "LUT forward >= 5x faster" in out


def test_flop_count_of_a_one_layer_dense_model_by_hand():
    c = model.Config(kind="dense", vocab_size=10, context_len=4, d_model=8, n_layers=1, n_heads=2, d_ff=16)
    B, T = 2, 4                                            # M = 8 tokens
    by_hand = (2 * 8 * 8 * 24          # qkv: (8 tokens, D=8) @ (8, 3D=24)
               + 2 * 2 * 4 * 4 * 8     # scores: B=2 batches x (T=4 x hs) @ (hs x T=4) summed over H heads: hs*H = D = 8
               + 2 * 2 * 4 * 4 * 8     # values: P (4 x 4) @ v (4 x hs), every head
               + 2 * 8 * 8 * 8         # proj: (8, 8) @ (8, 8)
               + 2 * 8 * 8 * 16        # ffn up: (8, 8) @ (8, 16)
               + 2 * 8 * 16 * 8        # ffn down: (8, 16) @ (16, 8)
               + 2 * 8 * 8 * 10)       # head: (8, 8) @ (8, V=10)
    assert by_hand == 10496
    assert sum(bench.forward_flops(c, B, T).values()) == by_hand
    assert bench.train_step_flops(c, B, T) == 3 * by_hand          # backward = 2x forward


def test_flop_count_of_the_expert_blocks_by_hand():
    dense = model.Config(kind="dense", vocab_size=10, context_len=4, d_model=8, n_layers=1, n_heads=2,
                         d_ff=16, n_experts=3, d_expert=5, d_key=4, top_k=1)
    base = sum(bench.forward_flops(dense, 2, 4).values())
    M, N, D, F, Dk, B, T = 8, 3, 8, 5, 4, 2, 4
    mole_experts = 2 * M * D * N + 2 * M * N * D * F + 2 * M * N * F * D + 2 * M * N * D  # router, up, down, mix
    molkv_lut = 2 * M * D * Dk + 2 * B * T * (T * N) * Dk + 2 * B * T * (T * N) * D     # query, scores, values
    molkv_ffn = 2 * M * N * D * F + 2 * M * N * F * Dk + 2 * M * N * F * D             # up, down_k, down_v
    flops = lambda kind, lut=False: sum(bench.forward_flops(dataclasses.replace(dense, kind=kind),  # noqa: E731
                                                            B, T, lut=lut).values())
    assert flops("moe") == flops("mole") == base + mole_experts      # moe: all N experts computed densely
    assert flops("mole", lut=True) == base + 2 * M * D * N + 2 * M * N * D
    assert flops("molkv") == base + molkv_lut + molkv_ffn
    assert flops("molkv", lut=True) == base + molkv_lut
