"""Hugging Face GPT-2 checkpoints in and out: the one name table, loading into GPTModel, exporting, downloading.

Follows the layout of `transformers`' GPT2LMHeadModel (openai-community/gpt2 on the Hugging Face hub) and the
book's ch. 5 `load_weights_into_gpt`, which maps OpenAI's weights onto the book's parameter names. Two details
of that layout matter:
  * GPT-2's projections are `Conv1D` layers storing their weight as (in, out), so y = x @ W + b; our Linear stores
    torch.nn.Linear's (out, in), so every Conv1D weight is transposed on the way in and out.
  * `c_attn` is one (d, 3d) projection whose output columns are q | k | v; the book has three Linears.
The output head is tied to the token embedding in GPT-2 (`tie_word_embeddings`), so `lm_head.weight` is usually
absent from the file. Old checkpoints also hold the attention mask buffers `attn.bias`/`attn.masked_bias`, which
are not weights and are skipped. Files: `model.safetensors` (read by gpt/training/safetensors_io.py, no dependency),
a sharded `model.safetensors.index.json`, or `pytorch_model.bin` through `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from backends.base import Backend
from .training.safetensors_io import SafetensorsError, read_safetensors, write_safetensors

__all__ = ["HF_NAME_MAP", "HFName", "CheckpointError", "SafetensorsError", "gpt2_cache_dir", "resolve_gpt2_name",
           "hf_state_dict_to_book",
           "book_state_dict_to_hf", "config_from_hf", "config_to_hf", "read_hf_checkpoint", "load_hf_gpt2",
           "export_hf_gpt2", "download_gpt2", "read_safetensors", "write_safetensors"]


class HFName(NamedTuple):
    """Where a book parameter lives in a Hugging Face GPT-2 state dict."""

    name: str              # the Hugging Face key ({i}: the block index)
    part: int | None       # 0/1/2: the q/k/v third of c_attn's output features; None: the whole tensor
    conv1d: bool           # stored (in, out) by Conv1D: transpose to and from our (out, in)


# The one table: book name -> Hugging Face GPT2LMHeadModel name (DESIGN.md §6 "listed once").
HF_NAME_MAP: dict[str, HFName] = {
    "tok_emb.weight": HFName("transformer.wte.weight", None, False),
    "pos_emb.weight": HFName("transformer.wpe.weight", None, False),
    "trf_blocks.{i}.att.W_query.weight": HFName("transformer.h.{i}.attn.c_attn.weight", 0, True),
    "trf_blocks.{i}.att.W_key.weight": HFName("transformer.h.{i}.attn.c_attn.weight", 1, True),
    "trf_blocks.{i}.att.W_value.weight": HFName("transformer.h.{i}.attn.c_attn.weight", 2, True),
    "trf_blocks.{i}.att.W_query.bias": HFName("transformer.h.{i}.attn.c_attn.bias", 0, False),
    "trf_blocks.{i}.att.W_key.bias": HFName("transformer.h.{i}.attn.c_attn.bias", 1, False),
    "trf_blocks.{i}.att.W_value.bias": HFName("transformer.h.{i}.attn.c_attn.bias", 2, False),
    "trf_blocks.{i}.att.out_proj.weight": HFName("transformer.h.{i}.attn.c_proj.weight", None, True),
    "trf_blocks.{i}.att.out_proj.bias": HFName("transformer.h.{i}.attn.c_proj.bias", None, False),
    "trf_blocks.{i}.ff.layers.0.weight": HFName("transformer.h.{i}.mlp.c_fc.weight", None, True),
    "trf_blocks.{i}.ff.layers.0.bias": HFName("transformer.h.{i}.mlp.c_fc.bias", None, False),
    "trf_blocks.{i}.ff.layers.2.weight": HFName("transformer.h.{i}.mlp.c_proj.weight", None, True),
    "trf_blocks.{i}.ff.layers.2.bias": HFName("transformer.h.{i}.mlp.c_proj.bias", None, False),
    "trf_blocks.{i}.norm1.scale": HFName("transformer.h.{i}.ln_1.weight", None, False),
    "trf_blocks.{i}.norm1.shift": HFName("transformer.h.{i}.ln_1.bias", None, False),
    "trf_blocks.{i}.norm2.scale": HFName("transformer.h.{i}.ln_2.weight", None, False),
    "trf_blocks.{i}.norm2.shift": HFName("transformer.h.{i}.ln_2.bias", None, False),
    "final_norm.scale": HFName("transformer.ln_f.weight", None, False),
    "final_norm.shift": HFName("transformer.ln_f.bias", None, False),
    "out_head.weight": HFName("lm_head.weight", None, False),
}

GPT2_HUB_NAMES = {"124M": "gpt2", "355M": "gpt2-medium", "774M": "gpt2-large", "1558M": "gpt2-xl"}
HUB_URL = "https://huggingface.co/openai-community/{repo}/resolve/main/{file}"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_BUFFERS = re.compile(r"\.attn\.(bias|masked_bias)$")   # causal-mask buffers of old checkpoints, not weights
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # all three are GELU's tanh approximation


class CheckpointError(ValueError):
    """A checkpoint whose tensors do not match its config: a missing or unexpected key, or a wrong shape."""


def _expand(n_layers: int) -> list[tuple[str, HFName]]:
    """HF_NAME_MAP with {i} filled in for every block, in the table's order."""
    rows = []
    for book, hf in HF_NAME_MAP.items():
        for i in (range(n_layers) if "{i}" in book else [None]):
            rows.append((book.format(i=i), hf._replace(name=hf.name.format(i=i))))
    return rows


