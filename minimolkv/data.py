"""From a corpus to batches: train/validation ids, random training windows,
the validation windows (corpora are in corpora.py, tokenizers in tokenizer.py).

    load_dataset()       one call from a name or a path to train/val ids
    get_batch()          B random (T+1)-token windows of the train ids (or fresh
                         ones from the synthetic stream) -> inputs and targets
    check_fits()         does each split hold a window of the context length?
    eval_windows()       the validation split cut into non-overlapping windows
    split()              train/val split of an id array
    DataSpec             which data, saved with a checkpoint

Notation: B batch, T context length (sequence length), V vocabulary size.
"""

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minimolkv import corpora, validate, validate_run
from minimolkv.files import atomic_write
from minimolkv.tokenizer import _CHUNK_RE, MAX_CHUNK, BPETokenizer, ByteTokenizer, IdTokenizer

CACHE_FORMAT = 1                   # of the BPE cache files (_encoded): a new number leaves the old ones unread

# The Shakespeare validation plays, one each from the comedies, histories,
# Roman plays and tragedies (every 10th file from the 5th): about 10 % of the text.
SHAKESPEARE_VAL = ("the-comedy-of-errors", "henry-vi-part-3", "antony-and-cleopatra", "macbeth")
SYNTHETIC_VAL_TOKENS = 65_536      # one long chain, drawn from the task's seed: the same for every run


# ----------------------------------------------------------------------------
# files, splits, batches
# ----------------------------------------------------------------------------

def load_text(path):
    """The text of a UTF-8 file (a leading byte-order mark is dropped)."""
    p = Path(path)
    if not p.is_file():
        what = ("is a directory" if p.is_dir() else "does not exist" if not p.exists()
                else "is not a regular file (a pipe or a device)")
        raise FileNotFoundError(f"path {str(path)!r} {what}; give a UTF-8 text file")
    try:
        data = p.read_bytes()
    except OSError as err:                                           # permissions, an I/O error
        raise ValueError(f"path {str(path)!r} cannot be read ({err.strerror or err}); check its "
                         "permissions (or copy the text to a file you can read)") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"path {str(path)!r} is not UTF-8 text: byte {data[err.start]:#04x} "
                         f"at offset {err.start}; convert the file to UTF-8") from None
    if not text.strip():
        raise ValueError(f"path {str(path)!r} holds no text (empty or only whitespace)")
    return text


def _check_id_array(ids, name="ids"):
    validate.array(ids, name, ndim=1)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{name} must hold integers (token ids), got dtype {ids.dtype}")
    return ids


def _check_fraction(val_fraction):
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
            or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")


def split(ids, val_fraction=0.1):
    """(train, val): the last val_fraction of ids is val, the rest train (views, no shuffling)."""
    _check_id_array(ids)
    _check_fraction(val_fraction)
    n_val = int(round(len(ids) * val_fraction))
    if not 0 < n_val < len(ids):
        raise ValueError(f"ids holds {len(ids)} tokens: too few to split with val_fraction={val_fraction}")
    return ids[:-n_val], ids[-n_val:]


def _check_batch_args(ids, batch_size, context_len, rng):
    validate.positive_int(batch_size, "batch_size")
    T = validate.positive_int(context_len, "context_len")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    if not isinstance(ids, corpora.SyntheticStream):
        _check_id_array(ids)
        if len(ids) < T + 1:
            raise ValueError(f"ids holds {len(ids)} tokens, fewer than context_len + 1 = {T + 1}; "
                             f"use a shorter context_len or more data")


def get_batch(ids, batch_size, context_len, rng, *, check=True):
    """B random windows of ids: x (B,T) and y (B,T) = x shifted by one (the next tokens).
    `ids` may also be a corpora.SyntheticStream: then every window is fresh.
    check=False: the caller has checked these once already (train does, before its loop)."""
    if check:
        _check_batch_args(ids, batch_size, context_len, rng)
    B, T = batch_size, context_len
    if isinstance(ids, corpora.SyntheticStream):
        windows = ids.windows(B, T + 1, rng)                         # (B,T+1), never seen before
        return windows[:, :-1], windows[:, 1:]
    starts = rng.integers(0, len(ids) - T, size=B)                   # (B,) window s..s+T fits
    idx = starts[:, None] + np.arange(T)                             # (B,T)
    x = ids[idx].astype(np.int64)                                    # (B,T)
    y = ids[idx + 1].astype(np.int64)                                # (B,T)
    return x, y


