"""A training run's checkpoint on disk: save, load, and every check a load makes.

A run's folder:
    checkpoint.npz   THE checkpoint, one file: parameters ("params.<name>"), AdamW
                     state ("adamw.*") and the metadata as a byte array
                     ("config.json": model config, training settings, data spec,
                     tokenizer, the batch generator's exact state, step, metrics)
    config.json      a copy of that metadata for people to read
    metrics.csv      the metrics, one row per step, for a spreadsheet
    loss.png         the loss curve (train)
    luts-<fingerprint>/   the lookup tables of these parameters (sample; lut.tables)
    .minimolkv.lock  held by the one process writing the run (files.folder_lock)

A checkpoint is a unit: whenever a run is killed, the folder loads as the
previous step or the new one, never a mix. That is why it is one file.
save writes checkpoint.npz to a temporary file and renames it over the old one
(files.atomic_write); a rename is atomic, so a reader finds the old file or
the new one, whole. (Two files, arrays and JSON, could each be replaced
atomically but not as a pair: a kill between the two renames left a folder
that loaded as neither step.) config.json and metrics.csv are written after
it: a kill in between leaves them one step behind, which load ignores and the
next save repairs. At the same step config.json must equal the checkpoint's
own metadata: an edit there (say `window` or `n_heads`, which no shape
reveals) is refused instead of silently ignored.

Loading trusts nothing in the files, which may be damaged, edited or hostile:
  * nothing is unpickled: object arrays are refused;
  * nothing is allocated on a header's word: every array's header must promise
    exactly the bytes its member holds, and the members must be stored
    uncompressed within the file, so reading allocates at most the file's size;
  * JSON deeper than Python's recursion limit, NaN or infinities are refused;
  * every value is checked: shapes against the config, the optimizer state
    against the parameters, every number finite, step, metrics, prompt, tokenizer.
Every problem is a ValueError naming the folder, what is wrong and what is
expected (FileNotFoundError when there is no checkpoint at all).
Format 1 checkpoints (the metadata only in config.json, before this layout) still load.
"""

import dataclasses
import json
import math
import os
import sys
import zipfile

import numpy as np

from minimolkv import model, validate_run
from minimolkv.data import DataSpec
from minimolkv.files import atomic_write, bounded_list, read_npy_header, remove_stale_temporaries
from minimolkv.optim import state_from_arrays, state_to_arrays
from minimolkv.run import Run, Settings
from minimolkv.tokenizer import tokenizer_from_dict

FORMAT = 2                    # 2: the metadata inside checkpoint.npz; 1: only in config.json
FILES = ("checkpoint.npz", "config.json", "metrics.csv")
ADDED_LATER = {("data", "digest")}   # fields an older format-2 checkpoint lacks: they take their default
META_KEYS = ("format", "step", "model", "settings", "data", "tokenizer", "rng", "metrics", "prompt")


# ----------------------------------------------------------------------------
# save
# ----------------------------------------------------------------------------

def save(folder, run):
    """Write run (params, opt, rng, step, config, settings, data, tokenizer, metrics, prompt)
    to `folder`, as a unit (see the module docstring); run.last_checkpoint then names it:
    {"folder", "step", "steps" (the steps its settings train up to)}."""
    os.makedirs(folder, exist_ok=True)
    remove_stale_temporaries(folder, FILES)                  # left by a kill during an earlier save
    meta = {
        "format": FORMAT,
        "step": run.step,
        "model": run.config.to_dict(),
        "settings": dataclasses.asdict(run.settings),
        "data": dataclasses.asdict(run.data),
        "tokenizer": run.tokenizer.to_dict(),
        "rng": run.rng.bit_generator.state,            # exact generator state (big ints are fine in JSON)
        "metrics": run.metrics,
        "prompt": run.prompt,
    }
    text = json.dumps(meta, indent=1, allow_nan=False).encode()   # NaN is not JSON: never write it
    arrays = {"params." + k: v for k, v in run.params.items()}
    arrays.update(state_to_arrays(run.opt))
    arrays["config.json"] = np.frombuffer(text, dtype=np.uint8)
    atomic_write(os.path.join(folder, "checkpoint.npz"), lambda f: np.savez(f, **arrays))  # the commit
    run.last_checkpoint = {"folder": os.fspath(folder), "step": run.step, "steps": run.settings.steps}
    if run.on_first_save is not None:                      # train --overwrite: the old run's leftovers go now
        hook, run.on_first_save = run.on_first_save, None
        hook()
    atomic_write(os.path.join(folder, "config.json"), lambda f: f.write(text))             # copies
    atomic_write(os.path.join(folder, "metrics.csv"), lambda f: f.write(metrics_csv(run.metrics)))