def _canonical_hf_key(key: str) -> str:
    """`transformer.`-prefixed name: GPT2Model checkpoints (the hub's gpt2) store `h.0...`, `wte.weight` bare."""
    return key if key.startswith(("transformer.", "lm_head.")) else "transformer." + key


def hf_state_dict_to_book(sd: Mapping[str, Any], n_layers: int, *, source: str = "state dict"
                          ) -> dict[str, np.ndarray]:
    """Book-named NumPy arrays from a Hugging Face GPT-2 state dict (Conv1D transposed, c_attn split in three).

    `out_head.weight` is returned only when the dict has `lm_head.weight` (an untied head); mask buffers are
    skipped; a missing or unexpected key raises CheckpointError naming `source` and the key.
    """
    hf = {_canonical_hf_key(k): v for k, v in sd.items() if not _BUFFERS.search(k)}
    rows = _expand(n_layers)
    known = {h.name for _, h in rows}
    unexpected = sorted(set(hf) - known)
    if unexpected:
        raise CheckpointError(f"{source}: unexpected keys for a {n_layers}-layer GPT-2: {unexpected[:5]}"
                              f"{' ...' if len(unexpected) > 5 else ''} (is n_layer in config.json right?)")
    out: dict[str, np.ndarray] = {}
    for book, h in rows:
        if h.name not in hf:
            if book == "out_head.weight":
                continue  # tied head: the caller shares tok_emb.weight
            raise CheckpointError(f"{source}: missing key {h.name!r} (needed for {book!r})")
        arr = _to_numpy(hf[h.name])
        if h.conv1d:
            arr = arr.T                                             # Conv1D (in, out) -> Linear (out, in)
        if h.part is not None:
            if arr.shape[0] % 3:
                raise CheckpointError(f"{source}: {h.name!r} has shape {tuple(hf[h.name].shape)}; its q|k|v "
                                      f"axis must split in three equal parts")
            arr = np.split(arr, 3, axis=0)[h.part]                  # (d, ...) third of (3d, ...)
        out[book] = np.ascontiguousarray(arr)
    return out


