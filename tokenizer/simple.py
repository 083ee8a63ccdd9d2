"""The book's word-level tokenizers: SimpleTokenizerV1, SimpleTokenizerV2 and the vocabulary they use.

Raschka, *Build a Large Language Model (From Scratch)*, ch. 2 (listings 2.3 and 2.4): split on punctuation,
double dashes and whitespace, map each piece to an id; V2 adds <|unk|> for unknown words and <|endoftext|>
between texts. Decoding joins with spaces and removes the space before punctuation.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

SPLIT_RE = r'([,.:;?_!"()\']|--|\s)'  # the book's split: punctuation, "--" and whitespace, kept as pieces
UNK, EOT = "<|unk|>", "<|endoftext|>"


class UnknownTokenError(KeyError, ValueError):
    """A word that is not in the vocabulary (a KeyError, as in the book, and a ValueError)."""

    def __str__(self) -> str:  # KeyError would print the repr of the whole message
        return str(self.args[0])


def preprocess(text: str) -> list[str]:
    """The book's pre-processing: split on SPLIT_RE and drop empty and whitespace-only pieces."""
    return [item.strip() for item in re.split(SPLIT_RE, text) if item.strip()]


def build_vocab(text: str, special_tokens: Iterable[str] = ()) -> dict[str, int]:
    """Vocabulary {token: id} of `text`: its sorted unique tokens, then `special_tokens` appended (book ch. 2)."""
    all_tokens = sorted(set(preprocess(text)))
    all_tokens.extend(t for t in special_tokens if t not in set(all_tokens))
    return {token: integer for integer, token in enumerate(all_tokens)}


class SimpleTokenizerV1:
    """Word-level tokenizer over a fixed vocabulary; an unknown word is an error (book listing 2.3)."""

    def __init__(self, vocab: dict[str, int]):
        self.str_to_int = vocab
        self.int_to_str = {i: s for s, i in vocab.items()}

    def encode(self, text: str) -> list[int]:
        """Ids of the pieces of `text`; UnknownTokenError names the first word not in the vocabulary."""
        preprocessed = preprocess(text)
        for s in preprocessed:
            if s not in self.str_to_int:
                raise UnknownTokenError(
                    f"{s!r} is not in the vocabulary; use SimpleTokenizerV2 (maps it to {UNK}) or build the"
                    " vocabulary from a text that contains it"
                )
        return [self.str_to_int[s] for s in preprocessed]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the ids: joined by spaces, then the space before punctuation removed."""
        text = " ".join([self.int_to_str[i] for i in ids])
        return re.sub(r'\s+([,.?!"()\'])', r"\1", text)


class SimpleTokenizerV2(SimpleTokenizerV1):
    """SimpleTokenizerV1 that maps unknown words to <|unk|> (book listing 2.4)."""

    def __init__(self, vocab: dict[str, int]):
        if UNK not in vocab:
            raise ValueError(
                f"SimpleTokenizerV2 needs {UNK!r} in its vocabulary; use build_vocab(text, [{EOT!r}, {UNK!r}])"
            )
        super().__init__(vocab)

    def encode(self, text: str) -> list[int]:
        """Ids of the pieces of `text`, unknown words as <|unk|>."""
        preprocessed = [item if item in self.str_to_int else UNK for item in preprocess(text)]
        return [self.str_to_int[s] for s in preprocessed]
