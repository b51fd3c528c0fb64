"""Lookup tables in memory and on disk, with an accounting of bytes read.

MoLE's point is here: after training, a layer's experts are a table indexed by
token id, (V, N, D). It can stay in storage. At inference a token reads only
its own row, N·D numbers per layer, instead of loading every expert's weights.

    save_lut(path, table)              write a .npy file atomically
    open_lut(path, shape, dtype)       open it as a read-only np.memmap (checked)
    LookupTable(table)                 wrapper: table[ids] that counts bytes read
    lut_footprint(V, L, N, D, itemsize)  storage and per-token load of a model
    first_non_finite_row(table)        a check that a table on disk holds numbers
    tables(folder, params, config)     a trained model's tables beside its checkpoint:
                                       built once per set of parameters, then reopened

A np.memmap maps the file into memory without reading it: `table[ids]` makes
the operating system read just the pages holding those rows.

Example (the MoLE paper's 160M model with 4 experts per layer, fp16):
V = 50,304, L = 12, N = 4, D = 768 -> 72 KiB loaded per token and a table of
about 3.5 GiB (3.7 GB) in storage — `lut_footprint(50304, 12, 4, 768, 2)`.
"""

import dataclasses
import json
import os
import re
import shutil
import tempfile
import time

import numpy as np

from minimolkv import model
from minimolkv.files import atomic_write, current_umask, fingerprint, format_bytes, read_npy_header


def save_lut(path, table):
    """Write `table` (any ndarray) to `path` as .npy, atomically."""
    table = np.ascontiguousarray(table)
    atomic_write(path, lambda f: np.lib.format.write_array(f, table, allow_pickle=False))
    return path


def open_lut(path, shape=None, dtype=None):
    """Open a table saved by save_lut as a read-only np.memmap.

    shape, dtype: what the caller expects; a file that differs, is truncated
    or is not a .npy table raises ValueError naming the file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"lookup table file {path!r} does not exist")
    with open(path, "rb") as f:
        try:
            file_shape, fortran, file_dtype = read_npy_header(f, "the file")
        except ValueError as err:
            raise ValueError(f"{path!r} is not a lookup table (.npy) file: {err}") from None
        offset = f.tell()
    if fortran:
        raise ValueError(f"{path!r} holds a Fortran-order array; tables are C-order numeric arrays")
    if shape is not None and tuple(file_shape) != tuple(shape):
        raise ValueError(f"{path!r} holds a table of shape {tuple(file_shape)}, expected {tuple(shape)}")
    if dtype is not None and file_dtype != np.dtype(dtype):
        raise ValueError(f"{path!r} holds dtype {file_dtype}, expected {np.dtype(dtype)}")
    expected = offset + int(np.prod(file_shape)) * file_dtype.itemsize
    actual = os.path.getsize(path)
    if actual != expected:
        raise ValueError(f"{path!r} is truncated or damaged: its header promises {expected} bytes, "
                         f"the file has {actual}")
    return np.memmap(path, dtype=file_dtype, mode="r", shape=tuple(file_shape), offset=offset)


class LookupTable:
    """A (V, N, X) table — in memory or a memmap — that counts what is read.

    `table[ids]` returns the rows of those ids, (..., N, X), and adds their
    size to `bytes_read` and their count to `tokens_read`. A thin wrapper:
    the layers only use `[ids]`, `.shape` and `.dtype`.
    """

    def __init__(self, table):
        if not isinstance(table, np.ndarray) or table.ndim != 3:
            raise TypeError(f"table must be a 3-D array (V, N, X), got {getattr(table, 'shape', type(table))}")
        self.table = table
        self.reset()

    def reset(self):
        self.bytes_read = 0
        self.tokens_read = 0

    def __getitem__(self, ids):
        rows = np.asarray(self.table[ids])                 # (...) -> (...,N,X): only these rows are read
        self.bytes_read += rows.nbytes
        self.tokens_read += int(np.size(ids))
        return rows

    shape = property(lambda self: self.table.shape)
    dtype = property(lambda self: self.table.dtype)

    @property
    def on_disk(self):
        return isinstance(self.table, np.memmap)

    @property
    def nbytes(self):
        """Size of the whole table (in storage, if it is a memmap)."""
        return self.table.nbytes

    @property
    def bytes_per_token(self):
        """One token's row: N·X·itemsize bytes."""
        return int(np.prod(self.table.shape[1:])) * self.table.dtype.itemsize

    def __repr__(self):
        where = "on disk" if self.on_disk else "in memory"
        return (f"LookupTable(shape={self.shape}, dtype={self.dtype}, {where}, "
                f"{format_bytes(self.nbytes)}, {format_bytes(self.bytes_per_token)}/token)")


