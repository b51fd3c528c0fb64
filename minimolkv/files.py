"""File helpers: atomic writes, content fingerprints, byte counts for people.

    atomic_write(path, write)   write a file so that a kill never leaves half of it
    remove_stale_temporaries(folder, names)   the temporaries a killed writer left behind
    writable_folder(path, name) can we write into `path`? (checked before any work)
    fingerprint(arrays)         12 hex digits naming a dict of arrays (names, shapes, values)
    format_bytes(n)             1536 -> '1.5 KiB'
    read_npy_header(f, where)   an .npy header, trusting nothing in it
    bounded_list(items)         "'a', 'b', 'c' and 7 more": lists in one-line messages
    folder_lock(folder, name)   one writer per folder (a lock a kill never leaves stale)
"""

import contextlib
import glob
import hashlib
import os
import socket
import tempfile
import time
import tokenize

import numpy as np

try:
    import fcntl
except ImportError:                                     # Windows: folder_lock takes no lock
    fcntl = None


def current_umask():
    """The process's umask (os.umask can only be read by setting it; set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Call write(file) on a temporary file beside `path`, then rename it over
    `path` with os.replace: a reader (or a kill at any instant) sees the old
    file or the new one, never half of one.

    The temporary is named .<name>.<random>.tmp, so remove_stale_temporaries
    can find what a killed writer left. The file gets the usual permissions
    (0644 under the common umask; mkstemp alone would make it 0600), and is
    flushed to disk before the rename, so even a power cut keeps one of the two.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError) and err.errno and err.filename in (None, tmp):   # name the file meant
            raise OSError(err.errno, err.strerror, os.fspath(path)) from None          # (full disk, ...)
        raise


def remove_stale_temporaries(folder, names):
    """Delete the .<name>.*.tmp files atomic_write left in `folder` when it was killed
    (a kill skips its clean-up). Only call it where no other process is writing `names`."""
    for name in names:
        for tmp in glob.glob(os.path.join(glob.escape(str(folder)), f".{glob.escape(name)}.*.tmp")):
            try:
                os.remove(tmp)
            except FileNotFoundError:
                pass


def writable_folder(path, name):
    """Raise ValueError, naming the option `name`, unless `path` is (or can be made) a
    folder we can write into; creates it. Called before any work, so an unusable
    --out is reported at once, not after the training."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{name} {path!r} is a file, not a folder; give a folder (it is created if missing)")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):          # the only sure test: write something
            pass
    except OSError as err:
        raise ValueError(f"{name} {path!r} cannot be written ({err.strerror or err}); "
                         "give a folder you can write to") from None


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


def bounded_list(items, most=3):
    """A bounded list for a one-line message: 'a', 'b', 'c' and 7 more."""
    shown = ", ".join(repr(os.fspath(i)) for i in list(items)[:most])
    return shown + (f" and {len(items) - most:,} more" if len(items) > most else "")


def read_npy_header(f, where):
    """The header of the .npy file open at `f` -> (shape, fortran_order, dtype), f left at the data.
    Refuses what no file of ours holds: a format version numpy does not write, object arrays
    (they would need unpickling) and non-numeric dtypes. `where` names the file in errors."""
    try:
        version = np.lib.format.read_magic(f)            # ValueError when it is no .npy at all
    except ValueError as err:
        raise ValueError(f"{where} is not an .npy file ({str(err)[:80]})") from None
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"{where} is an .npy file of version {version}; expected 1.0 or 2.0")
    try:
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
            else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)           # numpy caps the header at 10,000 bytes
    except (SyntaxError, tokenize.TokenError, UnicodeDecodeError, EOFError, ValueError) as err:   # damaged
        text = str(err).split(":")[0] if isinstance(err, ValueError) else type(err).__name__
        raise ValueError(f"{where} has a damaged .npy header ({text[:80]})") from None
    if dtype.hasobject:
        raise ValueError(f"{where} holds an object array; these files hold numbers only and are never unpickled")
    if dtype.kind not in "biuf":
        raise ValueError(f"{where} has dtype {dtype}; these files hold numbers only")
    return shape, fortran, dtype


# ----------------------------------------------------------------------------
# one writer per folder
# ----------------------------------------------------------------------------

LOCK = ".minimolkv.lock"


@contextlib.contextmanager
def folder_lock(folder, name):
    """Hold folder/.minimolkv.lock for the `with` block: a second process asking for the
    same folder gets a ValueError naming `name` (the option) and the process that holds it.

    The lock is an flock(2) on the file, not the file's existence: the operating system
    drops it when its process ends, however it ends, so a lock left by a killed run is
    never stale -- the next run simply takes it (and writes its own pid in the file).
    Where flock does not exist (Windows) there is no lock."""
    path = os.path.join(os.fspath(folder), LOCK)
    try:                                                    # (never through a symlink: no other file is touched)
        f = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666), "r+")
    except OSError as err:
        raise ValueError(f"{name} {os.fspath(folder)!r}: its lock file {LOCK} cannot be opened "
                         f"({err.strerror or err}); remove it if it is a link, or give a folder you can write to") \
            from None
    with f:
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:                                 # held by a live process
                f.seek(0)
                owner = f.read(200).strip() or "another process"
                raise ValueError(f"{name} {os.fspath(folder)!r} is in use by {owner}; wait for it to end "
                                 f"(or stop it), or choose another {name}") from None
        f.seek(0)
        f.truncate()
        f.write(f"minimolkv process {os.getpid()} on {socket.gethostname()}, since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
        f.flush()
        yield
