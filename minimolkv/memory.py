"""Memory: keep freed memory in the process (no page-fault storm in every train
step), and estimate what a run needs against the machine's RAM.

    keep_freed_memory()          glibc's malloc keeps a step's temporaries for the next
    train_bytes(config, B)       the estimated peak memory of training, nothing allocated
    check_fits(config, B)        refuse a run that cannot fit, before any work

A train step allocates ~80 MB of temporaries (activations, gradients) and
frees them again. glibc's malloc serves blocks above its mmap threshold
(128 KiB at first, adapted upwards to at most 32 MiB) with fresh mmap()s and
hands them back to the operating system on free(); the next step's pages are
then new to the process, and touching each costs a minor page fault (~5 us
each; ~20,000 per MoLKV step, about 45 % of its time). Raising the mmap
threshold and the trim threshold keeps those blocks in malloc's heap, reused
from step to step: zero faults, the same memory.

Harmless elsewhere: on macOS, Windows or a non-glibc Linux (musl) this does
nothing. Called by the entry points: the command line, the benchmark, the lessons that train.
"""

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD = -1          # from <malloc.h>: free memory above this at the heap top goes back to the OS
M_MMAP_THRESHOLD = -3          # blocks at least this big get their own mmap (given back on free)
MMAP_THRESHOLD = 32 * 2**20    # 32 MiB: every temporary of a train step stays in the heap
TRIM_THRESHOLD = 1 * 2**30     # give memory back only when 1 GiB lies free at the heap top

_done = False


def keep_freed_memory():
    """Set glibc's mmap and trim thresholds once per process; True if it took effect."""
    global _done
    if _done:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok


# ----------------------------------------------------------------------------
# how much memory a run needs, and how much the machine has
# ----------------------------------------------------------------------------

EVAL_CHUNK = 64                # train.evaluate runs the model on up to 64 windows at once


def activation_bytes(config, batch_size, itemsize):
    """{what: bytes} of the arrays a train step's forward keeps for its backward (the
    backward's temporaries are of the same sizes; the estimate's factors cover them).
    Measured with tracemalloc (tests/test_cli.py checks dense and molkv): within 0.9-1.3x of the true peak."""
    c, B = config, batch_size
    T, D, H, L, V = c.context_len, c.d_model, c.n_heads, c.n_layers, c.vocab_size
    N, F, Dk = c.n_experts, c.d_expert, c.d_key
    per_layer = {"(B,T,D) hidden states": 13 * B * T * D, "(B,H,T,T) attention weights": 2 * B * H * T * T}
    if c.d_ff:
        per_layer["(B,T,d_ff) dense FFN activations"] = 3 * B * T * c.d_ff
    if c.kind in ("moe", "mole", "molkv"):
        per_layer["(B,T,N,F) expert activations"] = 4 * B * T * N * F + B * T * N * D
    if c.kind == "molkv":
        per_layer["(B,T,N,D) expert keys and values"] = B * T * N * (Dk + D)
        per_layer["(B,T,T,N) MoLKV scores"] = 2 * B * T * T * N
    if c.kind == "ctxattn":
        per_layer["(B,T,T) control scores"] = B * T * (2 * Dk + D) + 2 * B * T * T
    sizes = {k: (L + 1) * v * itemsize for k, v in per_layer.items()}     # + one layer of backward work
    sizes["(B,T,V) logits"] = 3 * B * T * V * itemsize
    return sizes


def train_bytes(config, batch_size, itemsize=4):
    """(total, {what: bytes}): the estimated peak memory of training `config`:
    parameters, gradients and AdamW's two moments (4 copies of the parameters),
    plus the activations of a step at the larger of batch_size and the evaluation's
    chunk of 64 windows. Nothing is allocated: the sizes come from the config."""
    from minimolkv.params import count_params
    parts = {"parameters, gradients, AdamW state": 4 * count_params(config)["train"] * itemsize}
    parts.update(activation_bytes(config, max(batch_size, EVAL_CHUNK), itemsize))
    return sum(parts.values()), parts


def ram_bytes():
    """The machine's physical memory in bytes, or None where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):      # no sysconf (Windows), or no such name
        return None


def check_fits(config, batch_size, itemsize=4, ram=None):
    """Raise ValueError, with the estimate and the machine's RAM, if training `config`
    cannot fit in memory -- before any work, instead of a MemoryError minutes later."""
    ram = ram_bytes() if ram is None else ram
    total, parts = train_bytes(config, batch_size, itemsize)
    if ram is None or total <= ram:
        return
    from minimolkv.files import format_bytes
    biggest = max(parts, key=parts.get)
    raise ValueError(f"this model needs about {format_bytes(total)} of memory to train "
                     f"({biggest}: {format_bytes(parts[biggest])}; batch_size={batch_size}, "
                     f"context_len={config.context_len}, vocab_size={config.vocab_size}, "
                     f"d_model={config.d_model}, n_layers={config.n_layers}) but this machine has "
                     f"{format_bytes(ram)} of RAM; "
                     "use smaller sizes")
