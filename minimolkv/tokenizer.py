"""Tokenizers: text <-> token ids. encode(str) -> ids (n,) int64, decode(ids) -> str.

    ByteTokenizer        one token per UTF-8 byte (V = 256)
    BPETokenizer         byte-level BPE trained on a text (V >= 256)
    IdTokenizer          names for the ids of the synthetic corpus
    tokenizer_from_dict  rebuild any of them from its to_dict() (checkpoints)
    text_pieces          the text each new id adds, to print tokens as they are generated

Notation: V vocabulary size, n the number of tokens of a text.
"""

import codecs
import math
import re
from collections import Counter, defaultdict
from heapq import heapify, heappop, heappush
from itertools import repeat

import numpy as np

from minimolkv import validate


def _as_ids(ids, vocab_size, name="ids"):
    """A 1-D integer array of token ids in [0, vocab_size); lists are accepted too."""
    if isinstance(ids, (list, tuple)):
        ids = np.array(ids, dtype=np.int64) if len(ids) == 0 else np.array(ids)
    validate.token_ids(ids, vocab_size, name)
    validate.array(ids, name, ndim=1)
    return ids


def _check_text(text, name="text"):
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")                        # lone surrogates cannot be UTF-8
    except UnicodeEncodeError as err:
        raise ValueError(f"{name} holds a character UTF-8 cannot encode "
                         f"({text[err.start]!r} at index {err.start}); use valid Unicode text") from None


# ----------------------------------------------------------------------------
# tokenizers: encode(str) -> ids (n,) int64, decode(ids) -> str
# ----------------------------------------------------------------------------

class ByteTokenizer:
    """One token per UTF-8 byte: id = byte value, V = 256. Nothing to train."""

    vocab_size = 256

    def encode(self, text):
        data = _check_text(text)
        return np.frombuffer(data, dtype=np.uint8).astype(np.int64)      # (n,)

    def decode(self, ids):
        """Bytes that are not valid UTF-8 (possible in sampled text) become U+FFFD."""
        ids = _as_ids(ids, 256)
        return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def to_dict(self):
        return {"kind": "byte"}


# Pre-split text into chunks before BPE: a word with its leading space, a
# number, a run of punctuation, or whitespace. Merges never cross a chunk
# boundary, so training only needs each *unique* chunk and its count. The
# alternatives cover every character (\w is digit or not, else \s or not), so
# the chunks concatenate back to the text exactly.
_CHUNK_RE = re.compile(r" ?[^\W\d]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+")
MAX_CHUNK = 64       # longer runs (a DNA sequence, a long hash) are cut into pieces of this many
                     # characters: BPE's work per chunk grows with its length squared. (Words of
                     # real text are shorter: Shakespeare's longest chunk has 27 characters.)


def chunks(text):
    """The chunks BPE works on: _CHUNK_RE's, each cut into pieces of at most MAX_CHUNK characters."""
    for chunk in _CHUNK_RE.findall(text):
        if len(chunk) <= MAX_CHUNK:
            yield chunk
        else:
            yield from (chunk[i:i + MAX_CHUNK] for i in range(0, len(chunk), MAX_CHUNK))


