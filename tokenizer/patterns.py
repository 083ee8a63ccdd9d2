"""Pre-tokenization split patterns: the regexes that cut text into chunks before byte-level BPE.

GPT-2's pattern is the one in OpenAI's gpt-2 `encoder.py` (written with tiktoken's equivalent contraction group);
the GPT-4 one is tiktoken's `cl100k_base`. BPE never merges across two chunks, so a learned token cannot glue a
word to the punctuation or the space that follows it.
"""
from __future__ import annotations

import regex

GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)

NAMED_PATTERNS = {"gpt2": GPT2_SPLIT_PATTERN, "gpt4": GPT4_SPLIT_PATTERN}


def tiktoken_gpt2_findall():
    """GPT-2's split as tiktoken runs it: `findall` of GPT2_SPLIT_PATTERN, except that in a text holding one of the
    code points tiktoken's older Unicode tables do not count as letters or numbers (tokenizer/tiktoken_tables.py),
    those are symbols, via set difference in the letter and number classes (regex's V1 sets). The plain pattern
    serves every other text, at its full speed."""
    from .tiktoken_tables import TIKTOKEN_NOT_LETTERS_OR_NUMBERS as ranges

    extra = "".join(f"{regex.escape(chr(a))}-{regex.escape(chr(b))}" for a, b in ranges)
    strict = (GPT2_SPLIT_PATTERN.replace(r"\p{L}", rf"[\p{{L}}--[{extra}]]")
              .replace(r"\p{N}", rf"[\p{{N}}--[{extra}]]"))
    plain, strict, newer = regex.compile(GPT2_SPLIT_PATTERN), regex.compile(strict, regex.V1), regex.compile(f"[{extra}]")

    def findall(text: str) -> list[str]:
        return strict.findall(text) if newer.search(text) else plain.findall(text)
    return findall


def resolve_pattern(pattern: str | None) -> str | None:
    """The regex for `pattern`: "gpt2", "gpt4", None/"none" (no split), or a regex of your own."""
    if pattern is None or pattern == "none":
        return None
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be 'gpt2', 'gpt4', None or a regex string, not {type(pattern).__name__}")
    pattern = NAMED_PATTERNS.get(pattern, pattern)
    try:
        regex.compile(pattern)
    except regex.error as e:
        raise ValueError(f"pattern {pattern!r} is not a valid regex ({e}); use 'gpt2', 'gpt4' or None") from None
    return pattern


def pattern_name(pattern: str | None) -> str | None:
    """The short name of a resolved pattern ("gpt2", "gpt4"), None for no split, else the regex itself."""
    for name, pat in NAMED_PATTERNS.items():
        if pattern == pat:
            return name
    return pattern
