"""The fast BPE trainer gives exactly the merges of a naive one, and trained tokenizers behave as specified.

The naive trainer below is minbpe-style: recount every pair of every chunk after each merge, pick the most
frequent pair, ties to the smallest (id1, id2) (the rule documented in tokenizer/training.py).
"""
import random
import re
from collections import Counter

import pytest
import regex
from conftest import require_data
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenizer import BPETokenizer, ByteLevelBPE
from tokenizer.patterns import resolve_pattern

EOT = "<|endoftext|>"


def naive_merge(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def naive_train(text, vocab_size, pattern="gpt2", special_tokens=()):
    pat = resolve_pattern(pattern)
    pieces = re.split("|".join(map(re.escape, special_tokens)), text) if special_tokens else [text]
    chunks = []
    for piece in pieces:
        found = regex.findall(pat, piece) if pat else [piece] if piece else []
        chunks.extend(list(c.encode("utf-8")) for c in found)
    merges = []
    for k in range(vocab_size - 256 - len(special_tokens)):
        stats = Counter()
        for ids in chunks:
            stats.update(zip(ids, ids[1:]))
        if not stats:
            break
        pair = min(stats, key=lambda p: (-stats[p], p))
        chunks = [naive_merge(ids, pair, 256 + k) for ids in chunks]
        merges.append(pair)
    return merges


def random_text(seed, n):
    rng = random.Random(seed)
    alphabet = ["a", "b", "c", "ab", " ", " the", "\n", "'s", "1", "23", "é", "🙂", ",", "--", "  "]
    return "".join(rng.choice(alphabet) for _ in range(n))


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4", None])
@pytest.mark.parametrize("seed", range(4))
def test_fast_equals_naive_random_texts(seed, pattern):
    text = random_text(seed, 400)
    reference = naive_train(text, 256 + 120, pattern)
    for vocab_size in (256, 257, 258, 260, 267, 290, 330, 376):
        fast = list(BPETokenizer.train(text, vocab_size, pattern=pattern).merges)
        assert fast == reference[: vocab_size - 256], f"vocab_size={vocab_size}"


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_fast_equals_naive_on_english(pattern):
    import pydoc_data.topics

    text = "\n".join(pydoc_data.topics.topics.values())[:12_000]
    reference = naive_train(text, 407, pattern, [EOT])
    for vocab_size in (300, 350, 407):
        fast = BPETokenizer.train(text, vocab_size, pattern=pattern, special_tokens=[EOT])
        assert list(fast.merges) == reference[: vocab_size - 257]


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(alphabet="ab c\n'1é", min_size=1, max_size=150),
    vocab_size=st.integers(256, 300),
    pattern=st.sampled_from(["gpt2", "gpt4", None]),
)
def test_fast_equals_naive_hypothesis(text, vocab_size, pattern):
    assert list(BPETokenizer.train(text, vocab_size, pattern=pattern).merges) == naive_train(text, vocab_size, pattern)


def test_hand_worked_example():
    # "aaabdaaabac": aa (4x) -> 256; then (a,b) and (256,a) tie at 2, the smaller pair (97, 98) -> 257;
    # then (256, 257) -> 258, leaving X d X a c.
    tok = BPETokenizer.train("aaabdaaabac", 259, pattern=None)
    assert list(tok.merges) == [(97, 97), (97, 98), (256, 257)]
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    basic = ByteLevelBPE.train("aaabdaaabac", 259)
    assert list(basic.merges) == list(tok.merges) and basic.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert basic.decode([258, 100, 258, 97, 99]) == "aaabdaaabac"


@pytest.fixture(scope="module")
def verdict_tok():
    text = require_data("the-verdict.txt").read_text(encoding="utf-8")
    return text, BPETokenizer.train(text, vocab_size=1000, special_tokens=[EOT])


def test_verdict_1000(verdict_tok):
    text, tok = verdict_tok
    assert len(tok.merges) == 1000 - 256 - 1 == 743
    assert tok.n_vocab == tok.vocab_size == 1000 and tok.eot_token == 999
    learned = tok.vocab[256:]
    assert all(b" " not in t[1:] for t in learned), [t for t in learned if b" " in t[1:]]
    sentence = "Jack embraced beauty through art and life."
    assert tok.decode(tok.encode(sentence)) == sentence
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode(f"a{EOT}", allowed_special="all")[-1] == 999


def test_specials_in_training_text_are_not_learned():
    tok = BPETokenizer.train((EOT + "hello world ") * 50, 300, special_tokens=[EOT])
    assert not any(b"<|" in t or b"|>" in t for t in tok.vocab[256:])
    assert tok.encode(EOT, allowed_special="all") == [tok.eot_token]


def test_stops_when_no_pairs_left():
    tok = BPETokenizer.train("ab", 300)
    assert list(tok.merges) == [(97, 98)] and tok.n_vocab == 257


def test_vocab_size_too_small():
    with pytest.raises(ValueError, match=r"vocab_size=256 is too small.*257"):
        BPETokenizer.train("hello", 256, special_tokens=[EOT])
    with pytest.raises(ValueError, match="vocab_size=100 is too small"):
        ByteLevelBPE.train("hello", 100)


def test_empty_text_and_other_bad_input():
    with pytest.raises(ValueError, match="empty text"):
        BPETokenizer.train("", 300)
    with pytest.raises(ValueError, match="lone surrogate '\\\\ud800' at index 1"):
        BPETokenizer.train("a\ud800", 300)
    with pytest.raises(TypeError, match="list of strings"):
        BPETokenizer.train("abc", 300, special_tokens=EOT)


def test_invalid_utf8_file(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"hello \xff world")
    with pytest.raises(ValueError, match=r"bad.txt is not valid UTF-8 \(byte 0xff at offset 6\)"):
        BPETokenizer.train_from_file(path, 300)


def test_train_from_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("héllo wörld " * 20, encoding="utf-8")
    assert list(BPETokenizer.train_from_file(path, 270).merges) == naive_train("héllo wörld " * 20, 270)
