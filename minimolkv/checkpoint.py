"""A training run's folder on disk: the checkpoint, and the lookup tables beside it.

A checkpoint is a folder:
    checkpoint.npz   parameters ("params.<name>") and AdamW state ("adamw.*")
    config.json      model config, training settings, data spec, tokenizer,
                     the batch generator's exact state, step, metrics
    metrics.csv      the same metrics, one row per step, for a spreadsheet
    luts-<fingerprint>/   (after `sample`) the lookup tables of these parameters
Files are written atomically (temporary file + os.replace) and loaded with
allow_pickle=False: nothing is ever unpickled.
"""

import dataclasses
import glob
import json
import os
import shutil
import zipfile

import numpy as np

from minimolkv import lut, model, validate
from minimolkv.data import DataSpec
from minimolkv.files import atomic_write, fingerprint
from minimolkv.optim import state_from_arrays, state_to_arrays
from minimolkv.tokenizer import tokenizer_from_dict

FORMAT = 1                                   # checkpoint layout version


def save(folder, run):
    """Write run (params, opt, rng, step, config, settings, data, tokenizer, metrics) to `folder`."""
    os.makedirs(folder, exist_ok=True)
    arrays = {"params." + k: v for k, v in run["params"].items()}
    arrays.update(state_to_arrays(run["opt"]))
    arrays["step"] = np.array(run["step"], dtype=np.int64)
    atomic_write(os.path.join(folder, "checkpoint.npz"), lambda f: np.savez(f, **arrays))
    meta = {
        "format": FORMAT,
        "step": run["step"],
        "model": run["config"].to_dict(),
        "settings": dataclasses.asdict(run["settings"]),
        "data": dataclasses.asdict(run["data"]),
        "tokenizer": run["tokenizer"].to_dict(),
        "rng": run["rng"].bit_generator.state,            # exact generator state (big ints are fine in JSON)
        "metrics": run["metrics"],
        "prompt": run["prompt"],
    }
    text = json.dumps(meta, indent=1).encode()
    atomic_write(os.path.join(folder, "config.json"), lambda f: f.write(text))
    atomic_write(os.path.join(folder, "metrics.csv"), lambda f: f.write(metrics_csv(run["metrics"])))


def metrics_csv(rows):
    """The metric rows as CSV bytes (a spreadsheet- or pandas-friendly copy of config.json's)."""
    fields = ["step", "lr", "train_loss", "val_loss", "full_val_loss", "grad_norm", "tokens_per_s", "elapsed_s"]
    lines = [",".join(fields)]
    for r in rows:
        lines.append(",".join("" if r.get(k) is None else f"{r[k]:.6g}" for k in fields))
    return ("\n".join(lines) + "\n").encode()


def load(folder):
    """The run dict saved by save. Damaged or foreign files raise ValueError."""
    from minimolkv.train import Settings         # (train imports this module: import at call time)
    npz_path = os.path.join(folder, "checkpoint.npz")
    json_path = os.path.join(folder, "config.json")
    for path in (npz_path, json_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder!r} is not a checkpoint folder: {os.path.basename(path)} is missing")
    try:
        with open(json_path) as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT:
            raise ValueError(f"unknown checkpoint format {meta.get('format')!r}")
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as err:
        if "allow_pickle" in str(err) or "Object arrays" in str(err):
            raise ValueError(f"{npz_path!r} holds an object array; checkpoints hold numbers only "
                             "and are never unpickled") from None
        raise ValueError(f"{folder!r} holds a damaged checkpoint: {err}") from None
    except (zipfile.BadZipFile, EOFError, OSError, json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{folder!r} holds a damaged or truncated checkpoint ({type(err).__name__}: {err})") from None
    if int(arrays.get("step", -1)) != meta.get("step"):
        raise ValueError(f"{folder!r}: checkpoint.npz is at step {arrays.get('step')} but config.json "
                         f"at step {meta.get('step')}; they do not belong together")
    try:
        config = model.Config.from_dict(meta["model"])
        params = {k[len("params."):]: v for k, v in arrays.items() if k.startswith("params.")}
        validate.model_params(params, config)
        rng = np.random.default_rng()
        rng.bit_generator.state = meta["rng"]
        return {
            "params": params, "opt": state_from_arrays(arrays), "step": meta["step"], "rng": rng,
            "config": config, "settings": Settings(**meta["settings"]), "data": DataSpec(**meta["data"]),
            "tokenizer": tokenizer_from_dict(meta["tokenizer"]), "metrics": meta["metrics"],
            "prompt": meta["prompt"],
        }
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{folder!r} holds a checkpoint that does not fit this version of minimolkv "
                         f"({type(err).__name__}: {err})") from None


def check_same_tokenizer(run, dataset):
    """Resuming re-reads the data; its tokenizer must be the one the run was trained with
    (the stdlib corpus differs a little between Python versions, and so would BPE)."""
    if dataset.tokenizer.to_dict() != run["tokenizer"].to_dict():
        raise ValueError(f"the data {run['data'].name!r} now tokenizes differently from when this run "
                         "was trained (another Python version's docstrings, or a changed file); "
                         "resuming would scramble the token ids")


def tables(folder, params, config):
    """The lookup tables of `params`, as counting LookupTables on memmaps in
    folder/luts-<fingerprint of params>/: built and saved the first time, only
    opened after that. Tables of older parameters in the folder are removed.
    {} for dense and moe."""
    shapes = model.lut_shapes(config)
    if not shapes:
        return {}
    table_dir = os.path.join(folder, "luts-" + fingerprint(params))   # never stale after another run
    if not os.path.isdir(table_dir):
        for old in glob.glob(os.path.join(folder, "luts-*")):            # tables of older parameters
            shutil.rmtree(old)
        lut.save_tables(table_dir, model.build_luts(params, config))
    return lut.open_tables(table_dir, shapes, params["tok_emb"].dtype)
