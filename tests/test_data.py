"""tokenizer.py, corpora.py and data.py: tokenizers, corpora, splits and batches."""

import hashlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from minimolkv import corpora, data, tokenizer
from minimolkv.corpora import (SyntheticStream, shakespeare_plays, stdlib_corpus, synthetic_corpus,
                               synthetic_reference_losses)
from minimolkv.data import eval_windows, get_batch, load_dataset, load_text, split
from minimolkv.tokenizer import BPETokenizer, ByteTokenizer, IdTokenizer, tokenizer_from_dict

STRANGE_TEXTS = [
    "",
    "a",
    "Hello, world!  Two  spaces,\ttabs\t\tand\r\nCRLF line ends.\n\n\n",
    "émoji 🙂🚀 👩‍👩‍👧 mixed with ASCII, combining e\u0301 and a zero\u200bwidth space",
    "日本語のテキスト と 中文 和 한국어, Ελληνικά, русский, עברית, العربية",
    "snake_case __dunder__ x1y2 3.14159 1e-8 0x1F ,,,;;; ---",
    "\x00\x01\x1f control \x7f bytes \U0010ffff last code point",
]


def random_unicode(rng, n):
    """n random code points from all planes, surrogates excluded (UTF-8 cannot encode them)."""
    cps = rng.integers(0, 0x110000, size=n)
    cps = cps[(cps < 0xD800) | (cps > 0xDFFF)]
    return "".join(map(chr, cps.tolist()))


@pytest.fixture(scope="module")
def corpus():
    return stdlib_corpus()


@pytest.fixture(scope="module")
def bpe(corpus):
    return BPETokenizer.train(corpus, 512)


def apply_merges_in_order(text, merges):
    """Reference BPE encoding: chunk the text, then apply each merge, in the
    order learned, to the whole chunk -- the definition encode must match."""
    out = []
    for chunk in tokenizer._CHUNK_RE.findall(text):
        ids = list(chunk.encode("utf-8"))
        for k, pair in enumerate(merges):
            ids = tokenizer._merge(ids, pair, 256 + k)
        out += ids
    return out


# ----------------------------------------------------------------------------
# tokenizers
# ----------------------------------------------------------------------------

def test_chunks_cover_the_text():
    rng = np.random.default_rng(0)
    for text in STRANGE_TEXTS + [random_unicode(rng, 300)]:
        assert "".join(tokenizer._CHUNK_RE.findall(text)) == text


@pytest.mark.parametrize("make", [ByteTokenizer, "bpe"])
def test_round_trip(make, bpe, corpus):
    tok = bpe if make == "bpe" else make()
    rng = np.random.default_rng(1)
    texts = STRANGE_TEXTS + [random_unicode(rng, 500) for _ in range(5)] + [corpus[:50_000]]
    for text in texts:
        ids = tok.encode(text)
        assert ids.dtype == np.int64 and ids.ndim == 1
        assert ids.size == 0 or (ids.min() >= 0 and ids.max() < tok.vocab_size)
        assert tok.decode(ids) == text
    assert tok.decode(list(tok.encode("plain list"))) == "plain list"


def test_bpe_round_trips_the_whole_corpus_and_compresses(bpe, corpus):
    ids = bpe.encode(corpus)
    assert bpe.decode(ids) == corpus
    n_bytes = len(corpus.encode("utf-8"))
    assert len(ids) < 0.6 * n_bytes                        # ~2 bytes per token at V=512
    unseen = "The quick brown fox jumps over the lazy dog, and returns the value."
    assert len(bpe.encode(unseen)) < len(unseen.encode("utf-8"))


def test_bpe_is_deterministic_and_sized(corpus, bpe):
    again = BPETokenizer.train(corpus, 512)
    assert again.merges == bpe.merges
    assert bpe.vocab_size == 512 and len(bpe.merges) == 256
    assert len(set(bpe.vocab)) == 512                      # every id a different byte string


def test_bpe_small_example_by_hand():
    # "aaabdaaabac": aa occurs 4 times -> 256; then (97,98) "ab" and (256,97)
    # "aaa" both occur twice, the tie goes to the smaller pair (97,98) -> 257;
    # then (256,257) "aaab" twice -> 258; then every pair occurs once: stop.
    tok = BPETokenizer.train("aaabdaaabac", 300)
    assert tok.merges == [(97, 97), (97, 98), (256, 257)]
    assert tok.vocab_size == 259
    assert tok.encode("aaabdaaabac").tolist() == [258, 100, 258, 97, 99]
    assert tok.vocab[258] == b"aaab"


