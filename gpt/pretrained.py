"""`gpt.from_pretrained(path, backend=B)`: any supported Hugging Face directory, dispatched on config.json's
model_type (DESIGN.md §3). A new family registers its loader with one line in `LOADERS`."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from .families import load_hf_decoder
from .weights import load_hf_gpt2

# model_type -> loader(path, backend) returning the model in eval mode
LOADERS: dict[str, Callable[..., Any]] = {
    "gpt2": load_hf_gpt2,
    "llama": load_hf_decoder,
    "qwen3": load_hf_decoder,
}


def read_hf_config(path: str | os.PathLike) -> dict[str, Any]:
    """config.json of a Hugging Face directory (or of the directory holding a weights file)."""
    path = Path(path).expanduser()
    config = (path if path.is_dir() else path.parent) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} is missing: a Hugging Face directory holds config.json beside "
                                f"model.safetensors")
    try:
        return json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{config}: not valid JSON ({e})") from None


def from_pretrained(path: str | os.PathLike, backend: Any = None) -> Any:
    """The model in a Hugging Face directory (config.json + model.safetensors or a sharded index), in eval mode,
    weights cast to `backend`'s dtype (bfloat16 files widened); model_type picks the family in LOADERS."""
    model_type = read_hf_config(path).get("model_type", "gpt2")
    loader = LOADERS.get(model_type)
    if loader is None:
        raise ValueError(f"{path}: model_type {model_type!r} is not supported; tinygpt loads "
                         f"{', '.join(sorted(LOADERS))}")
    return loader(path, backend=backend)


__all__ = ["LOADERS", "from_pretrained", "read_hf_config"]
