"""BPETokenizer: byte-level BPE over regex-split chunks, with special tokens; trainable, savable.

Adds to `basic.ByteLevelBPE` what minbpe's `regex.py` adds to its `basic.py`: text is first cut into chunks by a
split pattern (GPT-2's by default, see patterns.py) and BPE runs inside each chunk; special tokens such as
<|endoftext|> get ids after the merges and follow tiktoken's policy (`allowed_special` / `disallowed_special`).
Encoding caches the ids of each distinct chunk, since text repeats its words.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Literal

import regex

from . import fileformat
from .added import allowed_set, token_regex
from .basic import ByteLevelBPE, check_training_args
from .patterns import pattern_name, resolve_pattern
from .training import train_merges

EOT = "<|endoftext|>"


class BPETokenizer(ByteLevelBPE):
    """Byte-level BPE applied inside the chunks of a split pattern, plus special tokens (ids after the merges)."""

    cache_size = 100_000  # distinct chunks whose ids are remembered; the cache is emptied when full

    def __init__(
        self,
        merges: Iterable[tuple[int, int]] = (),
        pattern: str | None = "gpt2",
        special_tokens: Sequence[str] = (),
        name: str = "bpe",
        *,
        byte_ids: Sequence[int] | None = None,
    ):
        _check_special_list(special_tokens)
        super().__init__(merges, byte_ids=byte_ids)
        self.pattern = resolve_pattern(pattern)  # the regex, or None for no split
        self._findall = regex.compile(self.pattern).findall if self.pattern else None
        self.name = name
        self.special_tokens: dict[str, int] = {}  # special token text -> id
        for token in special_tokens:
            if not isinstance(token, str) or not token:
                raise ValueError(f"special token {token!r} must be a non-empty string")
            if token in self.special_tokens:
                raise ValueError(f"special token {token!r} is listed twice")
            self.special_tokens[token] = len(self.vocab) + len(self.special_tokens)
        self._token_bytes = self.vocab + [t.encode("utf-8") for t in self.special_tokens]
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def train(
        cls, text: str, vocab_size: int, pattern: str | None = "gpt2", special_tokens: Sequence[str] = ()
    ) -> "BPETokenizer":
        """Learn vocab_size - 256 - len(special_tokens) merges from `text` (tie-break: see training.py).

        Special tokens in the text are cut out first, so no merge spans or spells one; they get the last ids.
        Fewer merges are learned when the text runs out of pairs.
        """
        _check_special_list(special_tokens)
        check_training_args(text, vocab_size, len(special_tokens))
        resolved = resolve_pattern(pattern)
        # split() keeps the special tokens at odd positions: [::2] drops them.
        pieces = token_regex(frozenset(special_tokens)).split(text)[::2] if special_tokens else [text]
        counts: Counter[str] = Counter()
        for piece in pieces:
            if resolved:
                counts.update(regex.findall(resolved, piece))
            elif piece:
                counts[piece] += 1
        chunk_counts = {chunk.encode("utf-8"): n for chunk, n in counts.items()}
        merges = train_merges(chunk_counts, vocab_size - 256 - len(special_tokens))
        return cls(merges, pattern=pattern, special_tokens=special_tokens)

    @classmethod
    def train_from_file(
        cls, path: str | Path, vocab_size: int, pattern: str | None = "gpt2", special_tokens: Sequence[str] = ()
    ) -> "BPETokenizer":
        """Train on a UTF-8 text file; a file that is not valid UTF-8 raises ValueError naming it and the offset."""
        return cls.train(read_text(path), vocab_size, pattern=pattern, special_tokens=special_tokens)

    @property
    def special_tokens_set(self) -> set[str]:
        """The special tokens' texts (tiktoken's name)."""
        return set(self.special_tokens)

    @property
    def eot_token(self) -> int:
        """Id of <|endoftext|>; AttributeError when this tokenizer has none."""
        if EOT not in self.special_tokens:
            raise AttributeError(f"this tokenizer has no {EOT} token; train it with special_tokens=[{EOT!r}]")
        return self.special_tokens[EOT]

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`, reading special tokens as plain text."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates cannot be UTF-8: replace them with U+FFFD, as tiktoken does.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        if self._findall is None:
            return self._encode_chunk(text.encode("utf-8"))
        cache, out = self._cache, []
        for chunk in self._findall(text):
            ids = cache.get(chunk)
            if ids is None:
                ids = self._encode_chunk(chunk.encode("utf-8"))
                if len(cache) >= self.cache_size:
                    cache.clear()
                cache[chunk] = ids
            out.extend(ids)
        return out

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | Collection[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        """Token ids of `text`, with tiktoken's special-token policy.

        Allowed special tokens become their ids; a disallowed one in the text raises ValueError (pass it in
        `allowed_special`, or `disallowed_special=()` to read it as text); the rest are plain text.
        """
        allowed = allowed_set(self.special_tokens_set, allowed_special, disallowed_special, text)
        if not allowed:
            return self.encode_ordinary(text)
        out: list[int] = []
        # split() with a capturing group alternates plain text and special tokens.
        for k, part in enumerate(token_regex(frozenset(allowed)).split(text)):
            if k % 2:
                out.append(self.special_tokens[part])
            elif part:
                out.extend(self.encode_ordinary(part))
        return out

    def encode_batch(self, texts: Sequence[str], **kwargs) -> list[list[int]]:
        """encode() of each text (same keywords)."""
        return [self.encode(t, **kwargs) for t in texts]

    def save(self, path: str | Path, vocab: bool = True) -> None:
        """Write the tokenizer to `path` (tinygpt-bpe text format) and, if `vocab`, a readable `<path>.vocab`."""
        fileformat.save(self, path)
        if vocab:
            self.save_vocab(Path(str(path) + ".vocab"))

    def save_vocab(self, path: str | Path) -> None:
        """Write a human-readable listing of every token: id, bytes, and the two tokens it was merged from."""
        fileformat.save_vocab(self, path)

    @classmethod
    def load(cls, path: str | Path) -> "BPETokenizer":
        """Read a tokenizer written by save()."""
        merges, pattern, special_tokens, name = fileformat.load(path)
        return cls(merges, pattern=pattern, special_tokens=special_tokens, name=name)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n_vocab={self.n_vocab}, merges={len(self.merges)},"
            f" pattern={pattern_name(self.pattern)!r}, special_tokens={list(self.special_tokens)})"
        )


def _check_special_list(special_tokens: object) -> None:
    if isinstance(special_tokens, (str, bytes)):
        raise TypeError(f"special_tokens must be a list of strings, e.g. [{special_tokens!r}], not a single string")


def read_text(path: str | Path) -> str:
    """Contents of a UTF-8 text file; ValueError naming the file and the first bad byte if it is not UTF-8."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path} is not valid UTF-8 (byte {data[e.start]:#04x} at offset {e.start}); convert it to UTF-8 first"
        ) from None