def check_fits(dataset, context_len):
    """Training draws windows of T+1 tokens and validation cuts the split into them:
    each part of the data must hold at least one window."""
    T = validate.positive_int(context_len, "context_len")
    for part, n in (("training", dataset.train_tokens), ("validation", len(dataset.val))):
        if n is not None and n < T + 1:
            raise ValueError(f"the {part} part of the data holds {n} tokens, fewer than context_len + 1 = "
                             f"{T + 1}; use more data or a shorter context_len (--context-len)")


def eval_windows(ids, context_len):
    """The validation ids cut into non-overlapping windows of T+1 tokens -> (n, T+1):
    every token but each window's first is predicted once (the tail that does
    not fill a window is left out)."""
    _check_id_array(ids)
    T = validate.positive_int(context_len, "context_len")
    n = (len(ids) - 1) // T                                          # windows overlap by one token
    if n < 1:
        raise ValueError(f"the validation split holds {len(ids)} tokens, fewer than context_len + 1 = "
                         f"{T + 1}; use a shorter context_len or more data")
    starts = np.arange(n) * T                                        # (n,)
    return ids[starts[:, None] + np.arange(T + 1)].astype(np.int64)  # (n,T+1)


@dataclass
class Dataset:
    """What load_dataset returns."""
    train: object              # (n_train,) int64 token ids, or a corpora.SyntheticStream (endless)
    val: np.ndarray            # (n_val,) int64 token ids, text the training never sees
    tokenizer: object          # ByteTokenizer | BPETokenizer | IdTokenizer
    description: str

    def digest(self):
        """16 hex digits of the token ids (train and validation; the validation chain alone
        for an endless stream): what a resumed run checks it trains on the same data."""
        h = hashlib.sha1()
        for ids in (self.train, self.val):
            if isinstance(ids, np.ndarray):
                h.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    @property
    def train_tokens(self):
        """How many distinct training tokens there are (None: an endless stream)."""
        return None if isinstance(self.train, corpora.SyntheticStream) else len(self.train)


@functools.lru_cache(maxsize=4)
def _trained_bpe(text, vocab_size):
    return BPETokenizer.train(text, vocab_size)


@functools.lru_cache(maxsize=4)
def _synthetic_task(vocab_size, seed):
    """(stream, validation chain) of the synthetic task of `seed`. Stepping the 65,536
    validation tokens one at a time takes about a second, and a process (a test
    session, a lesson) asks for the same task again and again: both are kept for the
    next call. The stream holds no state (each call of windows brings its own rng);
    the chain is read-only, shared by every caller."""
    stream = corpora.SyntheticStream(vocab_size, seed)
    val = corpora.synthetic_chains(1, SYNTHETIC_VAL_TOKENS, stream.tables, np.random.default_rng([seed, 1]))[0]
    val.flags.writeable = False                                      # (SYNTHETIC_VAL_TOKENS,)
    return stream, val


