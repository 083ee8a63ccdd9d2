"""GPT-2's tokenizer, rebuilt by our own code from OpenAI's encoder.json and vocab.bpe.

Follows OpenAI's gpt-2 `encoder.py` for the files (vocab.bpe lists merges of byte-to-unicode strings, encoder.json
maps those strings to ids) and tiktoken's `r50k`/"gpt2" encoding for the merge rule, so that ids equal tiktoken's.
Like minbpe's `gpt4.py`, this is the regex tokenizer with a vocabulary loaded from elsewhere.
Two details:
  * GPT-2 ids 0..255 are the bytes in byte-to-unicode order ('!' is id 0), not byte values: `byte_ids` holds it;
    merge k still makes id 256 + k, and <|endoftext|> is 50256.
  * tiktoken merges two adjacent pieces whenever their concatenated bytes are a token, lowest id first (and takes
    a whole chunk that is a token as is), even if vocab.bpe made that token from a different split. `_encode_chunk`
    follows that rule rather than the pair-by-pair one of the base class.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

from .bpe import EOT, BPETokenizer
from .datafiles import find_data_file
from .patterns import tiktoken_gpt2_findall

GPT2_FILES = {  # relpath -> (public URL, sha256)
    "gpt2/encoder.json": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ),
    "gpt2/vocab.bpe": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ),
}
FETCH_COMMAND = "tinygpt download gpt2-tokenizer"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> character table: printable Latin-1 bytes stand for themselves, the other 68 bytes
    (controls, space, soft hyphen, ...) for chr(256), chr(257), ... in byte order, so every token is visible text."""
    printable = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + k) for k, b in enumerate(others)})
    return table


class GPT2Encoding(BPETokenizer):
    """GPT-2's byte-level BPE (50,000 merges + 256 bytes + <|endoftext|> = 50,257 ids), tiktoken-compatible."""

    def __init__(self, encoder: dict[str, int], bpe_merges: list[tuple[str, str]]):
        byte_of = {c: b for b, c in bytes_to_unicode().items()}
        byte_ids = [encoder[c] for _, c in sorted((b, c) for c, b in byte_of.items())]
        merges = []
        for k, (left, right) in enumerate(bpe_merges):
            if encoder.get(left + right) != 256 + k:
                raise ValueError(f"vocab.bpe line {k + 2} ({left} {right}) does not match encoder.json's id")
            merges.append((encoder[left], encoder[right]))
        super().__init__(merges, pattern="gpt2", special_tokens=[EOT], name="gpt2", byte_ids=byte_ids)
        if encoder.get(EOT) != self.eot_token or len(encoder) != self.n_vocab:
            raise ValueError(f"encoder.json does not hold {self.n_vocab} ids with {EOT} last")
        self._ranks = {data: i for i, data in enumerate(self.vocab)}  # token bytes -> id (= its rank)
        self._findall = tiktoken_gpt2_findall()   # the split as tiktoken's regex engine makes it (newer letters)

    @classmethod
    def from_files(cls, encoder_json: str | Path, vocab_bpe: str | Path) -> "GPT2Encoding":
        """Build the encoding from the two files of OpenAI's GPT-2 release."""
        encoder = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
        lines = Path(vocab_bpe).read_text(encoding="utf-8").splitlines()
        # Line 1 is "#version: 0.2"; each other line is one merge "left right".
        bpe_merges = [tuple(line.split(" ")) for line in lines[1:] if line]
        return cls(encoder, bpe_merges)

    @classmethod
    def train(cls, *args, **kwargs):
        raise TypeError("GPT-2's encoding is loaded, not trained; use BPETokenizer.train to train a tokenizer")

    def save(self, path, vocab=True):
        raise TypeError("GPT-2's encoding is read from encoder.json/vocab.bpe; it has no tinygpt-bpe file")

    def _encode_chunk(self, data: bytes) -> list[int]:
        """tiktoken's rule: merge the adjacent pieces whose joined bytes have the lowest id (leftmost on ties)."""
        ranks = self._ranks
        whole = ranks.get(data)
        if whole is not None:
            return [whole]
        parts = [data[i : i + 1] for i in range(len(data))]
        while len(parts) > 1:
            best, at = None, -1
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and (best is None or r < best):
                    best, at = r, i
            if best is None:
                break
            parts[at : at + 2] = [parts[at] + parts[at + 1]]
        return [ranks[p] for p in parts]


def load_gpt2(download: bool = True) -> GPT2Encoding:
    """GPT-2's encoding from encoder.json and vocab.bpe, found (or fetched) by datafiles.find_data_file."""
    paths = {
        rel: find_data_file(rel, url, sha, download=download, fetch_command=FETCH_COMMAND)
        for rel, (url, sha) in GPT2_FILES.items()
    }
    return GPT2Encoding.from_files(paths["gpt2/encoder.json"], paths["gpt2/vocab.bpe"])


ENCODINGS = {"gpt2": load_gpt2}


@functools.lru_cache(maxsize=None)
def get_encoding(name: str) -> GPT2Encoding:
    """A named encoding, built once per process (tiktoken's entry point). Only "gpt2" is known."""
    if name not in ENCODINGS:
        raise ValueError(f"unknown encoding {name!r}; known: {', '.join(ENCODINGS)}")
    return ENCODINGS[name]()