def metrics_csv(rows):
    """The metric rows as CSV bytes (a spreadsheet- or pandas-friendly copy of config.json's)."""
    fields = ["step", "lr", "train_loss", "val_loss", "full_val_loss", "grad_norm", "tokens_per_s", "elapsed_s"]
    lines = [",".join(fields)]
    for r in rows:
        lines.append(",".join("" if r.get(k) is None else f"{r[k]:.6g}" for k in fields))
    return ("\n".join(lines) + "\n").encode()


def holds_run(folder):
    """The step of the run saved in `folder` (None if it holds none) -- train refuses to
    overwrite one unless told to. A checkpoint that does not load still counts as a run."""
    if not os.path.isfile(os.path.join(folder, "checkpoint.npz")):
        return None
    try:
        return load(folder).step
    except (ValueError, OSError):
        return "?"


# ----------------------------------------------------------------------------
# load
# ----------------------------------------------------------------------------

def load(folder):
    """The Run saved by save. Damaged, edited or foreign files raise ValueError."""
    npz_path = os.path.join(folder, "checkpoint.npz")
    if not os.path.isfile(npz_path):
        what = "does not exist" if not os.path.exists(folder) else "holds no checkpoint.npz"
        raise FileNotFoundError(f"{os.fspath(folder)!r} is not a checkpoint folder: it {what}")
    try:
        arrays = read_npz(npz_path)
        if "config.json" in arrays:
            meta = parse_json(_bytes_of(arrays.pop("config.json")), "checkpoint.npz's config.json")
            check_copy(folder, meta)
        else:
            meta = _format_1_meta(folder, arrays)
        return run_from(meta, arrays, folder)
    except PermissionError as err:
        raise ValueError(f"{os.fspath(folder)!r}: {os.path.basename(err.filename or npz_path)} cannot be read "
                         f"({err.strerror}); checkpoints must be readable") from None
    except (zipfile.BadZipFile, EOFError, OSError, RuntimeError, NotImplementedError) as err:  # (encrypted, ...)
        raise ValueError(f"{os.fspath(folder)!r}: checkpoint.npz is damaged or truncated "
                         f"({type(err).__name__}: {str(err)[:200]}); restore a copy or train again") from None
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
        raise ValueError(f"{os.fspath(folder)!r} holds a checkpoint that cannot be loaded: {str(err)[:400]}") from None


def read_npz(path):
    """{name: array} of an .npz written by save, trusting nothing in it: uncompressed
    .npy members only, each header promising exactly the bytes the member holds, no
    object arrays. Reading allocates at most the file's size."""
    size = os.path.getsize(path)
    arrays = {}
    with zipfile.ZipFile(path) as z:
        members = z.infolist()
        for m in members:
            if not m.filename.endswith(".npy") or m.compress_type != zipfile.ZIP_STORED:
                what = " (compressed)" if m.compress_type != zipfile.ZIP_STORED else ""
                raise ValueError(f"checkpoint.npz holds {m.filename!r}{what}; save writes uncompressed "
                                 ".npy arrays only")
        if sum(m.file_size for m in members) > size:
            raise ValueError("checkpoint.npz is damaged: its members claim more bytes than the file holds")
        for m in members:
            with z.open(m) as f:
                arrays[m.filename[:-4]] = _read_npy(f, m.file_size, m.filename)
    return arrays