def naive_train(text, n_merges):
    """Reference BPE training: recount every pair from scratch before each merge."""
    words = [list(c.encode("utf-8")) for c in tokenizer._CHUNK_RE.findall(text)]
    merges = []
    for k in range(n_merges):
        counts = {}
        for w in words:
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts or max(counts.values()) < 2:
            break
        best = max(counts.values())
        pair = min(p for p, c in counts.items() if c == best)   # ties: smallest pair
        merges.append(pair)
        words = [tokenizer._merge(w, pair, 256 + k) for w in words]
    return merges


def test_bpe_training_matches_a_naive_recount(corpus):
    text = corpus[20_000:26_000]
    assert BPETokenizer.train(text, 256 + 120).merges == naive_train(text, 120)
    tiny = "abab ab aab  abba\n\nbaba"
    assert BPETokenizer.train(tiny, 300).merges == naive_train(tiny, 44)


def test_bpe_encode_applies_merges_in_learned_order(bpe, corpus):
    rng = np.random.default_rng(2)
    texts = [corpus[100_000:103_000], STRANGE_TEXTS[2], STRANGE_TEXTS[5],
             "aaaaaaa   eeeee the the the", random_unicode(rng, 200)]
    for text in texts:
        assert bpe.encode(text).tolist() == apply_merges_in_order(text, bpe.merges)


def test_serialisation_restores_every_kind(bpe):
    names = corpora.synthetic_names(40)
    for tok in (ByteTokenizer(), bpe, IdTokenizer(names)):
        d = json.loads(json.dumps(tok.to_dict()))          # must survive JSON
        back = tokenizer_from_dict(d)
        assert type(back) is type(tok) and back.vocab_size == tok.vocab_size
        ids = np.arange(tok.vocab_size)
        assert back.decode(ids) == tok.decode(ids)
    text = STRANGE_TEXTS[3]
    assert tokenizer_from_dict(bpe.to_dict()).encode(text).tolist() == bpe.encode(text).tolist()
    with pytest.raises(ValueError, match="kind"):
        tokenizer_from_dict({"kind": "sentencepiece"})
    with pytest.raises(ValueError, match="merges\\[1\\]"):
        BPETokenizer.from_dict({"kind": "bpe", "merges": [[97, 98], [300, 1]]})


def test_id_tokenizer():
    tok = IdTokenizer(corpora.synthetic_names(30))
    ids = np.array([0, 8, 9, 17, 29])
    assert tok.decode(ids) == "K0 ? A0 w17 w29"
    assert tok.encode("K0 ? A0 w17 w29").tolist() == ids.tolist()
    with pytest.raises(ValueError, match="'w99'"):
        tok.encode("K0 w99")


def test_tokenizer_bad_inputs(bpe):
    for tok in (ByteTokenizer(), bpe):
        with pytest.raises(TypeError, match="text must be a str"):
            tok.encode(b"bytes")
        with pytest.raises(ValueError, match="UTF-8 cannot encode"):
            tok.encode("lone \ud800 surrogate")
        with pytest.raises(ValueError, match=f"outside the vocabulary \\[0, {tok.vocab_size}\\)"):
            tok.decode(np.array([1, tok.vocab_size]))
        with pytest.raises(TypeError, match="integers"):
            tok.decode(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="vocab_size must be >= 256"):
        BPETokenizer.train("abc", 100)


def test_decode_of_invalid_utf8_does_not_crash(bpe):
    assert ByteTokenizer().decode(np.array([0xF0, 0x9F, 65])) == "\ufffdA"
    assert "\ufffd" in bpe.decode(np.array([0xE6, 98]))


# ----------------------------------------------------------------------------
# corpora
# ----------------------------------------------------------------------------

def test_stdlib_corpus_is_deterministic_and_sizeable(corpus):
    assert stdlib_corpus() is corpus                       # cached
    assert stdlib_corpus.__wrapped__() == corpus           # rebuilt: same text
    assert 300_000 < len(corpus) < 1_500_000
    assert corpus.isascii()
    assert "Return" in corpus and "\n\n" in corpus
    # a fresh interpreter (other hash seed, other import state) builds the same text
    code = ("import hashlib; from minimolkv.corpora import stdlib_corpus; "
            "print(hashlib.sha256(stdlib_corpus().encode()).hexdigest())")
    env = dict(os.environ, PYTHONHASHSEED="123")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.strip()
    assert out == hashlib.sha256(corpus.encode()).hexdigest()