def lut_footprint(vocab_size, n_layers, n_experts, width, itemsize):
    """(storage bytes, bytes loaded per token) of the tables of a whole model.

    width: D for MoLE (values only); Dk + D for MoLKV (keys and values).
    """
    per_token = n_layers * n_experts * width * itemsize
    return vocab_size * per_token, per_token


def first_non_finite_row(table, rows=4096):
    """The first row of a (V, ...) table holding NaN or inf, or None. Reads the table
    once, `rows` rows at a time (a memmap is never loaded whole): a damaged table
    would otherwise decode silently into garbage."""
    for start in range(0, table.shape[0], rows):
        ok = np.isfinite(table[start:start + rows]).reshape(min(rows, table.shape[0] - start), -1).all(axis=1)
        if not ok.all():
            return start + int(np.argmin(ok))
    return None


def save_tables(folder, tables):
    """Save {name: (V,N,X) array} as folder/<name>.npy, each atomically."""
    os.makedirs(folder, exist_ok=True)
    for name, table in tables.items():
        save_lut(os.path.join(folder, name + ".npy"), table)


def open_tables(folder, shapes, dtype):
    """Open folder/<name>.npy for each {name: shape} as a counting LookupTable on a memmap."""
    return {name: LookupTable(open_lut(os.path.join(folder, name + ".npy"), shape, dtype))
            for name, shape in shapes.items()}


# ----------------------------------------------------------------------------
# the lookup tables beside a checkpoint
# ----------------------------------------------------------------------------

TABLES_DIR = re.compile(r"luts-[0-9a-f]{12}")   # the folders tables() makes, luts-<fingerprint>
MANIFEST = "tables.json"                        # written last inside them: "this folder is ours, complete"
STALE_SECONDS = 3600                            # a half-built folder older than this was left by a kill


def tables(folder, params, config, log=None):
    """The lookup tables of `params`, as counting LookupTables on memmaps in
    folder/luts-<fingerprint of params>/: built and saved the first time, only
    opened (and checked: every number finite) after that. {} for dense and moe.

    Built into a temporary folder and renamed into place, so a luts- folder is
    always complete. Tables of older parameters are removed -- only folders
    this function made (named luts-<12 hex digits>, holding its tables.json and
    .npy files), never anything else. When `folder` cannot be written (read-only),
    the tables are built in memory instead and log(note) says so.
    """
    shapes = model.lut_shapes(config)
    if not shapes:
        return {}
    name = "luts-" + fingerprint(params)                   # never stale after another run
    table_dir = os.path.join(folder, name)
    if not os.path.lexists(table_dir):
        try:
            _build_tables(folder, name, params, config)
        except OSError as err:                               # read-only folder, disk full, ...
            if log is not None:
                log(f"note: cannot save lookup tables in {os.fspath(folder)!r} ({err.strerror or err}); "
                    "built them in memory for this run")
            return {k: LookupTable(v) for k, v in model.build_luts(params, config).items()}
    elif not is_tables_dir(table_dir):
        raise ValueError(f"{table_dir!r} is in the way: it is not a folder of lookup tables minimolkv "
                         "wrote (no tables.json); move it elsewhere")
    try:
        luts = open_tables(table_dir, shapes, params["tok_emb"].dtype)
        check_tables(table_dir, luts, params, config)
    except ValueError as err:                                # damaged, or of other parameters
        raise ValueError(f"{str(err)[:300]}; delete {table_dir!r} and it is rebuilt from the checkpoint") from None
    _remove_old_tables(folder, keep=name)
    return luts