def book_state_dict_to_hf(sd: Mapping[str, Any], n_layers: int) -> dict[str, np.ndarray]:
    """Hugging Face GPT-2 names and layouts from a book state dict (the inverse of hf_state_dict_to_book).

    A model without qkv biases gets zero `c_attn.bias` (GPT-2 always has one); without `out_head.weight` (tied)
    no `lm_head.weight` is written.
    """
    book = {k: _to_numpy(v) for k, v in sd.items()}
    parts: dict[str, list[np.ndarray | None]] = {}
    out: dict[str, np.ndarray] = {}
    for name, h in _expand(n_layers):
        if name not in book:
            if name == "out_head.weight":
                continue
            if h.part is not None and name.endswith(".bias"):
                weight = book[name.replace(".bias", ".weight")]
                book[name] = np.zeros(weight.shape[0], dtype=weight.dtype)  # qkv_bias=False
            else:
                raise KeyError(f"book state dict has no {name!r}; a GPTModel state_dict() has every key of "
                               f"HF_NAME_MAP")
        if h.part is None:
            out[h.name] = book[name]
        else:
            parts.setdefault(h.name, [None, None, None])[h.part] = book[name]
    for hf_name, (q, k, v) in parts.items():
        out[hf_name] = np.concatenate([q, k, v], axis=0)           # (3d, ...): q | k | v
    conv1d = {h.name for _, h in _expand(n_layers) if h.conv1d}
    return {k: np.ascontiguousarray(v.T if k in conv1d else v) for k, v in out.items()}


def _to_numpy(x: Any) -> np.ndarray:
    """A NumPy array from an array or any backend's tensor (via gpt.nn.to_numpy_any)."""
    if isinstance(x, np.ndarray):
        return x
    from .nn import to_numpy_any

    return to_numpy_any(x)


# ---- config.json <-> the book's config dict ----

def config_from_hf(config: Mapping[str, Any], *, source: str = "config.json") -> dict[str, Any]:
    """The book's config dict (plus tie_weights) from a GPT-2 config.json; refuses variants GPTModel lacks."""
    if config.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"{source}: model_type {config.get('model_type')!r} is not a GPT-2; only 'gpt2' loads")
    missing = [k for k in ("vocab_size", "n_embd", "n_layer", "n_head") if k not in config]
    n_ctx = config.get("n_positions", config.get("n_ctx"))
    if missing or n_ctx is None:
        raise ValueError(f"{source}: missing {missing + ([] if n_ctx else ['n_positions'])}; a GPT-2 config.json "
                         f"names vocab_size, n_positions, n_embd, n_layer and n_head")
    act = config.get("activation_function", "gelu_new")
    if act not in _TANH_GELUS:
        raise ValueError(f"{source}: activation_function {act!r} is not GELU's tanh approximation, the only one "
                         f"GPTModel has ({', '.join(_TANH_GELUS)})")
    unsupported = {"layer_norm_epsilon": (config.get("layer_norm_epsilon", 1e-5), 1e-5),
                   "n_inner": (config.get("n_inner") or 4 * config["n_embd"], 4 * config["n_embd"]),
                   "scale_attn_weights": (config.get("scale_attn_weights", True), True),
                   "scale_attn_by_inverse_layer_idx": (config.get("scale_attn_by_inverse_layer_idx", False), False)}
    for key, (got, want) in unsupported.items():
        if got != want:
            raise ValueError(f"{source}: {key}={got!r} is not supported; GPTModel is GPT-2 with {key}={want!r}")
    return {"vocab_size": int(config["vocab_size"]), "context_length": int(n_ctx), "emb_dim": int(config["n_embd"]),
            "n_heads": int(config["n_head"]), "n_layers": int(config["n_layer"]),
            "drop_rate": float(config.get("resid_pdrop", 0.1)), "qkv_bias": True,
            "tie_weights": bool(config.get("tie_word_embeddings", True))}


def config_to_hf(cfg: Mapping[str, Any], tie_weights: bool, dtype: str = "float32") -> dict[str, Any]:
    """A GPT2LMHeadModel config.json dict from the book's config dict."""
    vocab = int(cfg["vocab_size"])
    eot = 50256 if vocab > 50256 else None  # GPT-2's <|endoftext|>; absent from smaller vocabularies
    drop = float(cfg.get("drop_rate", 0.0))
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab,
            "n_positions": int(cfg["context_length"]), "n_embd": int(cfg["emb_dim"]), "n_layer": int(cfg["n_layers"]),
            "n_head": int(cfg["n_heads"]), "n_inner": None, "activation_function": "gelu_new",
            "resid_pdrop": drop, "embd_pdrop": drop, "attn_pdrop": drop, "layer_norm_epsilon": 1e-5,
            "initializer_range": 0.02, "scale_attn_weights": True, "tie_word_embeddings": bool(tie_weights),
            "bos_token_id": eot, "eos_token_id": eot, "torch_dtype": dtype}


