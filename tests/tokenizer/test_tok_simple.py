"""SimpleTokenizerV1/V2 and build_vocab against the book's chapter 2 numbers and outputs."""
import pytest
from conftest import require_data

from tokenizer import SimpleTokenizerV1, SimpleTokenizerV2, UnknownTokenError, build_vocab
from tokenizer.simple import preprocess

SPECIALS = ["<|endoftext|>", "<|unk|>"]


@pytest.fixture(scope="module")
def verdict() -> str:
    return require_data("the-verdict.txt").read_text(encoding="utf-8")


def test_preprocess_splits_like_the_book():
    pieces = preprocess("Hello, world. Is this-- a test?")
    assert pieces == ["Hello", ",", "world", ".", "Is", "this", "--", "a", "test", "?"]


def test_build_vocab_sorted_then_specials():
    vocab = build_vocab("b a, c a", special_tokens=SPECIALS)
    assert list(vocab) == [",", "a", "b", "c", "<|endoftext|>", "<|unk|>"]
    assert list(vocab.values()) == list(range(6))


def test_book_vocabulary_sizes(verdict):
    assert len(build_vocab(verdict)) == 1130
    vocab = build_vocab(verdict, special_tokens=SPECIALS)
    assert len(vocab) == 1132 and vocab["<|endoftext|>"] == 1130 and vocab["<|unk|>"] == 1131


def test_v1_book_example(verdict):
    tok = SimpleTokenizerV1(build_vocab(verdict))
    text = """"It's the last he painted, you know," Mrs. Gisburn said with pardonable pride."""
    ids = tok.encode(text)
    assert ids == [1, 56, 2, 850, 988, 602, 533, 746, 5, 1126, 596, 5, 1, 67, 7, 38, 851, 1108, 754, 793, 7]
    assert tok.decode(ids) == '" It\' s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'


def test_v1_unknown_word_names_it():
    tok = SimpleTokenizerV1(build_vocab("do you like tea?"))
    with pytest.raises(KeyError, match="'Hello' is not in the vocabulary"):
        tok.encode("Hello, do you like tea?")
    with pytest.raises(ValueError, match="Hello"):
        tok.encode("Hello")
    with pytest.raises(UnknownTokenError):
        tok.encode("Hello")


def test_v2_book_example(verdict):
    tok = SimpleTokenizerV2(build_vocab(verdict, special_tokens=SPECIALS))
    text = " <|endoftext|> ".join(("Hello, do you like tea?", "In the sunlit terraces of the palace."))
    ids = tok.encode(text)
    assert ids == [1131, 5, 355, 1126, 628, 975, 10, 1130, 55, 988, 956, 984, 722, 988, 1131, 7]
    assert tok.decode(ids) == "<|unk|>, do you like tea? <|endoftext|> In the sunlit terraces of the <|unk|>."


def test_v2_needs_unk():
    with pytest.raises(ValueError, match="<\\|unk\\|>"):
        SimpleTokenizerV2(build_vocab("a b"))
