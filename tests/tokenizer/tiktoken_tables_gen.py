"""Print the ranges of tokenizer/tiktoken_tables.py: code points c for which tiktoken's ids of c + "'s" differ from
our GPT-2 encoding's with the plain split pattern (run: python tests/tokenizer/tiktoken_tables_gen.py, with
TIKTOKEN_CACHE_DIR and TINYGPT_DATA_DIR pointing at the GPT-2 files). About a minute."""
from __future__ import annotations

import regex
import tiktoken

import tokenizer
from tokenizer.patterns import GPT2_SPLIT_PATTERN


def differing_ranges() -> list[tuple[int, int]]:
    """(first, last) runs of the code points where the plain `regex`-module split disagrees with tiktoken."""
    ref, ours = tiktoken.get_encoding("gpt2"), tokenizer.get_encoding("gpt2")
    ours._findall = regex.compile(GPT2_SPLIT_PATTERN).findall   # noqa: SLF001 - the split without the table
    runs: list[list[int]] = []
    for cp in range(0x20, 0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        text = chr(cp) + "'s"
        if ref.encode(text) != ours.encode(text):
            if runs and runs[-1][1] == cp - 1:
                runs[-1][1] = cp
            else:
                runs.append([cp, cp])
    return [tuple(r) for r in runs]


if __name__ == "__main__":
    print(differing_ranges())
