"""The tools behind E1's explaining picture and summary (minimolkv/tools/explain.py)."""

import csv
import dataclasses

import numpy as np
import pytest

from minimolkv import model
from minimolkv.tools import explain

TINY = model.Config(vocab_size=40, context_len=24, d_model=16, n_layers=2, n_heads=2, d_ff=32,
                    n_experts=3, d_expert=16, d_key=4, kind="molkv", variant="joint")   # the dilution is joint's


def windows(n=6, seed=3):
    return np.random.default_rng(seed).integers(0, TINY.vocab_size, size=(n, TINY.context_len + 1))


def test_joint_at_init_gives_the_current_token_about_one_over_t_plus_one():
    """The dilution E1 explains: near-uniform scores over (t+1) positions x N experts."""
    prof = explain.attention_profile(model.init(TINY, 0), TINY, windows())
    t = np.arange(TINY.context_len)
    assert prof["own"].shape == (TINY.n_layers, TINY.context_len)
    np.testing.assert_allclose(prof["own"], np.broadcast_to(1 / (t + 1), prof["own"].shape), rtol=0.05)
    assert prof["gate"] == [None, None]
    # weight by distance: distance 0 is the own weight averaged over positions
    np.testing.assert_allclose(prof["distance"][:, 0], prof["own"].mean(axis=1))


def test_recency_keeps_more_of_the_current_token_and_gated_reports_its_gate():
    windows_ = windows()
    recency = dataclasses.replace(TINY, variant="recency")
    own = explain.attention_profile(model.init(recency, 0), recency, windows_)["own"]
    joint = explain.attention_profile(model.init(TINY, 0), TINY, windows_)["own"]
    assert np.all(own[:, -1] > 3 * joint[:, -1])                    # slopes favour distance 0
    gated = dataclasses.replace(TINY, variant="gated")
    params = model.init(gated, 0)
    params["layers.1.molkv.gate"] = np.full(1, 0.5, dtype=params["layers.1.molkv.gate"].dtype)
    prof = explain.attention_profile(params, gated, windows_)
    assert prof["gate"] == [0.0, pytest.approx(np.tanh(0.5))]
    assert np.all(prof["own"] == 0)                                 # its attention covers j < t only


def test_summary_tabulates_paired_differences_with_the_protocols_verdicts(tmp_path):
    # seed-by-seed losses chosen so each verdict is known: recency always 0.05 lower than mole
    # (beats), joint always higher (loses), gated +-0.01 around mole (ties)
    mole = [3.20, 3.22, 3.19, 3.21, 3.18]
    losses = {"mole": mole, "molkv": [m + 0.07 + 0.01 * (i % 2) for i, m in enumerate(mole)],
              "molkv-recency": [m - 0.05 - 0.002 * i for i, m in enumerate(mole)],
              "molkv-gated": [m + (0.01 if i % 2 else -0.01) for i, m in enumerate(mole)],
              "control": [m - 0.02 for m in mole]}
    folder = tmp_path / "e1-demo"
    folder.mkdir()
    with open(folder / "runs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["entry", "seed", "final_val_loss"])
        for entry, values in losses.items():
            writer.writerows([entry, seed, v] for seed, v in enumerate(values))
    explain.summary([str(folder)], str(tmp_path / "summary.png"))
    assert (tmp_path / "summary.png").stat().st_size > 1000
    rows = {line.split("|")[2].strip(): [c.strip() for c in line.split("|")[3:7]]
            for line in (tmp_path / "summary.md").read_text().splitlines() if line.startswith("| demo")}
    assert rows["molkv-recency"][0].startswith("-0.0540") and rows["molkv-recency"][1] == "beats"
    assert rows["molkv-recency"][2].startswith("-0.0340") and rows["molkv-recency"][3] == "beats"
    assert rows["molkv"][1] == "loses" and rows["molkv-gated"][1] == "ties"
    assert rows["molkv-gated"][3] == "loses"                         # +0.02 +- 0.01 against the control
    assert rows["control"][2] == "–"