# ---- reading checkpoint files ----

def _resolve(path_or_dir: str | os.PathLike) -> tuple[Path, Path]:
    """(config.json, weights file) of a checkpoint directory, or of a weights file with config.json beside it."""
    path = Path(path_or_dir).expanduser()
    if path.is_dir():
        weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
        if weights is None:
            raise FileNotFoundError(f"{path} holds none of {', '.join(WEIGHT_FILES)}: download a checkpoint with "
                                    f"gpt.weights.download_gpt2('124M', dest) or `tinygpt download`")
        folder = path
    elif path.is_file():
        weights, folder = path, path.parent
    else:
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist: give a Hugging Face GPT-2 directory "
                                f"(config.json + model.safetensors)")
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} is missing: a Hugging Face checkpoint needs its config.json beside "
                                f"{weights.name} (copy it from the model's hub page)")
    return config, weights


def read_hf_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a `.safetensors`, sharded `.safetensors.index.json` or `pytorch_model.bin` file, as NumPy."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        weight_map = json.loads(path.read_text())["weight_map"]
        out: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            out.update(read_safetensors(path.parent / shard))
        return out
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    return _read_torch_file(path)


def _read_torch_file(path: Path) -> dict[str, np.ndarray]:
    """A pytorch_model.bin state dict as NumPy arrays; weights_only=True never runs the pickle's code."""
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading {path} needs PyTorch (pip install \"tinygpt[torch]\"); or use the "
                          f"checkpoint's model.safetensors, which needs nothing") from None
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError... for a bad file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{path}: holds a {type(sd).__name__}, expected a state dict of tensors")
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, expected a tensor")
        v = v.detach()
        out[k] = (v.float() if v.dtype in (torch.bfloat16, torch.float16) else v).numpy()
    return out


def _expected_hf_shapes(cfg: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """The shape of every Hugging Face key of a GPT-2 with this book config."""
    d, v, t = cfg["emb_dim"], cfg["vocab_size"], cfg["context_length"]
    shapes = {"transformer.wte.weight": (v, d), "transformer.wpe.weight": (t, d), "lm_head.weight": (v, d),
              "transformer.ln_f.weight": (d,), "transformer.ln_f.bias": (d,)}
    for i in range(cfg["n_layers"]):
        p = f"transformer.h.{i}."
        shapes.update({p + "attn.c_attn.weight": (d, 3 * d), p + "attn.c_attn.bias": (3 * d,),
                       p + "attn.c_proj.weight": (d, d), p + "attn.c_proj.bias": (d,),
                       p + "mlp.c_fc.weight": (d, 4 * d), p + "mlp.c_fc.bias": (4 * d,),
                       p + "mlp.c_proj.weight": (4 * d, d), p + "mlp.c_proj.bias": (d,)})
        for ln in ("ln_1", "ln_2"):
            shapes.update({p + ln + ".weight": (d,), p + ln + ".bias": (d,)})
    return shapes


def load_hf_gpt2(path_or_dir: str | os.PathLike, backend: Backend | str | None = None, dtype: str | None = None,
                 drop_rate: float | None = None) -> Any:
    """A GPTModel (eval mode) holding a Hugging Face GPT-2 checkpoint, on any backend.

    `backend`: a Backend or its name (default numpy); `dtype` overrides its float dtype; `drop_rate` overrides the
    checkpoint's resid_pdrop (used only in training mode).
    """
    import backends

    from .model import GPTModel

    config_path, weights_path = _resolve(path_or_dir)
    try:
        hf_config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path}: not valid JSON ({e})") from None
    cfg = config_from_hf(hf_config, source=str(config_path))
    if drop_rate is not None:
        cfg["drop_rate"] = float(drop_rate)
    if backend is None or isinstance(backend, str):
        B = backends.get_backend(backend or "numpy", dtype=dtype or "float32")
    else:
        B = backend if dtype in (None, backend.dtype_name) else backends.get_backend(backend.name, dtype,
                                                                                      backend.device)
    raw = read_hf_checkpoint(weights_path)
    layers = {c.split(".")[2] for c in map(_canonical_hf_key, raw) if c.startswith("transformer.h.")}
    if len(layers) != cfg["n_layers"]:
        raise CheckpointError(f"{weights_path} holds {len(layers)} transformer blocks, but {config_path} says "
                              f"n_layer={cfg['n_layers']}; one of the two files is damaged")
    expected = _expected_hf_shapes(cfg)
    for key, arr in raw.items():
        want = expected.get(_canonical_hf_key(key))
        if want is not None and tuple(arr.shape) != want:
            raise CheckpointError(f"{weights_path}: {key!r} has shape {tuple(arr.shape)}, but {config_path.name} "
                                  f"(n_embd={cfg['emb_dim']}, vocab_size={cfg['vocab_size']}, "
                                  f"n_positions={cfg['context_length']}) expects {want}")
    book = hf_state_dict_to_book(raw, cfg["n_layers"], source=str(weights_path))
    if not cfg["tie_weights"] and "out_head.weight" not in book:
        raise CheckpointError(f"{weights_path}: missing key 'lm_head.weight', needed because {config_path.name} "
                              f"sets tie_word_embeddings=false")
    if cfg["tie_weights"]:
        book.pop("out_head.weight", None)  # GPT-2 ties it to wte; a stored copy is identical
    model = GPTModel(cfg, backend=B)
    model.load_state_dict(book)
    model.eval()
    return model


