"""tokenizer_config.json of a Hugging Face model directory: the options and special-token names beside the vocabulary
(transformers' `PreTrainedTokenizerBase.from_pretrained` reads the same file)."""
from __future__ import annotations

import json
from pathlib import Path


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