def test_synthetic_corpus_seeded_and_in_range():
    a = synthetic_corpus(5000, 64, seed=3)
    assert a.dtype == np.int64 and a.shape == (5000,)
    assert a.min() >= 0 and a.max() < 64
    np.testing.assert_array_equal(a, synthetic_corpus(5000, 64, seed=3))
    assert not np.array_equal(a, synthetic_corpus(5000, 64, seed=4))
    assert len(np.unique(a)) > 40                          # keys, trigger, answers and many fillers


def test_synthetic_rule_holds():
    K = corpora.SYN_KEYS
    ids = synthetic_corpus(20_000, 48, seed=0)
    assert ids[0] < K                                      # starts with a key
    after = np.flatnonzero(ids[:-1] == K) + 1              # positions right after a trigger
    assert len(after) > 1000
    for t in after:
        last_key = ids[:t][ids[:t] < K][-1]
        assert ids[t] == K + 1 + last_key
    answers = (ids > K) & (ids <= 2 * K)
    assert np.array_equal(np.flatnonzero(answers), after)  # answers appear nowhere else
    # fillers follow the bigram table: each previous token has at most 4 filler successors
    fill = ids[1:] > 2 * K
    for prev in range(48):
        assert len(np.unique(ids[1:][fill & (ids[:-1] == prev)])) <= corpora.SYN_BRANCH


def rule_holds(ids, K=corpora.SYN_KEYS, first_key_known=True):
    """Every answer follows a trigger and names the last key; fillers follow the bigram table."""
    after = np.flatnonzero(ids[:-1] == K) + 1              # positions right after a trigger
    for t in after:
        keys = ids[:t][ids[:t] < K]
        if len(keys) or first_key_known:
            assert ids[t] == K + 1 + keys[-1]
        else:
            assert K < ids[t] <= 2 * K                     # an answer, to a key before the window
    answers = (ids > K) & (ids <= 2 * K)
    answers[0] &= first_key_known                          # a window may start right after a trigger
    assert np.array_equal(np.flatnonzero(answers), after)  # answers appear nowhere else
    return len(after)


def test_synthetic_stream_is_fresh_follows_the_rule_and_matches_the_chain():
    stream = SyntheticStream(64, seed=2)
    rng = np.random.default_rng(0)
    a = stream.windows(200, 65, rng)                       # (200,65)
    b = stream.windows(200, 65, rng)
    assert a.shape == (200, 65) and a.dtype == np.int64 and a.min() >= 0 and a.max() < 64
    assert not any(np.array_equal(x, y) for x in a for y in b)   # fresh windows, never repeated
    np.testing.assert_array_equal(a, stream.windows(200, 65, np.random.default_rng(0)))  # seeded
    assert sum(rule_holds(w, first_key_known=False) for w in a) > 500
    assert np.mean(a[:, 0] < corpora.SYN_KEYS) < 0.2       # a window starts anywhere, not at a key
    # the token statistics of the windows equal those of one long chain of the same task
    chain = synthetic_corpus(60_000, 64, seed=2)
    for kind in (lambda x: x < 8, lambda x: x == 8, lambda x: x > 16):
        assert abs(np.mean(kind(a)) - np.mean(kind(chain))) < 0.02


def test_synthetic_validation_chain_is_kept_read_only_and_is_the_seeded_chain():
    """load_dataset keeps the validation chain per (V, seed) in the process: the same
    numbers as stepping the chain afresh, shared, so nobody may write into it."""
    a = load_dataset("synthetic", vocab_size=40, seed=3).val
    b = load_dataset("synthetic", vocab_size=40, seed=3).val
    assert a is b and not a.flags.writeable
    with pytest.raises(ValueError):
        a[0] = 1
    tables = SyntheticStream(40, 3).tables
    fresh = corpora.synthetic_chains(1, len(a), tables, np.random.default_rng([3, 1]))[0]
    np.testing.assert_array_equal(a, fresh)
    assert not np.array_equal(load_dataset("synthetic", vocab_size=40, seed=4).val, a)


