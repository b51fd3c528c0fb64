"""Tests of the kind a planted one-line bug slips past: every setting must reach the
step it configures, sampling must draw from the right tokens independently per
sequence, and the small rules the docs state (ties, rounding, where a bad row is)
must hold exactly. Each test names the bug it is there to catch.
"""

import dataclasses

import numpy as np
import pytest

from minimolkv import data, lut, moe, model, train
from minimolkv.generate import sample

# ----------------------------------------------------------------------------
# every Settings field reaches the training step
# ----------------------------------------------------------------------------

# Neither value of a field is its default (in Settings or in the function it reaches), so a
# train that ignored the field and used a default would give the same run for both.
BASE = train.Settings(steps=3, batch_size=2, lr=1e-2, min_lr_ratio=0.2, warmup=1, weight_decay=0.3, clip=0.5,
                      eval_every=3, eval_batches=1, seed=1, dtype="float32")
OTHER = dict(steps=4, batch_size=3, lr=2e-2, min_lr_ratio=0.6, warmup=2, weight_decay=0.7, clip=1e-3,
             eval_every=1, eval_batches=2, seed=2, dtype="float64")
TIMING = ("tokens_per_s", "elapsed_s")


def _outcome(settings):
    """(params, metrics without timings) of a 3-4 step dense run on the synthetic task."""
    spec = data.DataSpec(name="synthetic", vocab_size=64)
    dataset = dataclasses.replace(spec.load(), val=spec.load().val[:200])
    config = model.Config(kind="dense", vocab_size=64, context_len=8, d_model=8, n_layers=1, n_heads=2, d_ff=8)
    run = train.new_run(config, settings, spec, dataset)
    train.train(run, dataset, log=lambda line: None)
    return run.params, [{k: v for k, v in row.items() if k not in TIMING} for row in run.metrics]


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(train.Settings)])
def test_every_setting_reaches_the_step_it_configures(field):
    """Catches e.g. train calling adamw_step without weight_decay (AdamW's default used)."""
    assert field in OTHER, f"give the new Settings field {field!r} a second value in OTHER"
    params_a, metrics_a = _outcome(BASE)
    params_b, metrics_b = _outcome(dataclasses.replace(BASE, **{field: OTHER[field]}))
    same_params = all(params_a[k].dtype == params_b[k].dtype and np.array_equal(params_a[k], params_b[k])
                      for k in params_a)
    assert not (same_params and metrics_a == metrics_b), f"Settings.{field} changed nothing"


# ----------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------

def test_top_k_draws_exactly_the_k_most_likely_in_proportion():
    """Catches top-k keeping k+1 tokens or dropping the k-th: over 40,000 draws only the 3
    most likely ids appear, each about as often as its renormalised probability."""
    p = np.array([0.05, 0.3, 0.08, 0.25, 0.2, 0.12])                    # top 3: ids 1, 3, 4
    n = 40_000
    ids = sample(np.tile(np.log(p), (n, 1)), 1.0, 3, np.random.default_rng(0))   # (n,)
    assert set(ids.tolist()) == {1, 3, 4}
    kept = p[[1, 3, 4]] / p[[1, 3, 4]].sum()
    freq = np.bincount(ids, minlength=6)[[1, 3, 4]] / n
    assert np.all(np.abs(freq - kept) < 5 * np.sqrt(kept * (1 - kept) / n)), (freq, kept)


def test_top_k_of_one_is_greedy():
    logits = np.random.default_rng(1).standard_normal((64, 50))
    for temperature in (0.5, 1.0, 3.0):
        assert np.array_equal(sample(logits, temperature, 1, np.random.default_rng(2)), logits.argmax(-1))


def test_every_sequence_of_a_batch_draws_independently():
    """Catches one uniform draw shared by the whole batch: rows with the same logits would
    then all get the same id. With 10 equally likely ids, neighbours agree ~10 % of the time."""
    ids = sample(np.zeros((1000, 10)), 1.0, None, np.random.default_rng(3))
    agree = np.mean(ids[1:] == ids[:-1])
    assert 0.05 < agree < 0.15, agree
    assert np.all(np.abs(np.bincount(ids, minlength=10) / 1000 - 0.1) < 0.05)


# ----------------------------------------------------------------------------
# the stated small rules
# ----------------------------------------------------------------------------

def test_moe_ties_go_to_the_lower_expert_index():
    """With a zero router every expert ties; top_k=2 must run experts 0 and 1 (docs: ties
    go to the lower index). Experts 2 and 3 are silenced: then the output is zero only if
    they were the ones chosen."""
    params = moe.init(np.random.default_rng(0), 8, 4, 4)
    params["router"][:] = 0.0
    h = np.random.default_rng(1).standard_normal((2, 3, 8))
    low_silent, high_silent = dict(params), dict(params)
    low_silent["down"], high_silent["down"] = params["down"].copy(), params["down"].copy()
    low_silent["down"][:2] = 0.0
    high_silent["down"][2:] = 0.0
    assert np.all(moe.forward(low_silent, h, top_k=2)[0] == 0.0)
    assert np.abs(moe.forward(high_silent, h, top_k=2)[0]).max() > 0


def test_the_validation_split_size_is_rounded():
    """19 ids at 10 %: 1.9 rounds to 2 validation ids (truncation would keep 1)."""
    train_ids, val_ids = data.split(np.arange(19), 0.1)
    assert len(val_ids) == 2 and len(train_ids) == 17
    assert len(data.split(np.arange(100), 0.15)[1]) == 15


def test_open_lut_refuses_a_table_with_trailing_bytes(tmp_path):
    table = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    path = lut.save_lut(str(tmp_path / "t.npy"), table)
    assert np.array_equal(lut.open_lut(path, (2, 3, 4), np.float32), table)
    with open(path, "ab") as f:
        f.write(b"\0" * 4)                                  # one float32 too many
    with pytest.raises(ValueError, match="truncated or damaged"):
        lut.open_lut(path, (2, 3, 4), np.float32)


def test_the_first_non_finite_row_is_counted_from_the_table_start():
    """Catches a row index relative to its chunk: with chunks of 4 rows, row 6 is not row 2."""
    table = np.zeros((10, 2, 3))
    assert lut.first_non_finite_row(table, rows=4) is None
    table[9, 1, 2] = np.inf
    assert lut.first_non_finite_row(table, rows=4) == 9
    table[6, 0, 0] = np.nan
    assert lut.first_non_finite_row(table, rows=4) == 6
    assert lut.first_non_finite_row(table) == 6             # one chunk
