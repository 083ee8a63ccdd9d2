"""`gpt.from_pretrained(path, backend=B)`: any supported Hugging Face directory, dispatched on config.json's
model_type (DESIGN.md §3). A new family registers its loader with one line in `LOADERS` (and, to be written
back by `tinygpt convert`, its writer in `EXPORTERS`). Also: a directory's own tokenizer (tokenizer.json through
`tokenizer.from_pretrained`), the export of a model with its tokenizer, and the hub downloads of `tinygpt download`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from backends.base import Backend
from .bert import load_hf_bert
from .families import export_hf_decoder, load_hf_decoder
from .weights import export_hf_gpt2, load_hf_gpt2

# model_type -> loader(path, backend) returning the model in eval mode
LOADERS: dict[str, Callable[..., Any]] = {
    "gpt2": load_hf_gpt2,
    "llama": load_hf_decoder,
    "qwen3": load_hf_decoder,
    "bert": load_hf_bert,
}

# GPTConfig.arch -> writer(model, out_dir) of a Hugging Face directory
EXPORTERS: dict[str, Callable[..., Any]] = {
    "gpt2": export_hf_gpt2,
    "llama": export_hf_decoder,
    "qwen3": export_hf_decoder,
}
HUB_URL = "https://huggingface.co/{repo}/resolve/main/{file}"
# `tinygpt download NAME`: the public Hugging Face repository and the files a model directory needs
HUB_MODELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "qwen3-0.6b": ("Qwen/Qwen3-0.6B", ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")),
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


def from_pretrained(path: str | os.PathLike, backend: Backend | str | None = None) -> Any:
    """The model in a Hugging Face directory (config.json + model.safetensors or a sharded index), in eval mode,
    weights cast to `backend`'s dtype (bfloat16 files widened); model_type picks the family in LOADERS."""
    model_type = read_hf_config(path).get("model_type", "gpt2")
    loader = LOADERS.get(model_type)
    if loader is None:
        raise ValueError(f"{path}: model_type {model_type!r} is not supported; tinygpt loads "
                         f"{', '.join(sorted(LOADERS))}")
    return loader(path, backend=backend)


def load_pretrained_dir(path: str | os.PathLike, backend: Backend) -> tuple[Any, Any, dict]:
    """(model, tokenizer, state) of a Hugging Face directory: its own tokenizer.json when it has one, GPT-2's for
    a GPT-2 directory without one (OpenAI's files); a Llama/Qwen3 directory without one is a FileNotFoundError."""
    import tokenizer as tok_pkg

    path = Path(path)
    if read_hf_config(path).get("model_type") == "bert":   # an encoder: its WordPiece vocab.txt, the masked-LM state
        return load_hf_bert_dir(path, backend)
    model = from_pretrained(path, backend=backend)
    if (path / "tokenizer.json").is_file():
        return model, tok_pkg.from_pretrained(path), {"tokenizer": {"kind": "hf", "path": str(path)}}
    if model.cfg.arch != "gpt2":
        raise FileNotFoundError(f"{path} has no tokenizer.json; a {model.cfg.arch} directory needs its own "
                                f"tokenizer (copy tokenizer.json and tokenizer_config.json from the model's hub page)")
    return model, tok_pkg.get_encoding("gpt2"), {"tokenizer": {"kind": "gpt2"}}


def load_hf_bert_dir(path: str | os.PathLike, backend: Backend) -> tuple[Any, Any, dict]:
    """(BertModel, its WordPiece tokenizer, a state naming both and the special ids) of a Hugging Face BERT
    directory (config.json + model.safetensors + vocab.txt)."""
    import tokenizer as tok_pkg

    from gpt.mlm import special_ids_for

    path = Path(path)
    model, tok = load_hf_bert(path, backend=backend), tok_pkg.from_pretrained(path)
    special, _ = special_ids_for(tok, model.cfg.vocab_size)
    if max(special.all()) >= model.cfg.vocab_size:
        raise ValueError(f"{path}: the tokenizer has no [PAD]/[CLS]/[SEP]/[MASK] tokens; is its vocab.txt BERT's?")
    state = {"arch": "bert", "tokenizer": {"kind": "pretrained", "path": str(path.resolve())},
             "mlm": {"special_ids": special.to_dict()}}
    return model, tok, state


def export_hf(model: Any, tokenizer: Any, out_dir: str | os.PathLike) -> list[Path]:
    """Write `model` as a Hugging Face directory of its family with its tokenizer as tokenizer.json (a BPE or
    GPT-2 tokenizer; None writes none), so `transformers` and `tokenizers` load both; returns the files written."""
    from tokenizer import BPETokenizer, save_hf_tokenizer

    arch = getattr(model.cfg, "arch", "gpt2")
    if arch not in EXPORTERS:
        raise ValueError(f"no Hugging Face layout for a model of arch {arch!r}; tinygpt writes "
                         f"{', '.join(sorted(EXPORTERS))}")
    if tokenizer is not None and not isinstance(tokenizer, BPETokenizer):
        raise ValueError(f"the {type(tokenizer).__name__} tokenizer has no tokenizer.json form; export a model "
                         f"trained with --tokenizer bpe or gpt2")
    out = Path(out_dir)
    EXPORTERS[arch](model, out)
    files = [out / "config.json", out / "model.safetensors"]
    if tokenizer is not None:
        files += [save_hf_tokenizer(tokenizer, out), out / "tokenizer_config.json"]
    return files


def hub_model_dir(name: str) -> Path:
    """Where `tinygpt download NAME` puts a HUB_MODELS directory: ~/.cache/tinygpt/models/NAME."""
    from tokenizer.datafiles import cache_dir

    return cache_dir() / "models" / name


def resolve_hub_name(name: str) -> Path | None:
    """The downloaded directory of a HUB_MODELS name ("qwen3-0.6b"), None for other strings; FileNotFoundError
    naming the download command when it is not downloaded yet."""
    if name not in HUB_MODELS:
        return None
    folder = hub_model_dir(name)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{name} is not downloaded: run `tinygpt download {name}` with network access (it "
                                f"writes {folder}), or give the path of a Hugging Face directory")
    return folder


def download_hub_model(name: str, dest: str | os.PathLike, fetch: Callable[..., Path] | None = None,
                       progress: bool = True) -> Path:
    """Fetch the public files of a HUB_MODELS entry into `dest` (files already there are kept); returns `dest`."""
    from tokenizer.datafiles import download_file

    if name not in HUB_MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(HUB_MODELS)}")
    repo, files = HUB_MODELS[name]
    folder, fetch = Path(dest), fetch or download_file
    for file in files:
        if not (folder / file).is_file():
            fetch(HUB_URL.format(repo=repo, file=file), folder / file, progress=progress)
    return folder


__all__ = ["LOADERS", "EXPORTERS", "HUB_MODELS", "from_pretrained", "read_hf_config", "load_pretrained_dir",
           "load_hf_bert_dir",
           "export_hf", "hub_model_dir", "resolve_hub_name", "download_hub_model"]