def _merge(seq, pair, new_id):
    """Replace every non-overlapping occurrence of `pair`, left to right, by `new_id`."""
    out, i = [], 0
    while i < len(seq):
        if i + 1 < len(seq) and seq[i] == pair[0] and seq[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(seq[i])
            i += 1
    return out


class BPETokenizer:
    """Byte-level byte-pair encoding.

    Ids 0..255 are the bytes; merge k (a pair of existing ids) creates id
    256 + k. Encoding applies the merges to each chunk in the order they were
    learned, so any str -- emoji, text unlike the training corpus -- encodes
    (at worst into single bytes) and decodes back exactly.
    """

    MAX_VOCAB_BYTES = 2 ** 26      # 64 MiB: real vocabularies need well under 1 MiB
    MAX_WORK = 4_000_000           # ids rewritten by training's merges in all: seconds (see train)

    def __init__(self, merges):
        self.merges = [(int(a), int(b)) for a, b in merges]
        lengths = [1] * 256                                # bytes per id, counted before building:
        for k, (a, b) in enumerate(self.merges):          # merges (0,0), (256,256), ... double each time
            if not (0 <= a < 256 + k and 0 <= b < 256 + k):
                raise ValueError(f"merges[{k}] = {(a, b)} uses an id not defined before it "
                                 f"(allowed: [0, {256 + k}))")
            lengths.append(lengths[a] + lengths[b])
        if sum(lengths) > self.MAX_VOCAB_BYTES:
            raise ValueError(f"merges spell tokens of {sum(lengths):,} bytes in all, more than "
                             f"{self.MAX_VOCAB_BYTES:,}: not a vocabulary BPE training makes")
        self.vocab = [bytes([i]) for i in range(256)]      # id -> the bytes it stands for
        for a, b in self.merges:
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self.ranks = {pair: 256 + k for k, pair in enumerate(self.merges)}  # pair -> new id
        self._cache = {}                                   # chunk str -> list of ids

    @property
    def vocab_size(self):
        return 256 + len(self.merges)

    @classmethod
    def train(cls, text, vocab_size):
        """Learn vocab_size - 256 merges from `text`, most frequent adjacent pair first.

        Ties go to the smallest pair (a, b), so training is deterministic.
        Training stops early, with a smaller vocabulary, once no pair occurs
        twice, or once the merges have rewritten MAX_WORK ids in all (text that
        repeats little, e.g. a DNA sequence, would otherwise take hours; real text
        stays below it -- Shakespeare's plays at V=2048 rewrite under 3 million). Pair
        counts are kept incrementally: a merge only revisits the unique chunks
        that contain the merged pair.
        """
        _check_text(text)
        vocab_size = validate.positive_int(vocab_size, "vocab_size")
        if vocab_size < 256:
            raise ValueError(f"vocab_size must be >= 256 (the byte ids), got {vocab_size}")
        chunk_counts = Counter(chunks(text))               # unique chunk -> how often it occurs
        words = [list(c.encode("utf-8")) for c in chunk_counts]
        freqs = list(chunk_counts.values())
        pair_counts = defaultdict(int)                     # (a, b) -> occurrences in the text
        where = defaultdict(set)                           # (a, b) -> indices of words holding it
        for i, w in enumerate(words):
            for pair in zip(w, w[1:]):
                pair_counts[pair] += freqs[i]
                where[pair].add(i)
        heap = [(-c, pair) for pair, c in pair_counts.items()]   # max count first, then smallest pair
        heapify(heap)
        merges, work = [], 0
        while len(merges) < vocab_size - 256 and heap and work < cls.MAX_WORK:
            neg_count, pair = heappop(heap)
            if pair_counts.get(pair, 0) != -neg_count:
                continue                                   # stale entry: the count changed since
            if -neg_count < 2:
                break
            new_id = 256 + len(merges)
            merges.append(pair)
            touched = set()
            for i in where.pop(pair):
                old = words[i]
                new = _merge(old, pair, new_id)
                work += len(old)
                if len(new) == len(old):
                    continue                               # stale index: pair already gone
                for p in zip(old, old[1:]):                # take the word's old pairs out...
                    pair_counts[p] -= freqs[i]
                    touched.add(p)
                for p in zip(new, new[1:]):                # ...and its new pairs in
                    pair_counts[p] += freqs[i]
                    where[p].add(i)
                    touched.add(p)
                words[i] = new
            for p in touched:
                if pair_counts[p] > 0:
                    heappush(heap, (-pair_counts[p], p))
                else:
                    del pair_counts[p]
        return cls(merges)

    def _encode_chunk(self, chunk):
        ids = list(chunk.encode("utf-8"))
        while len(ids) >= 2:
            # the earliest-learned merge present; applying merges in learned order
            new_id = min(map(self.ranks.get, zip(ids, ids[1:]), repeat(math.inf)))
            if new_id == math.inf:
                break
            ids = _merge(ids, self.merges[new_id - 256], new_id)
        return ids

    def encode(self, text):
        _check_text(text)
        out = []
        for chunk in chunks(text):
            if chunk not in self._cache:                   # a text repeats few unique chunks
                self._cache[chunk] = self._encode_chunk(chunk)
            out.extend(self._cache[chunk])
        return np.array(out, dtype=np.int64)               # (n,)

    def decode(self, ids):
        """Byte sequences that are not valid UTF-8 (possible in sampled text) become U+FFFD."""
        ids = _as_ids(ids, self.vocab_size)
        return b"".join(self.vocab[i] for i in ids.tolist()).decode("utf-8", errors="replace")

    def to_dict(self):
        return {"kind": "bpe", "merges": [[a, b] for a, b in self.merges]}

    @classmethod
    def from_dict(cls, d):
        return cls(d["merges"])


class IdTokenizer:
    """A name per id, for corpora that are already ids (the synthetic one).

    decode joins the names with spaces; encode splits on whitespace and looks
    each name up, so encode(decode(ids)) == ids.
    """

    def __init__(self, names):
        self.names = [str(n) for n in names]
        self.index = {n: i for i, n in enumerate(self.names)}
        if len(self.index) != len(self.names) or any(not n or n.split() != [n] for n in self.names):
            raise ValueError("names must be distinct, non-empty and free of whitespace")

    @property
    def vocab_size(self):
        return len(self.names)

    def encode(self, text):
        _check_text(text)
        unknown = [w for w in text.split() if w not in self.index]
        if unknown:
            raise ValueError(f"text holds {unknown[0]!r}, not a token name "
                             f"(names are e.g. {self.names[:3]} ...)")
        return np.array([self.index[w] for w in text.split()], dtype=np.int64)  # (n,)

    def decode(self, ids):
        ids = _as_ids(ids, self.vocab_size)
        return " ".join(self.names[i] for i in ids.tolist())

    def to_dict(self):
        return {"kind": "ids", "names": list(self.names)}


def tokenizer_from_dict(d):
    """Rebuild a tokenizer from its to_dict() (e.g. read from a checkpoint's JSON).
    Anything else -- a missing key, merges that are not pairs of ids, names that are
    not strings -- raises ValueError naming what is wrong."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        merges = d.get("merges")
        if not isinstance(merges, list) or not all(
                isinstance(m, list) and len(m) == 2 and all(isinstance(i, int) and not isinstance(i, bool) for i in m)
                for m in merges):
            raise ValueError(f"a 'bpe' tokenizer dict needs 'merges': a list of [id, id] pairs, "
                             f"got {str(merges)[:80]}")
        return BPETokenizer.from_dict(d)
    if kind == "ids":
        names = d.get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"an 'ids' tokenizer dict needs 'names': a list of strings, got {str(names)[:80]}")
        return IdTokenizer(names)
    raise ValueError(f"d must be a tokenizer dict with kind 'byte', 'bpe' or 'ids', got {d!r:.80}")


def text_pieces(tokenizer):
    """piece(id) -> the text one more token adds after the text decoded so far, so
    tokens can be printed as they are generated; piece(None) ends the stream.

    A token may hold part of a UTF-8 character (byte and BPE tokens are bytes), so
    the pieces go through an incremental UTF-8 decoder: decode(prompt) followed by
    the pieces of the new ids is exactly decode(prompt + new ids)."""
    if isinstance(tokenizer, IdTokenizer):
        return lambda i: "" if i is None else " " + tokenizer.names[i]           # decode joins with spaces
    vocab = tokenizer.vocab if isinstance(tokenizer, BPETokenizer) else [bytes([b]) for b in range(256)]
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return lambda i: utf8.decode(b"", final=True) if i is None else utf8.decode(vocab[i])
