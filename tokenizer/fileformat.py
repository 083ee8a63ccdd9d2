"""The tinygpt-bpe file format (save/load of a BPETokenizer) and its human-readable vocabulary listing.

A UTF-8 text file, one item per line, strings written as JSON so any pattern or special token fits on a line:
    tinygpt-bpe 1                  format name and version
    name "bpe"
    pattern "gpt2"                 "gpt2", "gpt4", a regex of one's own, or null (no split)
    specials 1                     count, then one line each: JSON string and its id
    "<|endoftext|>" 999
    merges 743                     count, then one line each: the two token ids; line k makes id 256 + k
    32 116
Like minbpe's .model file, with a version so that later formats can still read this one.
"""
from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from .patterns import pattern_name

if TYPE_CHECKING:
    from .bpe import BPETokenizer

MAGIC, VERSION = "tinygpt-bpe", 1


class FormatError(ValueError):
    """A tinygpt-bpe file that cannot be read; the message names the file and line."""


def save(tok: "BPETokenizer", path: str | Path) -> None:
    """Write `tok` to `path` in the tinygpt-bpe format."""
    if list(tok.byte_ids) != list(range(256)):
        raise TypeError(f"{type(tok).__name__} orders its byte tokens differently; it cannot be saved as tinygpt-bpe")
    lines = [
        f"{MAGIC} {VERSION}",
        f"name {json.dumps(tok.name)}",
        f"pattern {json.dumps(pattern_name(tok.pattern))}",
        f"specials {len(tok.special_tokens)}",
        *(f"{json.dumps(s)} {i}" for s, i in tok.special_tokens.items()),
        f"merges {len(tok.merges)}",
        *(f"{a} {b}" for (a, b) in tok.merges),  # dicts keep insertion order: merge k is line k
    ]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def load(path: str | Path) -> tuple[list[tuple[int, int]], str | None, list[str], str]:
    """Read a tinygpt-bpe file: (merges, pattern, special tokens in id order, name); ValueError if malformed."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise FormatError(f"{path} is not a {MAGIC} file (not UTF-8 text)") from None
    pos = 0

    def field(key: str) -> str:
        nonlocal pos
        if pos >= len(lines) or not lines[pos].startswith(key + " "):
            found = repr(lines[pos]) if pos < len(lines) else "the end of the file"
            raise FormatError(f"{path}: line {pos + 1}: expected '{key} ...', found {found}")
        pos += 1
        return lines[pos - 1][len(key) + 1 :]

    try:
        header = lines[0].split() if lines else []
        if header[:1] != [MAGIC] or len(header) != 2:
            raise FormatError(f"{path} is not a {MAGIC} file (first line {lines[0] if lines else ''!r})")
        if int(header[1]) != VERSION:
            raise FormatError(f"{path} is {MAGIC} version {header[1]}; this tinygpt reads version {VERSION}")
        pos = 1
        name = json.loads(field("name"))
        pattern = json.loads(field("pattern"))
        specials = []
        for _ in range(int(field("specials"))):
            text, _, token_id = lines[pos].rpartition(" ")
            specials.append((int(token_id), json.loads(text)))
            pos += 1
        merges = []
        for _ in range(int(field("merges"))):
            a, b = lines[pos].split()
            merges.append((int(a), int(b)))
            pos += 1
    except FormatError:
        raise
    except (IndexError, ValueError) as e:  # includes json.JSONDecodeError and int("x")
        raise FormatError(f"{path}: line {pos + 1}: malformed {MAGIC} file ({e})") from None
    n = 256 + len(merges)
    if sorted(i for i, _ in specials) != list(range(n, n + len(specials))):
        raise FormatError(f"{path}: special token ids must follow the merges ({n}, {n + 1}, ...)")
    return merges, pattern, [s for _, s in sorted(specials)], name


def render_token(data: bytes) -> str:
    """Bytes shown readably: UTF-8 text as is, control characters escaped, other bytes as \\xNN."""
    out = []
    for ch in data.decode("utf-8", errors="surrogateescape"):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not (part of) valid UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif unicodedata.category(ch).startswith("C"):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def save_vocab(tok: "BPETokenizer", path: str | Path) -> None:
    """Write one line per token: id, [its bytes rendered], and for merged tokens [left][right] with their ids."""
    parents = {new: pair for pair, new in tok.merges.items()}
    lines = [f"# {tok!r}", "# id [token] <- [left][right] (left id, right id)"]
    for i, data in enumerate(tok.vocab):
        line = f"{i} [{render_token(data)}]"
        if i in parents:
            a, b = parents[i]
            line += f" <- [{render_token(tok.vocab[a])}][{render_token(tok.vocab[b])}] ({a}, {b})"
        lines.append(line)
    lines.extend(f"{i} {s} (special)" for s, i in tok.special_tokens.items())
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
