"""E2's analysis (minimolkv/tools/e2.py): pairing by seed and the trend rule of the protocol."""

import csv

import numpy as np
import pytest

from minimolkv.tools import compare, e2


def runs(entry, losses):
    return [{"entry": entry, "seed": s, "final_val_loss": v} for s, v in enumerate(losses)]


def test_paired_differences_match_seeds_and_skip_unpaired_ones():
    data = runs("mole", [3.0, 3.1, 3.2]) + runs("molkv-recency", [2.9, 3.05])
    assert compare.paired(data, "molkv-recency", "mole") == pytest.approx([-0.1, -0.05])


def test_trend_words_follow_the_protocol():
    lead = {"default-400": [-0.01, -0.012, -0.011], "large-400": [-0.05, -0.052, -0.049],
            "xl-400": [-0.10, -0.098, -0.101]}
    change, half, word = e2.trend(lead, e2.SIZE_ORDER)
    assert word == "grows" and change == pytest.approx(np.mean(lead["xl-400"]) - np.mean(lead["default-400"]))
    # by hand: se^2 = var/n per cell, t at min(n) - 1 = 2 degrees of freedom
    se2 = np.var(lead["default-400"], ddof=1) / 3 + np.var(lead["xl-400"], ddof=1) / 3
    assert half == pytest.approx(4.303 * np.sqrt(se2))
    shrinking = {c: [-x for x in v] for c, v in lead.items()}
    assert e2.trend(shrinking, e2.SIZE_ORDER)[2] == "shrinks"
    # a larger lead at xl but the middle cell out of order: not monotone, so unclear
    unordered = dict(lead, **{"large-400": [-0.2, -0.21, -0.19]})
    assert e2.trend(unordered, e2.SIZE_ORDER)[2] == "unclear"
    # an interval that straddles 0: unclear
    noisy = {"large-400": [-0.05, 0.05, 0.0], "large-800": [-0.1, 0.1, -0.02]}
    assert e2.trend(noisy, e2.BUDGET_ORDER)[2] == "unclear"


def test_parts_are_merged_per_cell_and_summarised(tmp_path):
    for cell in e2.CELLS:
        for i, entry in enumerate(e2.ENTRIES):
            folder = tmp_path / "parts" / f"{cell}-{entry}"
            folder.mkdir(parents=True)
            with open(folder / "runs.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["entry", "seed", "final_val_loss", "final_train_loss", "tokens_per_s", "epochs",
                            "seconds"])
                for seed in range(3):
                    w.writerow([entry, seed, 3.5 - 0.02 * i + 0.001 * seed, 3.4, 1000.0, 0.17, 60.0])
    cells = e2.load_parts(tmp_path / "parts")
    assert sorted(cells) == sorted(e2.CELLS) and all(len(r) == 9 for r in cells.values())
    lines, diffs = e2.summary_lines(cells)
    assert diffs["xl-400"]["recency − mole"] == pytest.approx([-0.02] * 3)
    assert diffs["xl-400"]["recency − control"] == pytest.approx([0.02] * 3)
    assert any(line.startswith("| xl-400 | 3,859,296 |") for line in lines)
    e2.main(["--parts", str(tmp_path / "parts"), "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "e2.png").stat().st_size > 0
    assert "| mole |" in (tmp_path / "out" / "large-800" / "results.md").read_text()


def test_results_already_in_out_are_not_replaced_unasked(tmp_path, capsys):
    (tmp_path / "parts" / "xl-400-mole").mkdir(parents=True)
    (tmp_path / "parts" / "xl-400-mole" / "runs.csv").write_text(
        "entry,seed,final_val_loss,final_train_loss,tokens_per_s,epochs,seconds\nmole,0,3.4,3.4,1,0.17,1\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.md").write_text("mine")
    with pytest.raises(SystemExit) as stop:
        e2.main(["--parts", str(tmp_path / "parts"), "--out", str(tmp_path / "out")])
    assert stop.value.code == 2 and "summary.md" in capsys.readouterr().err
    assert (tmp_path / "out" / "summary.md").read_text() == "mine"
    e2.main(["--parts", str(tmp_path / "parts"), "--out", str(tmp_path / "out"), "--overwrite"])
    assert (tmp_path / "out" / "summary.md").read_text() != "mine"
