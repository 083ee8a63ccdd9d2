"""WordPiece as BERT tokenizes (Devlin et al. 2019; Wu et al. 2016): a basic tokenizer, then greedy longest match.

Follows Google's BERT `tokenization.py` (BasicTokenizer, WordpieceTokenizer) as Hugging Face's BertTokenizerFast
runs it (the `tokenizers` BertNormalizer, BertPreTokenizer and WordPiece model), so ids equal that library's:
  1. special tokens ([CLS], [MASK], ...) in the raw text are cut out first (added.py);
  2. clean the text: drop NUL, U+FFFD and control characters, every whitespace character becomes a space;
     pad CJK ideographs with spaces (each is a word); for uncased vocabularies strip accents (NFD, drop Mn) and
     lower-case. Every step works per character, with the library's Unicode classes (bert_tables.py);
  3. split on whitespace, and put each punctuation character in a word of its own;
  4. each word: the longest vocabulary entry that starts it, then the longest "##"-prefixed entry that continues
     it, and so on; a word with no such cover, or longer than max_input_chars_per_word characters, is [UNK].
"""
from __future__ import annotations

import bisect
import io
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import regex

from . import bert_tables
from .added import SpecialPolicy, allowed_set, split_on

SPECIAL_NAMES = ("pad", "unk", "cls", "sep", "mask")  # BERT's special tokens: [PAD] [UNK] [CLS] [SEP] [MASK]
PREFIX = "##"  # marks a piece that continues a word


def _in(ranges: tuple[tuple[int, int], ...], starts: list[int], cp: int) -> bool:
    k = bisect.bisect_right(starts, cp) - 1
    return k >= 0 and cp <= ranges[k][1]


class _Classes:
    """Membership in one of bert_tables' range lists, by binary search."""

    def __init__(self, ranges: tuple[tuple[int, int], ...]):
        self.ranges, self.starts = ranges, [a for a, _ in ranges]

    def __contains__(self, ch: str) -> bool:
        return _in(self.ranges, self.starts, ord(ch))


CONTROL, WHITESPACE, CJK = (_Classes(t) for t in (bert_tables.CONTROL, bert_tables.WHITESPACE, bert_tables.CJK))
_PUNCT_CLASS = "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in bert_tables.PUNCTUATION)
# A word: one punctuation character, or a run of characters that are neither punctuation nor a space.
WORD_RE = regex.compile(f"[{_PUNCT_CLASS}]|[^{_PUNCT_CLASS} ]+")


def strip_accents_char(ch: str) -> str:
    """One character with its accents removed: NFD, then drop the nonspacing marks (category Mn)."""
    if ord(ch) in bert_tables.STRIP:
        return bert_tables.STRIP[ord(ch)]
    return "".join(c for c in unicodedata.normalize("NFD", ch) if unicodedata.category(c) != "Mn")


def lower_char(ch: str) -> str:
    """One character lower-cased on its own (no context, as the library does: no final-sigma rule)."""
    return bert_tables.LOWER.get(ord(ch), ch.lower())


