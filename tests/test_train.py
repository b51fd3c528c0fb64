"""train.py and the train/sample commands: learning, checkpoints, exact resume."""

import json
import zipfile

import numpy as np
import pytest

from minimolkv import checkpoint, model, train
from minimolkv.__main__ import main

TINY = dict(context_len=32, d_model=32, n_layers=1, n_heads=2, d_ff=64, n_experts=4,
            d_expert=32, d_key=8, top_k=2)


def tiny_run(kind, steps=40, **settings):
    spec = train.DataSpec(name="synthetic", vocab_size=64, seed=0)
    dataset = spec.load()
    config = model.Config(kind=kind, vocab_size=dataset.tokenizer.vocab_size, **TINY)
    s = train.Settings(steps=steps, batch_size=8, lr=1e-2, warmup=5, eval_every=10, eval_batches=2,
                       **settings)
    return train.new_run(config, s, spec, dataset), dataset


@pytest.mark.parametrize("kind", ("dense", "moe", "mole", "molkv"))
def test_loss_falls_on_the_synthetic_corpus(kind):
    run, dataset = tiny_run(kind)
    before = train.evaluate(run.params, run.config, dataset.val, run.settings)
    train.train(run, dataset, log=lambda line: None)
    after = run.metrics[-1]["val_loss"]
    assert before > 3.9                                    # about ln 64 = 4.16 at the start
    assert after < before - 1.0, f"{kind}: {before:.3f} -> {after:.3f}"


def test_checkpoint_round_trip_is_exact(tmp_path):
    run, dataset = tiny_run("molkv", steps=3)
    train.train(run, dataset, out_dir=tmp_path, log=lambda line: None)
    back = checkpoint.load(tmp_path)
    assert back.step == 3 and back.config == run.config
    assert back.settings == run.settings and back.data == run.data
    for k, v in run.params.items():
        assert back.params[k].dtype == v.dtype
        np.testing.assert_array_equal(back.params[k], v)
    for k in run.opt["m"]:
        np.testing.assert_array_equal(back.opt["m"][k], run.opt["m"][k])
        np.testing.assert_array_equal(back.opt["v"][k], run.opt["v"][k])
    assert back.opt["t"] == 3
    assert back.rng.bit_generator.state == run.rng.bit_generator.state
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "config.json", "metrics.csv"]
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("step,lr,train_loss,val_loss") and len(lines) == 4


def test_resume_after_k_steps_equals_the_uninterrupted_run_bit_for_bit(tmp_path):
    whole, dataset = tiny_run("molkv", steps=12)
    train.train(whole, dataset, log=lambda line: None)

    part, _ = tiny_run("molkv", steps=12)
    train.train(part, dataset, out_dir=tmp_path, stop_after=7, log=lambda line: None)
    assert part.step == 7
    resumed = checkpoint.load(tmp_path)
    train.train(resumed, dataset, out_dir=tmp_path, log=lambda line: None)
    assert resumed.step == 12
    for k in whole.params:
        np.testing.assert_array_equal(resumed.params[k], whole.params[k], err_msg=k)
    train_losses = lambda run: [r["train_loss"] for r in run.metrics]
    assert train_losses(resumed) == train_losses(whole)


def test_object_arrays_and_truncated_checkpoints_are_refused(tmp_path):
    run, dataset = tiny_run("mole", steps=2)
    train.train(run, dataset, out_dir=tmp_path, log=lambda line: None)
    npz = tmp_path / "checkpoint.npz"
    good = npz.read_bytes()

    arrays = dict(np.load(npz))
    arrays["evil"] = np.array([{"a": 1}], dtype=object)
    np.savez(npz, **arrays)                                # np.savez pickles object arrays
    with pytest.raises(ValueError, match="holds an object array"):
        checkpoint.load(tmp_path)

    npz.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="damaged or truncated"):
        checkpoint.load(tmp_path)

    npz.write_bytes(good)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["step"] = 99                                      # a copy at another step (a kill between writes):
    (tmp_path / "config.json").write_text(json.dumps(meta))
    assert checkpoint.load(tmp_path).step == 2          # ignored, checkpoint.npz alone is the checkpoint
    meta["step"] = 2
    meta["model"]["n_heads"] = 4                           # an edit no shape reveals: refused
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"config.json does not match checkpoint.npz \(model.n_heads: 4 in config.json"):
        checkpoint.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        checkpoint.load(tmp_path / "nowhere")
    assert zipfile.is_zipfile(npz)


def test_a_non_finite_loss_stops_with_a_clear_message(tmp_path):
    run, dataset = tiny_run("dense", steps=20)
    train.train(run, dataset, out_dir=tmp_path, stop_after=10, log=lambda line: None)
    run.params["lm_head"][:] = np.inf                   # sabotage after the good checkpoint
    with pytest.raises(train.TrainingDiverged, match="last good checkpoint"), np.errstate(invalid="ignore"):
        train.train(run, dataset, out_dir=tmp_path, log=lambda line: None)
    assert checkpoint.load(tmp_path).step == 10   # the good one is still there


