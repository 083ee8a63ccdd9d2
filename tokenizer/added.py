"""Added tokens of a Hugging Face tokenizer: cutting them out of the text before the model sees it.

Follows the `tokenizers` library's `AddedVocabulary` (docs: huggingface.co/docs/tokenizers, "Added Tokens"): an
added token is matched leftmost-longest in the raw text (`normalized: false`, which is every special token) or in
the normalized text (`normalized: true`), and the text between matches goes through normalizer, pre-tokenizer and
model on its own. Our policy keyword follows tiktoken (`allowed_special` / `disallowed_special`, as in bpe.py),
with Hugging Face's default: special tokens in the text are recognised. `allowed_special=()` reads them as plain
text (Hugging Face's `encode_special_tokens=True`); non-special added tokens are always recognised, as there.
"""
from __future__ import annotations

import functools
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Literal

import regex

SpecialPolicy = Literal["all"] | Collection[str]


@dataclass(frozen=True)
class AddedToken:
    """One entry of tokenizer.json's `added_tokens`: its text, id, and the two flags our matcher reads."""

    content: str
    id: int
    special: bool = True  # special tokens can be read as plain text (allowed_special=())
    normalized: bool = False  # matched in the normalized text rather than the raw text


@functools.lru_cache(maxsize=64)
def token_regex(tokens: frozenset[str]) -> regex.Pattern:
    """A regex matching any of `tokens`, longest first (leftmost-longest, as Aho-Corasick does); one group."""
    alternatives = "|".join(regex.escape(t) for t in sorted(tokens, key=lambda t: (-len(t), t)))
    return regex.compile(f"({alternatives})")


def split_on(text: str, tokens: Collection[str]) -> Iterator[tuple[str, bool]]:
    """(piece, is_token) in text order: the matches of `tokens` and the non-empty text between them."""
    if not tokens:
        if text:
            yield text, False
        return
    # split() with one capturing group alternates plain text (even positions) and matches (odd positions).
    for k, part in enumerate(token_regex(frozenset(tokens)).split(text)):
        if k % 2 or part:
            yield part, bool(k % 2)


def allowed_set(
    specials: Collection[str], allowed_special: SpecialPolicy, disallowed_special: SpecialPolicy, text: str
) -> set[str]:
    """The special tokens to recognise in `text`; ValueError if a disallowed one occurs in it (tiktoken's rule)."""
    specials = set(specials)
    allowed = specials if allowed_special == "all" else set(allowed_special) & specials
    disallowed = specials - allowed if disallowed_special == "all" else set(disallowed_special)
    if disallowed:
        match = token_regex(frozenset(disallowed)).search(text)
        if match:
            token = match.group()
            raise ValueError(
                f"text contains the special token {token!r}, which is disallowed: pass"
                f" allowed_special={{{token!r}}} to encode it as a special token, or disallowed_special=()"
                " to encode it as plain text"
            )
    return allowed