class WordPiece:
    """BERT's WordPiece tokenizer over a vocab.txt; `encode` equals BertTokenizerFast's encode(add_special_tokens=...)."""

    def __init__(
        self,
        vocab: Sequence[str],
        *,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,  # None: strip when lower-casing, as BERT does
        tokenize_chinese_chars: bool = True,
        special: dict[str, str] | None = None,  # "unk" -> "[UNK]", ...; defaults to BERT's names
        max_input_chars_per_word: int = 100,
        name: str = "wordpiece",
    ):
        self.vocab: dict[str, int] = {}  # token -> id; a repeated line keeps the later id, as load_vocab does
        for i, token in enumerate(vocab):
            self.vocab[token] = i
        self.id_to_token = list(vocab)
        self.do_lower_case, self.tokenize_chinese_chars = do_lower_case, tokenize_chinese_chars
        self.strip_accents = do_lower_case if strip_accents is None else strip_accents
        self.max_input_chars_per_word, self.name = max_input_chars_per_word, name
        names = {k: f"[{k.upper()}]" for k in SPECIAL_NAMES} | dict(special or {})
        if names["unk"] not in self.vocab:
            raise ValueError(f"the vocabulary has no unknown token {names['unk']!r}; add it to vocab.txt")
        self.special_tokens = {names[k]: self.vocab[names[k]] for k in SPECIAL_NAMES if names[k] in self.vocab}
        for k in SPECIAL_NAMES:  # cls_token_id, ...; None when the vocabulary lacks that token
            setattr(self, f"{k}_token_id", self.vocab.get(names[k]))
        self._longest = max(map(len, self.vocab), default=0)
        self._char_cache: dict[str, str] = {}
        self._word_cache: dict[str, list[int]] = {}

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "WordPiece":
        """Read vocab.txt (one token per line, id = line number) and tokenizer_config.json's options if present."""
        from .pretrained import read_config, token_text

        directory = Path(directory)
        path = directory / "vocab.txt"
        if not path.is_file():
            raise ValueError(f"{directory} has no vocab.txt; a WordPiece tokenizer needs one")
        try:
            with io.open(path, encoding="utf-8") as f:  # universal newlines, as transformers' load_vocab reads it
                vocab = [line.rstrip("\n") for line in f.readlines()]
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not UTF-8 text") from None
        config = read_config(directory)
        special = {k: token_text(config.get(f"{k}_token")) for k in SPECIAL_NAMES}
        return cls(
            vocab,
            do_lower_case=bool(config.get("do_lower_case", True)),
            strip_accents=config.get("strip_accents"),
            tokenize_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
            special={k: v for k, v in special.items() if v},
            name=str(directory),
        )

    @property
    def n_vocab(self) -> int:
        """Number of token ids (lines of vocab.txt)."""
        return len(self.id_to_token)

    @property
    def special_tokens_set(self) -> set[str]:
        """The special tokens' texts (tiktoken's name)."""
        return set(self.special_tokens)

    def _normalize_char(self, ch: str) -> str:
        if ch in CONTROL:
            return ""
        if ch in WHITESPACE:
            return " "
        if self.tokenize_chinese_chars and ch in CJK:
            return f" {ch} "
        out = strip_accents_char(ch) if self.strip_accents else ch
        return "".join(map(lower_char, out)) if self.do_lower_case else out

    def normalize(self, text: str) -> str:
        """Steps 2 of the module docstring: cleaned, CJK padded, accents stripped and lower-cased as configured."""
        cache, out = self._char_cache, []
        for ch in text:
            n = cache.get(ch)
            if n is None:
                n = cache[ch] = self._normalize_char(ch)
            out.append(n)
        return "".join(out)

    def pre_tokenize(self, text: str) -> list[str]:
        """The words of normalized text: split on spaces, each punctuation character a word of its own."""
        return WORD_RE.findall(text)

    def _word_ids(self, word: str) -> list[int]:
        """Greedy longest-match-first pieces of one word; [UNK] when it cannot be covered or is too long."""
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token_id]
        vocab, ids, start = self.vocab, [], 0
        while start < len(word):
            end = min(len(word), start + self._longest)
            while end > start:
                piece = word[start:end] if start == 0 else PREFIX + word[start:end]
                if piece in vocab:
                    ids.append(vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk_token_id]
            start = end
        return ids

    def _encode_plain(self, text: str) -> list[int]:
        cache, out = self._word_cache, []
        for word in self.pre_tokenize(self.normalize(text)):
            ids = cache.get(word)
            if ids is None:
                ids = cache[word] = self._word_ids(word)
            out.extend(ids)
        return out

    def encode(
        self,
        text: str,
        *,
        add_special_tokens: bool = False,
        allowed_special: SpecialPolicy = "all",
        disallowed_special: SpecialPolicy = (),
    ) -> list[int]:
        """Token ids of `text` (BertTokenizerFast's encode); add_special_tokens wraps them in [CLS] ... [SEP].

        Special tokens in the text become their ids; `allowed_special=()` reads them as text (see added.py).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        allowed = allowed_set(self.special_tokens, allowed_special, disallowed_special, text)
        out = []
        for piece, is_token in split_on(text, allowed):
            out.extend([self.special_tokens[piece]] if is_token else self._encode_plain(piece))
        if add_special_tokens:
            if self.cls_token_id is None or self.sep_token_id is None:
                raise ValueError("add_special_tokens needs [CLS] and [SEP] in the vocabulary")
            out = [self.cls_token_id, *out, self.sep_token_id]
        return out

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`, reading special tokens as plain text."""
        return self.encode(text, allowed_special=(), disallowed_special=())

    def decode(self, ids: Sequence[int], cleanup: bool = True) -> str:
        """Tokens joined by spaces, "##" pieces glued to the previous one; `cleanup` removes the space before
        . ? ! , and English contractions, as the library's WordPiece decoder does."""
        out = []
        for k, i in enumerate(ids):
            if not (isinstance(i, int) and 0 <= i < len(self.id_to_token)):
                raise ValueError(f"token id {i!r} is not in this vocabulary (ids are 0..{len(self.id_to_token) - 1})")
            token = self.id_to_token[i]
            if k:
                token = token[len(PREFIX) :] if token.startswith(PREFIX) else " " + token
            out.append(_cleanup(token) if cleanup else token)
        return "".join(out)

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """UTF-8 of the tokens joined as decode(cleanup=False) joins them (a lone "##" piece keeps its prefix)."""
        return self.decode(ids, cleanup=False).encode("utf-8")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n_vocab={self.n_vocab}, do_lower_case={self.do_lower_case},"
            f" strip_accents={self.strip_accents})"
        )


CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
           (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _cleanup(token: str) -> str:
    for old, new in CLEANUP:
        token = token.replace(old, new)
    return token