def export_hf_gpt2(model: Any, out_dir: str | os.PathLike, dtype: str | None = None) -> Path:
    """Write `model` as a Hugging Face GPT-2 directory (config.json + model.safetensors) that
    `transformers.GPT2LMHeadModel.from_pretrained(out_dir)` loads; an untied head is written as lm_head.weight."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg.to_dict() if hasattr(model.cfg, "to_dict") else dict(model.cfg)
    sd = {k: _to_numpy(v) for k, v in model.state_dict().items()}
    tied = "out_head.weight" not in sd
    dtype = dtype or str(sd["tok_emb.weight"].dtype)
    if dtype not in ("float32", "float64", "float16"):
        raise ValueError(f"cannot export in dtype {dtype!r}; choose float32, float64 or float16")
    hf = {k: v.astype(dtype) for k, v in book_state_dict_to_hf(sd, int(cfg["n_layers"])).items()}
    write_safetensors(out / "model.safetensors", hf, metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config_to_hf(cfg, tied, dtype), indent=2) + "\n", encoding="utf-8")
    return out


def gpt2_cache_dir(size: str) -> Path:
    """Where `tinygpt download` puts GPT-2 of `size` (124M|355M|774M|1558M): ~/.cache/tinygpt/models/gpt2-SIZE."""
    from tokenizer.datafiles import cache_dir

    return cache_dir() / "models" / f"gpt2-{size}"


def resolve_gpt2_name(name: str) -> Path | None:
    """The downloaded directory for a hub name ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"), None for other
    strings; FileNotFoundError naming the download command when that size is not downloaded yet."""
    size = {repo: size for size, repo in GPT2_HUB_NAMES.items()}.get(str(name))
    if size is None:
        return None
    folder = gpt2_cache_dir(size)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"GPT-2 {size} ({name}) is not downloaded: run `tinygpt download {name}` with "
                                f"network access (it writes {folder}), or give the path of a GPT-2 directory")
    return folder


def download_gpt2(size: str = "124M", dest: str | os.PathLike | None = None, progress: bool = True,
                  fetch: Callable[..., Path] | None = None) -> Path:
    """Download OpenAI's GPT-2 (`size` 124M|355M|774M|1558M) from the Hugging Face hub into `dest`; files already
    there are kept. Returns the directory, ready for load_hf_gpt2. Default dest: ~/.cache/tinygpt/models/gpt2-SIZE."""
    from tokenizer.datafiles import download_file

    if size not in GPT2_HUB_NAMES:
        raise ValueError(f"unknown GPT-2 size {size!r}; choose one of {', '.join(GPT2_HUB_NAMES)}")
    folder = Path(dest) if dest is not None else gpt2_cache_dir(size)
    fetch = fetch or download_file
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            fetch(HUB_URL.format(repo=GPT2_HUB_NAMES[size], file=name), folder / name, progress=progress)
    return folder