def _encoded(train_text, val_text, vocab_size):
    """(tokenizer, train ids, val ids) with BPE, kept on disk: training BPE on the
    5 MB Shakespeare text and encoding it takes seconds, and every run, lesson and
    test needs the same result. The file is named after a hash of the texts and
    of the tokenizer's rules (CACHE_FORMAT, the chunking pattern), so a changed
    text or tokenizer never meets a stale encoding; a damaged file, or one whose
    ids fall outside the vocabulary, is simply rebuilt.
    The folder: $MINIMOLKV_CACHE, else ~/.cache/minimolkv."""
    key = f"{CACHE_FORMAT}\0{_CHUNK_RE.pattern}\0{MAX_CHUNK}\0{vocab_size}\0{train_text}\0{val_text}"
    digest = hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()
    folder = os.environ.get("MINIMOLKV_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "minimolkv")
    path = os.path.join(folder, f"bpe-{vocab_size}-{digest[:16]}.npz")
    try:
        with np.load(path, allow_pickle=False) as f:
            tok = BPETokenizer(f["merges"].tolist())
            train, val = f["train"].astype(np.int64), f["val"].astype(np.int64)
        if tok.vocab_size <= vocab_size and max(train.max(initial=0), val.max(initial=0)) < tok.vocab_size:
            return tok, train, val
    except Exception:                       # noqa: BLE001 -- not there yet, or damaged in any way
        pass                                # (a bad zip, an encrypted member, a mangled header): rebuild
    tok = _trained_bpe(train_text, vocab_size)
    train, val = tok.encode(train_text), tok.encode(val_text)
    try:
        merges = np.array(tok.merges, dtype=np.int64).reshape(-1, 2)
        small = np.uint16 if tok.vocab_size <= 2 ** 16 else np.int64       # ids fit in 2 bytes: 4x smaller
        atomic_write(path, lambda f: np.savez(f, merges=merges, train=train.astype(small), val=val.astype(small)))
    except OSError:
        pass                                                         # a read-only home: just do without
    return tok, train, val


def load_dataset(name_or_path, tokenizer="bpe", vocab_size=512, seed=0, val_fraction=0.1):
    """Train and val ids of "shakespeare", "stdlib", "synthetic" or a UTF-8 text file.

    "shakespeare": the SHAKESPEARE_VAL plays are the validation text, the rest
    train. "stdlib" and files: the last val_fraction of the characters is val.
    Text is split before tokenizing, and BPE is trained on the train part only.
    "synthetic" ignores `tokenizer`: the task of `seed` as an endless stream
    (corpora.SyntheticStream), val one chain of SYNTHETIC_VAL_TOKENS drawn from
    the seed; its ids get an IdTokenizer (K0 .. keys, ? trigger, A0 ..
    answers, w<id> fillers).
    """
    if name_or_path == "synthetic":
        stream, val = _synthetic_task(vocab_size, seed)              # val (SYNTHETIC_VAL_TOKENS,)
        desc = (f"synthetic: an endless stream of fresh windows (V={vocab_size}, task seed {seed}), "
                f"validation one chain of {len(val)} tokens")
        return Dataset(stream, val, IdTokenizer(corpora.synthetic_names(vocab_size)), desc)
    if tokenizer not in ("bpe", "byte"):
        raise ValueError(f"tokenizer must be 'bpe' or 'byte', got {tokenizer!r}")
    if name_or_path == "shakespeare":
        plays = corpora.shakespeare_plays()
        train_text = "\n\n".join(t for name, t in plays.items() if name not in SHAKESPEARE_VAL)
        val_text = "\n\n".join(plays[name] for name in SHAKESPEARE_VAL)
        source = f"Shakespeare, {len(plays)} plays ({len(SHAKESPEARE_VAL)} held out for validation)"
    else:
        if name_or_path == "stdlib":
            text, source = corpora.stdlib_corpus(), "stdlib docstrings"
        elif isinstance(name_or_path, (str, Path)) and Path(name_or_path).exists():
            text, source = load_text(name_or_path), f"file {str(name_or_path)!r}"   # a folder: load_text says so
        else:
            raise FileNotFoundError(f"the data (name_or_path, --data) must be 'shakespeare', 'stdlib', "
                                    f"'synthetic' or the path of a text file; there is no file "
                                    f"{str(name_or_path)!r}")
        _check_fraction(val_fraction)
        cut = int(len(text) * (1 - val_fraction))
        train_text, val_text = text[:cut], text[cut:]
    if tokenizer == "bpe":
        tok, train, val = _encoded(train_text, val_text, vocab_size)
    else:
        tok = ByteTokenizer()
        train, val = tok.encode(train_text), tok.encode(val_text)
    if len(val) == 0:
        raise ValueError(f"{source} is too short to keep a validation part")
    fewer = (f", fewer than the {vocab_size} asked: the text repeats too little for more merges"
             if tokenizer == "bpe" and tok.vocab_size < vocab_size else "")
    desc = (f"{source}: {len(train_text) + len(val_text):,} characters, {tokenizer} tokenizer "
            f"(V={tok.vocab_size}{fewer}), {len(train):,} train / {len(val):,} val tokens")
    return Dataset(train, val, tok, desc)


@dataclass(frozen=True)
class DataSpec:
    """Which data, so a resumed run rebuilds exactly the same token stream."""
    name: str = "shakespeare"                # "shakespeare" | "stdlib" | "synthetic" | a path
    tokenizer: str = "bpe"                   # "bpe" | "byte" (ignored by synthetic)
    vocab_size: int = 512
    seed: int = 0
    digest: str | None = None                # Dataset.digest() of the data the run started on

    def __post_init__(self):
        validate_run.data_spec(self)
        if self.digest is not None and not (isinstance(self.digest, str) and len(self.digest) == 16):
            raise ValueError(f"digest must be None or Dataset.digest()'s 16 hex digits, got {self.digest!r:.40}")

    def load(self):
        return load_dataset(self.name, tokenizer=self.tokenizer, vocab_size=self.vocab_size,
                            seed=self.seed)