def check_tables(table_dir, luts, params, config):
    """Tables found on disk must be those of `params`: tables.json names their parameters'
    fingerprint, a few rows rebuilt from the parameters must match (a copied or edited folder
    under this name fails here), and every number is finite. ValueError otherwise."""
    try:
        with open(os.path.join(table_dir, MANIFEST), "rb") as f:
            made_from = json.loads(f.read(10_000)).get("params")
    except (OSError, ValueError, AttributeError):
        made_from = None
    if made_from != os.path.basename(table_dir)[len("luts-"):]:
        raise ValueError(f"{os.path.join(table_dir, MANIFEST)!r} does not name these parameters "
                         f"(it says {made_from!r:.40}): these tables belong to another model")
    for key, table in luts.items():
        bad = first_non_finite_row(table.table)
        if bad is not None:
            raise ValueError(f"{os.path.join(table_dir, key + '.npy')!r} holds NaN or infinite values "
                             f"(row {bad})")
    ids = np.unique([0, config.vocab_size // 2, config.vocab_size - 1])      # a few rows, rebuilt
    few = dict(params, tok_emb=params["tok_emb"][ids], lm_head=params["lm_head"][:, ids])
    for key, rows in model.build_luts(few, dataclasses.replace(config, vocab_size=len(ids))).items():
        if not np.allclose(luts[key].table[ids], rows, rtol=1e-4, atol=1e-6, equal_nan=False):
            raise ValueError(f"{os.path.join(table_dir, key + '.npy')!r} does not hold these parameters' "
                             "table (rows rebuilt from the checkpoint differ)")


def _build_tables(folder, name, params, config):
    """Save the tables into a temporary folder, then rename it to folder/name (atomic).
    The folder gets the usual permissions (mkdtemp alone makes it 0700): whoever may read
    the checkpoint may sample from its tables."""
    tmp = tempfile.mkdtemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        luts = model.build_luts(params, config)
        save_tables(tmp, luts)
        manifest = {"params": name[len("luts-"):],
                    "tables": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in luts.items()}}
        atomic_write(os.path.join(tmp, MANIFEST), lambda f: f.write(json.dumps(manifest, indent=1).encode()))
        os.rename(tmp, os.path.join(folder, name))
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception) and os.path.isdir(os.path.join(folder, name)):
            return                                           # another process finished first: fine
        raise                                                # (a Ctrl-C always goes on up)


def is_tables_dir(path):
    """A folder tables() made: a real folder named luts-<fingerprint> holding tables.json and .npy files."""
    if os.path.islink(path) or not os.path.isdir(path) or not TABLES_DIR.fullmatch(os.path.basename(path)):
        return False
    entries = os.listdir(path)
    return MANIFEST in entries and all(e == MANIFEST or e.endswith(".npy") for e in entries)


def _remove_old_tables(folder, keep):
    """Remove this function's tables of older parameters, and half-built ones a kill left."""
    now = time.time()
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        try:
            if entry != keep and is_tables_dir(path):
                shutil.rmtree(path)
            elif re.fullmatch(r"\.luts-[0-9a-f]{12}\..+\.tmp", entry) and not os.path.islink(path) \
                    and os.path.isdir(path) and now - os.path.getmtime(path) > STALE_SECONDS:
                shutil.rmtree(path)
        except OSError:
            pass                                             # read-only, or removed meanwhile: leave it
