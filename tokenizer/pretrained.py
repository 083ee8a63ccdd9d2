"""`tokenizer.from_pretrained(path)`: the tokenizer of a Hugging Face model directory, run by our own code.

A directory (or file) with a byte-level BPE `tokenizer.json` (GPT-2, Llama 3, Qwen2/3) gives an HFByteLevelBPE
(hf_bpe.py); a directory with BERT's `vocab.txt` (and `tokenizer_config.json`) gives a WordPiece (wordpiece.py).
Either way `encode(text)` equals Hugging Face's `encode(text, add_special_tokens=False)` (DESIGN.md section 3).
"""
from __future__ import annotations

import json
from pathlib import Path

from .hf_bpe import HFByteLevelBPE


def read_config(directory: Path) -> dict:
    """tokenizer_config.json of a model directory as a dict ({} when absent); ValueError if it is not JSON."""
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    return config if isinstance(config, dict) else {}


def token_text(value: object) -> str | None:
    """A special-token entry of tokenizer_config.json: a string or an AddedToken dict with "content"."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _model_type(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("model", {}).get("type")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None


def from_pretrained(path: str | Path):
    """Our tokenizer for a Hugging Face tokenizer.json file or model directory; ValueError naming what is missing."""
    path = Path(path)
    if path.is_file():
        if path.name == "vocab.txt":
            from .wordpiece import WordPiece

            return WordPiece.from_pretrained(path.parent)
        return HFByteLevelBPE.from_file(path)
    if not path.is_dir():
        raise ValueError(f"tokenizer path {str(path)!r} does not exist; give a tokenizer.json or a model directory")
    tokenizer_json, vocab_txt = path / "tokenizer.json", path / "vocab.txt"
    if vocab_txt.is_file() and (not tokenizer_json.is_file() or _model_type(tokenizer_json) == "WordPiece"):
        from .wordpiece import WordPiece

        return WordPiece.from_pretrained(path)
    if not tokenizer_json.is_file():
        raise ValueError(f"{path} holds neither tokenizer.json (byte-level BPE) nor vocab.txt (WordPiece)")
    enc = HFByteLevelBPE.from_file(tokenizer_json)
    config = read_config(path)
    for key in ("bos_token", "eos_token"):
        text = token_text(config.get(key))
        setattr(enc, f"{key}_id", enc.token_to_id(text) if text else None)
    return enc