def _read_npy(f, size, name):
    """One .npy member of `size` bytes -> its array (writable, no copy)."""
    shape, fortran, dtype = read_npy_header(f, f"checkpoint.npz: {name}")
    nbytes = math.prod(shape) * dtype.itemsize
    if f.tell() + nbytes != size:
        raise ValueError(f"checkpoint.npz: {name}'s header promises shape {shape} ({nbytes} bytes) "
                         f"but it holds {size - f.tell()} bytes of data")
    data = bytearray(nbytes)                             # bounded: nbytes <= the file's size
    if f.readinto(data) != nbytes:
        raise ValueError(f"checkpoint.npz: {name} is truncated")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _bytes_of(array):
    if array.dtype != np.uint8 or array.ndim != 1:
        raise ValueError(f"checkpoint.npz's config.json must be a 1-D uint8 array, got {array.dtype} {array.shape}")
    return array.tobytes()


def _not_a_number(text):
    raise ValueError(f"{text} is not allowed (a checkpoint holds finite numbers only)")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        _not_a_number(text)
    return value


def parse_json(data, what):
    """JSON bytes -> a value, with NaN, infinities and nesting beyond the recursion limit refused."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_not_a_number, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(f"{what} nests deeper than {sys.getrecursionlimit()} levels "
                         "(a checkpoint's metadata nests 4)") from None
    except ValueError as err:                            # JSONDecodeError, UnicodeDecodeError, the above
        raise ValueError(f"{what} is not valid checkpoint JSON: {err}") from None


def _read_json_file(path):
    with open(path, "rb") as f:
        return parse_json(f.read(), os.path.basename(path))


def check_copy(folder, meta):
    """config.json beside checkpoint.npz is a copy of `meta` for people to read. At the
    same step it must be equal: an edit would otherwise be silently ignored. At another
    step it is a copy that a kill left one step behind: ignored (the next save rewrites it)."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return
    copy = _read_json_file(path)
    if not isinstance(copy, dict):
        raise ValueError(f"config.json holds a JSON {type(copy).__name__}, not a copy of the checkpoint's "
                         "metadata; restore it or delete it (the next save writes it again)")
    if copy.get("step") != meta.get("step"):
        return
    for key in list(META_KEYS) + sorted(set(meta) | set(copy) - set(META_KEYS)):   # the model first
        if copy.get(key) != meta.get(key):
            where = key
            if isinstance(meta.get(key), dict) and isinstance(copy.get(key), dict):
                inner = sorted((k for k in set(meta[key]) | set(copy[key]) if meta[key].get(k) != copy[key].get(k)),
                               key=lambda k: (k not in ("kind", "name"), k))          # what it is, first
                where = f"{key}.{inner[0]}: {copy[key].get(inner[0])!r:.60} in config.json, " \
                        f"{meta[key].get(inner[0])!r:.60} in checkpoint.npz"
            raise ValueError(f"config.json does not match checkpoint.npz ({where}): it was edited, or "
                             "one of the two comes from another run; checkpoint.npz holds the run and its "
                             "config cannot be changed: restore config.json or delete it (the next save "
                             "writes it again)")


