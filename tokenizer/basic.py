"""Byte-level BPE on the whole text, with no pre-tokenization: the base of the tokenizer classes.

Follows the byte-level BPE of GPT-2 (Radford et al. 2019) in the shape of minbpe's `basic.py`: token ids 0..255
are the 256 byte values, and merge k (a pair of earlier token ids) makes id 256 + k. Encoding repeatedly merges
the adjacent pair whose merge was learned first (the lowest new id) until no learned pair is left. `bpe.py` adds
the regex split and special tokens on top; `gpt2.py` adds GPT-2's files.
"""
from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence

from .training import merge_pair, train_merges


class ByteLevelBPE:
    """Byte-level BPE: 256 byte tokens, then one token per learned merge, applied to the text as one chunk."""

    def __init__(self, merges: Iterable[tuple[int, int]] = (), *, byte_ids: Sequence[int] | None = None):
        # byte value -> token id: the identity, except where a vocabulary orders its byte tokens otherwise (GPT-2)
        self.byte_ids: list[int] = list(range(256)) if byte_ids is None else list(byte_ids)
        if sorted(self.byte_ids) != list(range(256)):
            raise ValueError("byte_ids must give each of the 256 byte values its own id in 0..255")
        self.vocab: list[bytes] = [b""] * 256  # token id -> its bytes
        for byte, token_id in enumerate(self.byte_ids):
            self.vocab[token_id] = bytes([byte])
        self.merges: dict[tuple[int, int], int] = {}  # (left id, right id) -> merged id; lower id merges first
        for pair in merges:
            self._add_merge(pair)
        self._token_bytes = self.vocab  # id -> bytes for decoding; subclasses append special tokens

    def _add_merge(self, pair: tuple[int, int]) -> None:
        a, b = pair
        n = len(self.vocab)
        if not (0 <= a < n and 0 <= b < n):
            raise ValueError(f"merge {pair} refers to a token id >= {n}; merges must use earlier ids only")
        if (a, b) in self.merges:
            raise ValueError(f"merge {pair} is listed twice; each pair can be merged once")
        self.merges[(a, b)] = n
        self.vocab.append(self.vocab[a] + self.vocab[b])

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "ByteLevelBPE":
        """Learn vocab_size - 256 merges from `text` taken as one chunk (see training.py for the tie-break)."""
        check_training_args(text, vocab_size, n_special=0)
        return cls(train_merges({text.encode("utf-8"): 1}, vocab_size - 256))

    @property
    def n_vocab(self) -> int:
        """Number of token ids (bytes + merges, plus special tokens in subclasses)."""
        return len(self._token_bytes)

    @property
    def vocab_size(self) -> int:
        """Same as n_vocab (the book's name)."""
        return self.n_vocab

    def _encode_chunk(self, data: bytes) -> list[int]:
        """Token ids of one chunk's bytes: merge the earliest-learned adjacent pair until none is learned."""
        ids = [self.byte_ids[b] for b in data]
        merges = self.merges
        while len(ids) >= 2:
            # The pair with the lowest merged id; pairs never merged rank after every real one.
            pair = min(zip(ids, ids[1:]), key=lambda p: merges.get(p, 1 << 62))
            new_id = merges.get(pair)
            if new_id is None:
                break
            ids = merge_pair(ids, pair[0], pair[1], new_id)
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`."""
        return self._encode_chunk(text.encode("utf-8"))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (the base class has no special tokens)."""
        return self.encode_ordinary(text)

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """The bytes the token ids stand for."""
        table = self._token_bytes
        ids = list(ids)
        try:
            if ids and min(ids) < 0:
                raise IndexError  # a negative index would silently read from the end of the table
            return b"".join([table[i] for i in ids])
        except (IndexError, TypeError):
            bad = next(i for i in ids if not _is_index(i, len(table)))
            raise ValueError(f"token id {bad!r} is not in this vocabulary (ids are 0..{len(table) - 1})") from None

    def decode(self, ids: Sequence[int], errors: str = "replace") -> str:
        """Text of the token ids; bytes that are not valid UTF-8 become U+FFFD (as tiktoken does)."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)


def _is_index(i: object, n: int) -> bool:
    try:
        return 0 <= operator.index(i) < n
    except TypeError:
        return False


def check_training_args(text: str, vocab_size: int, n_special: int) -> None:
    """Raise a clear error for training inputs that cannot give a tokenizer."""
    if not isinstance(text, str):
        raise TypeError(f"training text must be a str, not {type(text).__name__}; decode bytes first")
    if not text:
        raise ValueError("cannot train a BPE tokenizer on empty text; pass a non-empty training text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"training text has a lone surrogate {text[e.start]!r} at index {e.start}; remove it") from None
    if not isinstance(vocab_size, int) or vocab_size < 256 + n_special:
        raise ValueError(
            f"vocab_size={vocab_size!r} is too small: it must be at least 256 (one token per byte)"
            f" + {n_special} special token(s) = {256 + n_special}"
        )
