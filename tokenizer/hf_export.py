"""Writing our BPE tokenizers as a Hugging Face tokenizer.json, so that an exported model carries its own tokenizer.

The file is the `tokenizers` library's format (see hf_bpe.py, which reads it back): vocab and merges in GPT-2's
byte-to-unicode characters (gpt2.bytes_to_unicode), merge k on line k, special tokens as added tokens. It encodes
as ours does because the library merges the lowest-ranked pair first and our merge k makes id 256 + k, so rank
order is id order (bpe.py); GPT-2's pattern becomes ByteLevel(use_regex) as in OpenAI's GPT-2 file, any other a
Split that keeps only the regex's matches (what `findall` keeps), then ByteLevel.
"""
from __future__ import annotations

import json
from pathlib import Path

from .bpe import EOT, BPETokenizer
from .gpt2 import bytes_to_unicode
from .patterns import GPT2_SPLIT_PATTERN


def _byte_level(use_regex: bool) -> dict:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def _pre_tokenizer(pattern: str | None) -> dict:
    if pattern is None:
        return _byte_level(False)
    if pattern == GPT2_SPLIT_PATTERN:
        return _byte_level(True)
    # invert + Removed: the gaps between matches are dropped and each match is its own piece, as findall gives.
    split = {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Removed", "invert": True}
    return {"type": "Sequence", "pretokenizers": [split, _byte_level(False)]}


def tokenizer_json(enc: BPETokenizer) -> dict:
    """The tokenizer.json object of a BPETokenizer (or GPT2Encoding); ValueError if two ids spell the same bytes."""
    if not isinstance(enc, BPETokenizer):
        raise TypeError(f"expected a BPETokenizer or the GPT-2 encoding, not {type(enc).__name__}")
    char = bytes_to_unicode()
    vocab: dict[str, int] = {}
    for i, data in enumerate(enc.vocab):
        token = "".join(char[b] for b in data)
        if token in vocab:
            raise ValueError(
                f"token ids {vocab[token]} and {i} both spell {data!r}; a tokenizer.json maps each string to one id,"
                " so this tokenizer cannot be exported"
            )
        vocab[token] = i
    merges = [["".join(char[x] for x in enc.vocab[a]), "".join(char[x] for x in enc.vocab[b])] for a, b in enc.merges]
    added = [
        {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True}
        for s, i in enc.special_tokens.items()
    ]
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
             "vocab": vocab, "merges": merges}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": _pre_tokenizer(enc.pattern), "post_processor": None, "decoder": _byte_level(True),
            "model": model}


def save_hf_tokenizer(enc: BPETokenizer, path: str | Path) -> Path:
    """Write `enc` as a Hugging Face tokenizer: `path` ending in .json is the file; otherwise a directory that gets
    tokenizer.json and a tokenizer_config.json (for transformers' AutoTokenizer). Returns the tokenizer.json path."""
    path = Path(path)
    data = tokenizer_json(enc)
    if path.suffix == ".json":
        target = path
    else:
        path.mkdir(parents=True, exist_ok=True)
        target = path / "tokenizer.json"
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
        if EOT in enc.special_tokens:
            config.update(bos_token=EOT, eos_token=EOT)
        (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    target.write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")
    return target
