"""File helpers: atomic writes, content fingerprints, byte counts for people.

    atomic_write(path, write)   write a file so that a crash never leaves half of it
    fingerprint(arrays)         12 hex digits naming a dict of arrays (names, shapes, values)
    format_bytes(n)             1536 -> '1.5 KiB'
"""

import hashlib
import os
import tempfile

import numpy as np


def atomic_write(path, write):
    """Call write(file) on a temporary file beside `path`, then rename it over
    `path` with os.replace: a crash never leaves a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def fingerprint(arrays):
    """12 hex digits identifying a dict of arrays (names, shapes, dtypes, values)."""
    h = hashlib.sha1()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:12]


def format_bytes(n):
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
