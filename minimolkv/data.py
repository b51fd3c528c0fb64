"""Corpora, splitting and batching: token ids to train on (tokenizers are in tokenizer.py).

    stdlib_corpus()      English docstrings of Python standard-library modules
    synthetic_corpus()   a seeded token stream with a long-range association rule
    split(), get_batch() train/val split and random (B,T) windows
    load_dataset()       one call from a name or a path to train/val ids

Notation: B batch, T context length (sequence length), V vocabulary size.
"""

import functools
import importlib
import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minimolkv import validate
from minimolkv.tokenizer import BPETokenizer, ByteTokenizer, IdTokenizer, _as_ids


# ----------------------------------------------------------------------------
# corpora
# ----------------------------------------------------------------------------

# Pure-Python modules present in CPython 3.10-3.13 with plenty of docstrings.
# Not pdb: a Jupyter kernel replaces pdb.Pdb with its own debugger class, so
# the corpus would differ between the command line and the lessons.
STDLIB_MODULES = (
    "argparse", "calendar", "cmd", "codecs", "collections", "configparser", "contextlib",
    "copy", "csv", "dataclasses", "difflib", "email.message", "enum", "fnmatch", "fractions",
    "ftplib", "functools", "getopt", "gettext", "glob", "gzip", "heapq", "html.parser",
    "http.client", "http.cookiejar", "http.server", "imaplib", "inspect", "ipaddress", "json",
    "logging", "logging.handlers", "mailbox", "mimetypes", "numbers", "optparse", "pathlib",
    "pickletools", "pprint", "queue", "random", "sched", "selectors", "shlex", "shutil",
    "smtplib", "socketserver", "statistics", "string", "subprocess", "tarfile", "tempfile",
    "textwrap", "threading", "timeit", "tokenize", "trace", "traceback", "unittest.case",
    "urllib.parse", "urllib.request", "uuid", "warnings", "weakref", "zipfile",
)


METHOD_TYPES = (classmethod, staticmethod, property)


def _own_doc(obj):
    """The object's own docstring, cleaned -- not one inherited from a base class
    (inspect.getdoc would inherit, repeating e.g. object.__init__'s text)."""
    if isinstance(obj, (classmethod, staticmethod)):
        obj = obj.__func__
    doc = getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


@functools.lru_cache(maxsize=1)
def stdlib_corpus():
    """English text: the docstrings of the STDLIB_MODULES, as one str.

    Per module, in the order listed: the module docstring, then, in sorted
    name order, each public class and function defined in that module, and
    for each class its own public methods/properties (sorted). Docstrings are
    cleaned with inspect.cleandoc, repeats dropped, non-ASCII characters
    removed, and joined by blank lines. Deterministic for a given Python
    version (docstrings change a little between versions); about 0.5 MB on
    3.11. A module missing from a trimmed-down Python is skipped.
    """
    seen, docs = set(), []
    for mod_name in STDLIB_MODULES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(mod_name)
        except ImportError:
            continue
        objects = [module]
        for name in sorted(vars(module)):
            obj = vars(module)[name]
            if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if getattr(obj, "__module__", None) != mod_name:
                continue                                   # imported from elsewhere
            objects.append(obj)
            if inspect.isclass(obj):
                objects += [m for a, m in sorted(vars(obj).items()) if not a.startswith("_")
                            and (inspect.isfunction(m) or isinstance(m, METHOD_TYPES))]
        for obj in objects:
            doc = _own_doc(obj).encode("ascii", errors="ignore").decode("ascii").strip()
            if doc and doc not in seen:
                seen.add(doc)
                docs.append(doc)
    return "\n\n".join(docs) + "\n"


# The synthetic corpus: ids 0..K-1 are keys, K the trigger, K+1..2K the answers
# (answer k = K+1+k), the rest fillers.
SYN_KEYS = 8          # K
SYN_P_KEY = 0.05      # chance that a token is a (new) key
SYN_P_TRIGGER = 0.10  # chance that a token is the trigger
SYN_BRANCH = 4        # successors per row of the filler bigram table


def _synthetic_tables(vocab_size, seed):
    """The filler bigram table: succ (V,4) filler ids, prob (V,4) their probabilities."""
    vocab_size = validate.positive_int(vocab_size, "vocab_size")
    first_filler = 2 * SYN_KEYS + 1
    if vocab_size < first_filler + SYN_BRANCH:
        raise ValueError(f"vocab_size must be >= {first_filler + SYN_BRANCH} for the synthetic "
                         f"corpus ({SYN_KEYS} keys, a trigger, {SYN_KEYS} answers, fillers), "
                         f"got {vocab_size}")
    rng = np.random.default_rng(seed)
    succ = np.stack([rng.choice(np.arange(first_filler, vocab_size), SYN_BRANCH, replace=False)
                     for _ in range(vocab_size)])                    # (V,4)
    prob = rng.dirichlet(np.ones(SYN_BRANCH), size=vocab_size)       # (V,4)
    return succ, prob, rng