def _format_1_meta(folder, arrays):
    """Format 1: the metadata only in config.json, which must be at checkpoint.npz's step."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise ValueError("checkpoint.npz holds no metadata and config.json is missing")
    meta = _read_json_file(path)
    step = arrays.pop("step", None)
    if not isinstance(meta, dict) or meta.get("format") != 1:
        raise ValueError("checkpoint.npz holds no metadata and config.json is not a format 1 checkpoint's")
    if step is None or step.shape != () or int(step) != meta.get("step"):
        raise ValueError(f"checkpoint.npz is at step {step} but config.json at step {meta.get('step')}; "
                         "they do not belong together")
    return meta


def run_from(meta, arrays, folder):
    """The Run of a checkpoint's metadata and arrays, every value checked."""
    check_meta(meta, Settings)
    step = meta["step"]
    config = model.Config.from_dict(meta["model"])
    params = {k[len("params."):]: v for k, v in arrays.items() if k.startswith("params.")}
    validate_run.model_params(params, config, model.param_shapes(config))
    opt = state_from_arrays(arrays)
    unexpected = sorted(k for k in arrays if not k.startswith(("params.", "adamw.")))
    if unexpected:
        raise ValueError(f"checkpoint.npz holds unexpected arrays [{bounded_list(unexpected)}]")
    validate_run.optimizer_state(opt, params, step)
    for name, a in [("params." + k, a) for k, a in params.items()] \
            + [("adamw.m." + k, a) for k, a in opt["m"].items()] + [("adamw.v." + k, a) for k, a in opt["v"].items()]:
        if not np.isfinite(a).all():
            raise ValueError(f"{name} holds NaN or infinite values; a checkpoint holds finite numbers only "
                             "(was it saved from a diverged run?)")
    tokenizer = tokenizer_from_dict(meta["tokenizer"])
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} token ids but the model "
                         f"vocab_size={config.vocab_size}")
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = meta["rng"]
    except (TypeError, ValueError, OverflowError, KeyError) as err:
        raise ValueError(f"rng must be the state of numpy's PCG64 generator ({type(err).__name__}: {err})") from None
    settings = Settings(**meta["settings"])
    if params["tok_emb"].dtype != np.dtype(settings.dtype):      # (the parameters share one dtype)
        raise ValueError(f"settings.dtype is {settings.dtype!r} but the parameters are {params['tok_emb'].dtype}")
    return Run(params=params, opt=opt, step=step, rng=rng, config=config, settings=settings,
               data=DataSpec(**meta["data"]), tokenizer=tokenizer, metrics=meta["metrics"], prompt=meta["prompt"],
               last_checkpoint={"folder": os.fspath(folder), "step": step, "steps": settings.steps})


def check_meta(meta, Settings):
    """The metadata's shape: a JSON object with every key, of the right JSON types, and
    the exact fields of Config, Settings and DataSpec (whose own checks see the values)."""
    if not isinstance(meta, dict):
        raise ValueError(f"the metadata must be a JSON object, got a JSON {type(meta).__name__}")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"the metadata lacks {missing}; expected the keys {list(META_KEYS)}")
    if meta["format"] not in (1, FORMAT):
        raise ValueError(f"unknown checkpoint format {meta['format']!r}; this version reads 1 and {FORMAT}")
    step = meta["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    for key, kind in (("model", dict), ("settings", dict), ("data", dict), ("rng", dict),
                      ("metrics", list), ("prompt", str)):
        if not isinstance(meta[key], kind):
            raise ValueError(f"{key} must be a JSON {'object' if kind is dict else kind.__name__}, "
                             f"got {type(meta[key]).__name__}")
    for i, row in enumerate(meta["metrics"]):
        if not isinstance(row, dict) or any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))
                                            for v in row.values()):
            raise ValueError(f"metrics[{i}] must be an object of numbers (or null), got {str(row)[:80]}")

    for key, cls in (("model", model.Config), ("settings", Settings), ("data", DataSpec)):
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(meta[key]) - set(fields))
        unread = {"variant"} if key == "model" and meta[key].get("kind") != "molkv" else set()   # not saved
        missing = [f for f in fields if f not in meta[key] and (key, f) not in ADDED_LATER and f not in unread] \
            if meta["format"] == FORMAT else []
        if unknown or missing:                           # (format 1: a field added since takes its default)
            problem = f"unknown fields [{bounded_list(unknown)}]" if unknown else f"no [{bounded_list(missing)}]"
            raise ValueError(f"{key} has {problem}; it holds the fields of {cls.__name__}: {fields}")


def check_same_tokenizer(run, dataset):
    """Resuming re-reads the data; its tokenizer must be the one the run was trained with
    (the stdlib corpus differs a little between Python versions, and so would BPE), and its
    token ids those the run started on (run.data.digest; a run saved before digests
    existed is not checked)."""
    if dataset.tokenizer.to_dict() != run.tokenizer.to_dict():
        raise ValueError(f"the data {run.data.name!r} now tokenizes differently from when this run "
                         "was trained (another Python version's docstrings, or a changed file); "
                         "resuming would scramble the token ids")
    if run.data.digest not in (None, dataset.digest()):
        raise ValueError(f"the data {run.data.name!r} is not the text this run was trained on (its "
                         f"digest is {dataset.digest()}, the run's {run.data.digest}): it was changed or "
                         "replaced; restore it, or start a new run")