def test_train_without_options_trains_recency_and_variant_joint_keeps_the_literal_reading(tmp_path,
                                                                                         monkeypatch):
    """The MoLKV users meet first is E1's winner; the folder names the variant."""
    monkeypatch.chdir(tmp_path)                                  # the default --out is under runs/
    tiny = ["--data", "synthetic", "--vocab", "64", "--steps", "2", "--eval-every", "2", "--context-len", "16",
            "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--d-ff", "32", "--d-expert", "16", "--d-key", "4"]
    assert main(["train", *tiny]) == 0
    run = checkpoint.load(tmp_path / "runs" / "molkv-recency-synthetic")
    assert (run.config.kind, run.config.variant) == ("molkv", "recency")
    assert "layers.0.molkv.recency" in run.params
    assert main(["train", *tiny, "--variant", "joint"]) == 0
    run = checkpoint.load(tmp_path / "runs" / "molkv-joint-synthetic")
    assert run.config.variant == "joint" and "layers.0.molkv.recency" not in run.params


def test_train_and_sample_commands_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--kind", "molkv", "--data", "synthetic", "--vocab", "64", "--steps", "4",
            "--eval-every", "2", "--context-len", "16", "--d-model", "16", "--n-layers", "1",
            "--n-heads", "2", "--d-ff", "32", "--d-expert", "16", "--d-key", "4", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "step     4/4" in text and "Final validation loss" in text and "Sample" in text
    assert (out / "loss.png").stat().st_size > 1000
    assert main(["train", "--resume", str(out), "--steps", "6"]) == 0
    assert checkpoint.load(out).step == 6
    assert main(["sample", "--checkpoint", str(out), "--tokens", "5", "--temperature", "0"]) == 0
    text = capsys.readouterr().out
    assert "lookup tables" in text and "per token" in text
    tables = [p for p in out.iterdir() if p.name.startswith("luts-")]
    assert len(tables) == 1 and sorted(q.name for q in tables[0].iterdir())[0] == "layers.0.molkv.k.npy"
    # another run into the same folder is refused (it would clobber the first) ...
    with pytest.raises(SystemExit) as refused:
        main(args[:-4] + ["--seed", "1", "--out", str(out)])
    assert refused.value.code == 2 and "already holds a run (step 6)" in capsys.readouterr().err
    # ... unless asked to, and must not decode from the first run's tables
    assert main(args[:-4] + ["--seed", "1", "--out", str(out), "--overwrite"]) == 0
    assert main(["sample", "--checkpoint", str(out), "--tokens", "5", "--temperature", "0"]) == 0
    newer = [p for p in out.iterdir() if p.name.startswith("luts-")]
    assert len(newer) == 1 and newer != tables                   # rebuilt, the stale ones removed


def test_bad_train_arguments_exit_2_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--kind", "molkv", "--n-heads", "3", "--data", "synthetic", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "n_heads=3 must divide d_model" in err[0]
    with pytest.raises(SystemExit):
        main(["sample", "--checkpoint", str(tmp_path / "missing")])
    assert "not a checkpoint folder" in capsys.readouterr().err


def test_compare_in_fast_mode_tabulates_every_entry(tmp_path, capsys):
    args = ["compare", "--data", "synthetic", "--vocab", "64", "--steps", "4", "--eval-every", "2",
            "--seeds", "2", "--context-len", "16", "--d-model", "16", "--n-layers", "1", "--n-heads", "2",
            "--d-ff", "32", "--d-expert", "16", "--d-key", "4", "--out", str(tmp_path),
            "--save-params", str(tmp_path / "params")]
    assert main(args) == 0
    table = (tmp_path / "results.md").read_text()
    assert "python -m minimolkv compare --data synthetic" in table          # how to reproduce it
    assert "Ideal predictors on the same validation windows: optimal" in table
    entries = ["dense", "moe", "mole", "molkv", "molkv-recency", "molkv-gated", "control"]
    for entry in entries:
        assert f"| {entry} |" in table
    import csv
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["entry"] for r in rows] == entries
    runs = list(csv.DictReader(open(tmp_path / "runs.csv")))
    assert len(runs) == 2 * len(entries) and all(r["epochs"] == "" for r in runs)   # a stream: no epochs
    for r in rows:
        assert np.isfinite(float(r["val_loss_mean"])) and float(r["tokens_per_s"]) > 0
        assert len(r["val_losses"].split()) == 2
    by = {r["entry"]: r for r in rows}
    for entry in entries:                                          # paired to mole, seed by seed
        losses = [float(r["final_val_loss"]) for r in runs if r["entry"] == entry]
        mole = [float(r["final_val_loss"]) for r in runs if r["entry"] == "mole"]
        if entry != "mole":
            assert float(by[entry]["diff_to_mole"]) == pytest.approx(np.mean(np.subtract(losses, mole)))
    assert (tmp_path / "val_curves.png").stat().st_size > 1000
    assert len(list((tmp_path / "params").glob("*.npz"))) == 2 * len(entries)
    dense = int(by["dense"]["activated_params"])
    router = 1 * 16 * 4                                            # L·D·N, the only extra
    assert int(by["moe"]["activated_params"]) == dense + router    # matched as in the MoLE paper
    assert int(by["mole"]["activated_params"]) == dense + router
    assert int(by["molkv"]["activated_params"]) == dense + 1 * 16 * 4          # L·D·Dk, the query
    assert abs(int(by["control"]["activated_params"]) - int(by["molkv-recency"]["activated_params"])) <= 4


def test_mean_interval_uses_student_t():
    from minimolkv.tools.compare import mean_interval
    mean, half = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0 and half == pytest.approx(1.9630, abs=1e-4)   # t(4 dof) 2.776 x s 1.5811 / sqrt(5)
    assert np.isnan(mean_interval([2.0])[1])