def synthetic_corpus(n_tokens, vocab_size, seed):
    """A seeded stream of n_tokens ids in [0, V) with a rule that needs context.

    Ids (K = SYN_KEYS = 8): 0..K-1 keys, K the trigger, K+1..2K answers
    (answer of key k = K+1+k), 2K+1..V-1 fillers. The first token is a
    uniformly drawn key. Then each next token, given the previous token
    `prev` and the most recent key `key`, is:

      * if prev is the trigger: the answer of `key`, always;
      * otherwise: with prob SYN_P_KEY = 0.05 a uniformly drawn key (the new
        `key`), with prob SYN_P_TRIGGER = 0.10 the trigger, else a filler from
        the bigram row of `prev`: one of 4 filler ids succ[prev] with
        probabilities prob[prev] ~ Dirichlet(1,1,1,1), both drawn from `seed`.

    So fillers are predictable from the previous token alone, keys and
    triggers are not predictable at all, and the answer after a trigger is
    certain -- but only to a model that remembers the last key (about 22
    tokens back on average: a new key comes every 1/(0.05 * 10/11) tokens).
    synthetic_reference_losses gives the losses to beat.
    """
    n_tokens = validate.positive_int(n_tokens, "n_tokens")
    succ, prob, rng = _synthetic_tables(vocab_size, seed)
    cum = np.cumsum(prob, axis=1).tolist()                           # (V,4) as lists: fast in a loop
    succ = succ.tolist()
    u = rng.random(n_tokens).tolist()                                # which kind of token
    u_fill = rng.random(n_tokens).tolist()                           # which filler
    new_key = rng.integers(0, SYN_KEYS, size=n_tokens).tolist()      # which key
    trigger = SYN_KEYS
    ids = [new_key[0]]
    key = new_key[0]
    for t in range(1, n_tokens):
        prev = ids[-1]
        if prev == trigger:
            nxt = SYN_KEYS + 1 + key
        elif u[t] < SYN_P_KEY:
            nxt = key = new_key[t]
        elif u[t] < SYN_P_KEY + SYN_P_TRIGGER:
            nxt = trigger
        else:
            j = 0
            while j < SYN_BRANCH - 1 and u_fill[t] > cum[prev][j]:
                j += 1
            nxt = succ[prev][j]
        ids.append(nxt)
    return np.array(ids, dtype=np.int64)                             # (n_tokens,)


def synthetic_names(vocab_size):
    """Readable names for the synthetic ids: K0.. keys, '?' the trigger, A0.. answers, w<id> fillers."""
    return ([f"K{k}" for k in range(SYN_KEYS)] + ["?"] + [f"A{k}" for k in range(SYN_KEYS)]
            + [f"w{i}" for i in range(2 * SYN_KEYS + 1, vocab_size)])


def synthetic_reference_losses(ids, vocab_size, seed):
    """Mean loss in nats of two ideal predictors over ids[1:], for ids from
    synthetic_corpus(..., vocab_size, seed) (any slice of it, e.g. the val split).

    "optimal":        knows the rule and every earlier token, hence the last key;
    "previous_token": knows the rule but sees only the previous token, so after
                      a trigger it can only spread over the K answers (log K).
    Elsewhere the two agree: only answers need more than the previous token.
    Before the first key of the slice the key is unknown to both. A model with
    context length T sees a key only when it lies in its window, so its best
    lies between the two numbers.
    """
    ids = _as_ids(ids, vocab_size)
    if len(ids) < 2:
        raise ValueError(f"ids must hold at least 2 tokens, got {len(ids)}")
    succ, prob, _ = _synthetic_tables(vocab_size, seed)
    bigram = np.zeros((vocab_size, vocab_size))                      # (V,V) P(filler | prev)
    np.put_along_axis(bigram, succ, prob, axis=1)
    pos = np.arange(len(ids))                                        # (n,)
    last_key_pos = np.maximum.accumulate(np.where(ids < SYN_KEYS, pos, -1))  # (n,) -1: none yet
    key = np.where(last_key_pos >= 0, ids[last_key_pos], -1)[:-1]    # (n-1,) the key when predicting
    prev, nxt = ids[:-1], ids[1:]                                    # (n-1,) each
    p_free = np.where(nxt < SYN_KEYS, SYN_P_KEY / SYN_KEYS,          # (n-1,) when prev is no trigger
                      np.where(nxt == SYN_KEYS, SYN_P_TRIGGER,
                               (1 - SYN_P_KEY - SYN_P_TRIGGER) * bigram[prev, nxt]))
    is_answer = (nxt > SYN_KEYS) & (nxt <= 2 * SYN_KEYS)
    p_guess = np.where(is_answer, 1.0 / SYN_KEYS, 0.0)               # (n-1,) answer without the key
    p_known = np.where(key >= 0, nxt == SYN_KEYS + 1 + key, p_guess)  # (n-1,) answer with the key
    after_trigger = prev == SYN_KEYS
    with np.errstate(divide="ignore"):                               # p = 0: ids not from this rule
        optimal = -np.log(np.where(after_trigger, p_known, p_free))
        previous_token = -np.log(np.where(after_trigger, p_guess, p_free))
    return {"optimal": float(optimal.mean()), "previous_token": float(previous_token.mean())}


