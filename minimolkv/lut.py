"""Lookup tables in memory and on disk, with an accounting of bytes read.

MoLE's point is here: after training, a layer's experts are a table indexed by
token id, (V, N, D). It can stay in storage. At inference a token reads only
its own row, N·D numbers per layer, instead of loading every expert's weights.

    save_lut(path, table)              write a .npy file atomically
    open_lut(path, shape, dtype)       open it as a read-only np.memmap (checked)
    LookupTable(table)                 wrapper: table[ids] that counts bytes read
    lut_footprint(V, L, N, D, itemsize)  storage and per-token load of a model
    first_non_finite_row(table)        a check that a table on disk holds numbers

A np.memmap maps the file into memory without reading it: `table[ids]` makes
the operating system read just the pages holding those rows.

Example (the MoLE paper's 160M model with 4 experts per layer, fp16):
V = 50,304, L = 12, N = 4, D = 768 -> 72 KiB loaded per token and a table of
about 3.5 GiB (3.7 GB) in storage — `lut_footprint(50304, 12, 4, 768, 2)`.
"""

import os

import numpy as np

from minimolkv.files import atomic_write, format_bytes


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
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                file_shape, fortran, file_dtype = np.lib.format.read_array_header_1_0(f)
            else:
                file_shape, fortran, file_dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as err:
            raise ValueError(f"{path!r} is not a lookup table (.npy) file: {err}") from None
        offset = f.tell()
    if file_dtype.hasobject or fortran:
        raise ValueError(f"{path!r} holds a {'Fortran-order' if fortran else 'object'} array; "
                         "tables are C-order numeric arrays")
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