def test_synthetic_reference_losses():
    K = corpora.SYN_KEYS
    ids = synthetic_corpus(30_000, 64, seed=5)
    ref = synthetic_reference_losses(ids, 64, seed=5)
    assert math.isfinite(ref["optimal"])                   # every token possible under the rule
    # the two predictors differ exactly at the answers: log K each
    n_answers = np.sum(ids[:-1] == K)
    gap = n_answers * math.log(K) / (len(ids) - 1)
    assert ref["previous_token"] - ref["optimal"] == pytest.approx(gap)
    # data from another seed's bigram table is (almost surely) impossible under this one
    other = synthetic_reference_losses(synthetic_corpus(2000, 64, seed=6), 64, seed=5)
    assert other["optimal"] == math.inf
    with pytest.raises(ValueError, match="vocab_size must be >= 21"):
        synthetic_corpus(100, 20, seed=0)


# ----------------------------------------------------------------------------
# files, splits, batches
# ----------------------------------------------------------------------------

def test_load_text(tmp_path):
    good = tmp_path / "good.txt"
    good.write_bytes("\ufeffhéllo\n".encode("utf-8"))
    assert load_text(good) == "héllo\n"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_text(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match="is a directory"):
        load_text(tmp_path)
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="holds no text"):
        load_text(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8 text: byte 0xe9 at offset 3"):
        load_text(tmp_path / "latin1.txt")


def test_split():
    ids = np.arange(100)
    train, val = split(ids)
    np.testing.assert_array_equal(train, np.arange(90))
    np.testing.assert_array_equal(val, np.arange(90, 100))
    train, val = split(ids, 0.25)
    assert len(train) == 75 and val[0] == 75
    for bad in (0, 1, 1.5, -0.1, "0.1", True):
        with pytest.raises(ValueError, match="val_fraction"):
            split(ids, bad)
    with pytest.raises(ValueError, match="too few"):
        split(np.arange(3), 0.1)
    with pytest.raises(TypeError, match="integers"):
        split(np.ones(10))


def test_get_batch():
    ids = np.arange(1000, dtype=np.int32) * 3              # values tell where a window starts
    x, y = get_batch(ids, 4, 16, np.random.default_rng(0))
    assert x.shape == (4, 16) and y.shape == (4, 16)
    assert x.dtype == np.int64 and y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])     # y is x shifted by one
    np.testing.assert_array_equal(np.diff(x, axis=1), 3)   # each row a contiguous window
    np.testing.assert_array_equal(y[:, -1], x[:, -1] + 3)
    x2, _ = get_batch(ids, 4, 16, np.random.default_rng(0))
    np.testing.assert_array_equal(x, x2)                   # same generator state, same batch
    # the smallest possible data: a single window, so every row is the whole sequence
    x, y = get_batch(np.arange(9), 3, 8, np.random.default_rng(1))
    np.testing.assert_array_equal(x, np.tile(np.arange(8), (3, 1)))
    np.testing.assert_array_equal(y, np.tile(np.arange(1, 9), (3, 1)))
    # every start is reachable, including the last one
    starts = {int(get_batch(np.arange(20), 1, 8, rng)[0][0, 0]) for rng in
              [np.random.default_rng(s) for s in range(300)]}
    assert starts == set(range(12))


def test_get_batch_bad_inputs():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="fewer than context_len \\+ 1 = 9"):
        get_batch(np.arange(8), 2, 8, rng)
    with pytest.raises(TypeError, match="rng must be a numpy Generator"):
        get_batch(np.arange(100), 2, 8, np.random.RandomState(0))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        get_batch(np.arange(100), 0, 8, rng)
    with pytest.raises(TypeError, match="context_len"):
        get_batch(np.arange(100), 2, 8.0, rng)
    with pytest.raises(ValueError, match="ids must have 1 dimensions"):
        get_batch(np.zeros((10, 10), dtype=np.int64), 2, 4, rng)
    with pytest.raises(TypeError, match="ids must be a numpy array"):
        get_batch(list(range(100)), 2, 4, rng)


def test_an_answer_tells_the_ideal_predictor_its_key():
    """In a window without the key, an earlier answer A_k still names key k: the next
    answer is certain (a model can copy it, so the ideal predictor must too)."""
    K = corpora.SYN_KEYS
    chain = synthetic_corpus(4000, 64, seed=1)
    t = next(t for t in range(300, 4000) if chain[t] == K and chain[t + 1] > K)   # a trigger, then A_k
    key = chain[t + 1] - K - 1
    window = np.concatenate([chain[t:t + 2], [K, K + 1 + key]])     # ? A_k ? A_k, no key in sight
    ref = synthetic_reference_losses(window, 64, seed=1)
    # the first answer is a guess among K (log K), the second is known (0); the trigger costs -log 0.1
    assert ref["optimal"] == pytest.approx((math.log(K) - math.log(corpora.SYN_P_TRIGGER)) / 3)
    assert ref["previous_token"] == pytest.approx((2 * math.log(K) - math.log(corpora.SYN_P_TRIGGER)) / 3)