# ----------------------------------------------------------------------------
# files, splits, batches
# ----------------------------------------------------------------------------

def load_text(path):
    """The text of a UTF-8 file (a leading byte-order mark is dropped)."""
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "does not exist"
        raise FileNotFoundError(f"path {str(path)!r} {what}; give a UTF-8 text file")
    data = p.read_bytes()
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


def get_batch(ids, batch_size, context_len, rng):
    """B random windows of ids: x (B,T) and y (B,T) = x shifted by one (the next tokens)."""
    _check_id_array(ids)
    B = validate.positive_int(batch_size, "batch_size")
    T = validate.positive_int(context_len, "context_len")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    if len(ids) < T + 1:
        raise ValueError(f"ids holds {len(ids)} tokens, fewer than context_len + 1 = {T + 1}; "
                         f"use a shorter context_len or more data")
    starts = rng.integers(0, len(ids) - T, size=B)                   # (B,) window s..s+T fits
    idx = starts[:, None] + np.arange(T)                             # (B,T)
    x = ids[idx].astype(np.int64)                                    # (B,T)
    y = ids[idx + 1].astype(np.int64)                                # (B,T)
    return x, y


@dataclass
class Dataset:
    """What load_dataset returns."""
    train: np.ndarray          # (n_train,) int64 token ids
    val: np.ndarray            # (n_val,) int64 token ids, the text after train
    tokenizer: object          # ByteTokenizer | BPETokenizer | IdTokenizer
    description: str


@functools.lru_cache(maxsize=4)
def _trained_bpe(text, vocab_size):
    return BPETokenizer.train(text, vocab_size)


def load_dataset(name_or_path, tokenizer="bpe", vocab_size=512, seed=0, n_tokens=300_000,
                 val_fraction=0.1):
    """Train and val ids of "stdlib", "synthetic" or a UTF-8 text file at a path.

    Text is split by characters (last val_fraction is val) before tokenizing,
    and BPE is trained on the train part only. "synthetic" ignores
    `tokenizer`: its ids get an IdTokenizer (K0 .. keys, ? trigger, A0 ..
    answers, w<id> fillers); it uses n_tokens, vocab_size and seed, and its
    description quotes synthetic_reference_losses on val.
    """
    if name_or_path == "synthetic":
        ids = synthetic_corpus(n_tokens, vocab_size, seed)
        train, val = split(ids, val_fraction)
        ref = synthetic_reference_losses(val, vocab_size, seed)
        desc = (f"synthetic: {len(ids)} tokens, V={vocab_size}, seed={seed}; val loss of the ideal "
                f"predictor {ref['optimal']:.3f}, previous-token only {ref['previous_token']:.3f}")
        return Dataset(train, val, IdTokenizer(synthetic_names(vocab_size)), desc)
    if tokenizer not in ("bpe", "byte"):
        raise ValueError(f"tokenizer must be 'bpe' or 'byte', got {tokenizer!r}")
    if name_or_path == "stdlib":
        text, source = stdlib_corpus(), "stdlib docstrings"
    elif isinstance(name_or_path, (str, Path)) and Path(name_or_path).exists():
        text, source = load_text(name_or_path), f"file {str(name_or_path)!r}"   # a folder: load_text says so
    else:
        raise FileNotFoundError(f"the data (name_or_path, --data) must be 'stdlib', 'synthetic' or the "
                                f"path of a text file; there is no file {str(name_or_path)!r}")
    _check_fraction(val_fraction)
    cut = int(len(text) * (1 - val_fraction))
    tok = _trained_bpe(text[:cut], vocab_size) if tokenizer == "bpe" else ByteTokenizer()
    train, val = tok.encode(text[:cut]), tok.encode(text[cut:])
    if len(val) == 0:
        raise ValueError(f"{source} is too short to keep a validation part")
    desc = (f"{source}: {len(text)} characters, {tokenizer} tokenizer (V={tok.vocab_size}), "
            f"{len(train)} train / {len(val)} val tokens")
    return Dataset(train, val, tok, desc)


@dataclass(frozen=True)
class DataSpec:
    """Which data, so a resumed run rebuilds exactly the same token stream."""
    name: str = "stdlib"                     # "stdlib" | "synthetic" | a path
    tokenizer: str = "bpe"                   # "bpe" | "byte" (ignored by synthetic)
    vocab_size: int = 512
    seed: int = 0

    def load(self):
        return load_dataset(self.name, tokenizer=self.tokenizer, vocab_size=self.vocab_size,
                            seed=self.seed)