def test_eval_windows_cover_the_split_once():
    ids = np.arange(100)
    w = eval_windows(ids, 8)                               # (12, 9): 12 * 8 + 1 = 97 tokens used
    assert w.shape == (12, 9)
    np.testing.assert_array_equal(w[:, 1:].ravel(), np.arange(1, 97))   # each target predicted once
    np.testing.assert_array_equal(w[1:, 0], w[:-1, -1])    # consecutive windows share one token
    with pytest.raises(ValueError, match="fewer than context_len \\+ 1 = 9"):
        eval_windows(np.arange(8), 8)


def test_shakespeare_is_plain_text_and_enough_for_one_epoch():
    plays = shakespeare_plays()
    assert len(plays) == 38 and all(name in plays for name in data.SHAKESPEARE_VAL)
    text = "".join(plays.values())
    assert 4_500_000 < len(text) < 5_500_000
    for markup in ("**", "__", "\\", "#"):
        assert markup not in text, markup
    assert "MACBETH:\nSo foul and fair a day I have not seen." in plays["macbeth"]
    d = load_dataset("shakespeare")
    assert d.tokenizer.vocab_size == 512 and d.train_tokens >= 2_000_000     # compare's 1.5M tokens: < 1 epoch
    assert 200_000 < len(d.val) < 300_000
    assert d.tokenizer.decode(d.val).startswith(plays[data.SHAKESPEARE_VAL[0]])  # whole held-out plays


def test_load_dataset(tmp_path):
    syn = load_dataset("synthetic", vocab_size=40, seed=1)
    assert isinstance(syn.train, SyntheticStream) and syn.train_tokens is None
    assert len(syn.val) == data.SYNTHETIC_VAL_TOKENS and syn.tokenizer.vocab_size == 40
    assert not np.array_equal(syn.val, load_dataset("synthetic", vocab_size=40, seed=2).val)   # the seed's chain
    x, y = get_batch(syn.train, 4, 16, np.random.default_rng(0))
    assert x.shape == y.shape == (4, 16)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])

    path = tmp_path / "tiny.txt"
    text = "the cat sat on the mat. " * 40 + "the end."
    path.write_text(text, encoding="utf-8")
    byte = load_dataset(path, tokenizer="byte")
    assert byte.tokenizer.decode(np.concatenate([byte.train, byte.val])) == text
    small = load_dataset(str(path), tokenizer="bpe", vocab_size=270)
    assert small.tokenizer.vocab_size <= 270
    assert small.tokenizer.decode(small.train) + small.tokenizer.decode(small.val) == text
    assert len(small.train) < len(byte.train)

    std = load_dataset("stdlib", tokenizer="bpe", vocab_size=512)
    assert std.tokenizer.vocab_size == 512 and len(std.val) > 10_000
    assert std.tokenizer.decode(std.train) + std.tokenizer.decode(std.val) == stdlib_corpus()

    with pytest.raises(FileNotFoundError, match="'shakespeare', 'stdlib', 'synthetic' or the path of a text file"):
        load_dataset("stdlb")
    with pytest.raises(ValueError, match="tokenizer must be 'bpe' or 'byte'"):
        load_dataset("stdlib", tokenizer="chars")


def test_bpe_encodings_are_cached_on_disk_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMOLKV_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny.txt"
    path.write_text("the cat sat on the mat. " * 60 + "the end.", encoding="utf-8")
    first = load_dataset(path, tokenizer="bpe", vocab_size=270)
    cached = list((tmp_path / "cache").glob("bpe-270-*.npz"))
    assert len(cached) == 1
    data._trained_bpe.cache_clear()
    second = load_dataset(path, tokenizer="bpe", vocab_size=270)          # read back from the file
    np.testing.assert_array_equal(first.train, second.train)
    assert second.train.dtype == np.int64 and second.tokenizer.to_dict() == first.tokenizer.to_dict()
    cached[0].write_bytes(b"not an npz")                                   # damaged: rebuilt, not an error
    np.testing.assert_array_equal(load_dataset(path, tokenizer="bpe", vocab_size=270).val, first.val)
    path.write_text("another text entirely, the dog and the log. " * 40, encoding="utf-8")
    load_dataset(path, tokenizer="bpe", vocab_size=270)                    # another text: another file
    assert len(list((tmp_path / "cache").glob("bpe-270-*.npz"))) == 2
