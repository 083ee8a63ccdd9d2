"""Llama 3 and Qwen3 as configurations of the one GPTModel, and their Hugging Face checkpoints in and out.

What each family changes over the book's GPT-2 (Raschka's ch. 5 bonus material "converting GPT to Llama" and
"Qwen3 from scratch"; Touvron et al. 2023; Grattafiori et al. 2024, "The Llama 3 Herd of Models"; Qwen3 Technical
Report, 2025): RMSNorm for LayerNorm, RoPE for learned positions (Llama 3 with frequency scaling), a SwiGLU MLP,
grouped-query attention, no biases; Qwen3 adds QK-norm and a head_dim apart from emb_dim / n_heads.
`FAMILIES` holds those switches (GPTConfig fields); `ARCH_CONFIGS` the small models `tinygpt train --arch` builds.

The Hugging Face layout is `transformers`' LlamaForCausalLM / Qwen3ForCausalLM: plain nn.Linear weights (out, in),
so no transposes; the q/k projections are already in the rotate-half layout our RoPE uses. `HF_DECODER_NAMES` is
the one table from our (book-style) parameter names to theirs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from backends.base import Backend
from .rope import LLAMA3_SCALING_KEYS
from .weights import CheckpointError, _resolve, _to_numpy, read_hf_checkpoint, write_safetensors

# The switches each family sets on GPTConfig (the rest: the size, from the checkpoint or ARCH_CONFIGS)
_DECODER = {"norm": "rmsnorm", "positions": "rope", "mlp": "swiglu", "qkv_bias": False, "out_bias": False,
            "mlp_bias": False}
FAMILIES: dict[str, dict[str, Any]] = {
    "gpt2": {},
    "llama": {**_DECODER, "arch": "llama", "norm_eps": 1e-5, "rope_theta": 500000.0},
    "qwen3": {**_DECODER, "arch": "qwen3", "norm_eps": 1e-6, "rope_theta": 1000000.0, "qk_norm": True},
}

# `tinygpt train --arch A` models at about the parameter count of the default GPT-2 (emb 192, 4 layers, 4 heads,
# vocab 1024: 2.20 M): GQA with 2 key/value heads saves a quarter of attention's weights and RoPE the position
# table, which SwiGLU's three matrices of width 576 (vs GPT-2's two of 768) pay back: 2.16 M each.
ARCH_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {**FAMILIES["llama"], "n_kv_heads": 2, "hidden_dim": 576, "rope_theta": 10000.0},
    "qwen3": {**FAMILIES["qwen3"], "n_kv_heads": 2, "hidden_dim": 576, "rope_theta": 10000.0},
}

# The one table: our parameter name -> the Hugging Face LlamaForCausalLM / Qwen3ForCausalLM name ({i}: block)
HF_DECODER_NAMES: dict[str, str] = {
    "tok_emb.weight": "model.embed_tokens.weight",
    "trf_blocks.{i}.att.W_query.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "trf_blocks.{i}.att.W_query.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "trf_blocks.{i}.att.W_key.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "trf_blocks.{i}.att.W_key.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "trf_blocks.{i}.att.W_value.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "trf_blocks.{i}.att.W_value.bias": "model.layers.{i}.self_attn.v_proj.bias",
    "trf_blocks.{i}.att.out_proj.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "trf_blocks.{i}.att.out_proj.bias": "model.layers.{i}.self_attn.o_proj.bias",
    "trf_blocks.{i}.att.q_norm.scale": "model.layers.{i}.self_attn.q_norm.weight",
    "trf_blocks.{i}.att.k_norm.scale": "model.layers.{i}.self_attn.k_norm.weight",
    "trf_blocks.{i}.ff.fc1.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "trf_blocks.{i}.ff.fc1.bias": "model.layers.{i}.mlp.gate_proj.bias",
    "trf_blocks.{i}.ff.fc2.weight": "model.layers.{i}.mlp.up_proj.weight",
    "trf_blocks.{i}.ff.fc2.bias": "model.layers.{i}.mlp.up_proj.bias",
    "trf_blocks.{i}.ff.fc3.weight": "model.layers.{i}.mlp.down_proj.weight",
    "trf_blocks.{i}.ff.fc3.bias": "model.layers.{i}.mlp.down_proj.bias",
    "trf_blocks.{i}.norm1.scale": "model.layers.{i}.input_layernorm.weight",
    "trf_blocks.{i}.norm2.scale": "model.layers.{i}.post_attention_layernorm.weight",
    "final_norm.scale": "model.norm.weight",
    "out_head.weight": "lm_head.weight",
}
_HF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}
_NOT_WEIGHTS = ("rotary_emb.inv_freq",)   # a buffer some old checkpoints saved; recomputed from the config


def decoder_names(n_layers: int) -> dict[str, str]:
    """HF_DECODER_NAMES with {i} filled in for every block."""
    out = {}
    for ours, theirs in HF_DECODER_NAMES.items():
        for i in (range(n_layers) if "{i}" in ours else [None]):
            out[ours.format(i=i)] = theirs.format(i=i)
    return out


def _rope_from_hf(config: Mapping[str, Any], source: str) -> tuple[float, dict | None]:
    """(rope_theta, Llama 3 scaling or None) from config.json: transformers 4's `rope_theta` + `rope_scaling`
    (the hub's files) or transformers 5's `rope_parameters`."""
    params = dict(config.get("rope_parameters") or {})
    scaling = dict(config.get("rope_scaling") or params)
    theta = float(params.get("rope_theta", config.get("rope_theta", 10000.0)))
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind != "llama3":
        raise ValueError(f"{source}: rope scaling of type {kind!r} is not supported; only 'llama3' (or none)")
    missing = [k for k in LLAMA3_SCALING_KEYS if k not in scaling]
    if missing:
        raise ValueError(f"{source}: llama3 rope scaling lacks {missing}")
    return theta, {"rope_type": "llama3", **{k: scaling[k] for k in LLAMA3_SCALING_KEYS}}


def config_from_hf_decoder(config: Mapping[str, Any], *, source: str = "config.json") -> dict[str, Any]:
    """A GPTConfig dict from a Llama or Qwen3 config.json; variants GPTModel lacks are a ValueError naming them."""
    model_type = config.get("model_type")
    if model_type not in _HF_ARCHITECTURES:
        raise ValueError(f"{source}: model_type {model_type!r} is not a Llama or Qwen3")
    need = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "max_position_embeddings"]
    missing = [k for k in need if k not in config]
    if missing:
        raise ValueError(f"{source}: missing {missing}")
    if config.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{source}: hidden_act {config['hidden_act']!r} is not supported; SwiGLU uses 'silu'")
    if config.get("use_sliding_window") or config.get("pretraining_tp", 1) != 1:
        raise ValueError(f"{source}: sliding-window attention and pretraining_tp > 1 are not supported")
    theta, scaling = _rope_from_hf(config, source)
    heads, bias = int(config["num_attention_heads"]), bool(config.get("attention_bias", False))
    head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    return {**FAMILIES[model_type], "vocab_size": int(config["vocab_size"]),
            "context_length": int(config["max_position_embeddings"]), "emb_dim": int(config["hidden_size"]),
            "n_heads": heads, "n_layers": int(config["num_hidden_layers"]), "drop_rate": 0.0,
            "n_kv_heads": int(config.get("num_key_value_heads") or heads),
            "head_dim": None if head_dim * heads == int(config["hidden_size"]) else head_dim,   # None: the default
            "hidden_dim": int(config["intermediate_size"]), "qkv_bias": bias, "out_bias": bias,
            "mlp_bias": bool(config.get("mlp_bias", False)), "norm_eps": float(config.get("rms_norm_eps", 1e-6)),
            "rope_theta": theta, "rope_scaling": scaling,
            "tie_weights": bool(config.get("tie_word_embeddings", False))}


def config_to_hf_decoder(cfg: Mapping[str, Any], dtype: str = "float32",
                         special: Mapping[str, int | None] | None = None) -> dict[str, Any]:
    """A LlamaForCausalLM / Qwen3ForCausalLM config.json dict from a GPTConfig dict (arch llama or qwen3)."""
    arch = cfg.get("arch")
    if arch not in _HF_ARCHITECTURES:
        raise ValueError(f"cannot export a model of arch {arch!r} as a Llama/Qwen3 directory")
    heads = int(cfg["n_heads"])
    scaling = dict(cfg["rope_scaling"]) if cfg.get("rope_scaling") else None
    out = {"architectures": [_HF_ARCHITECTURES[arch]], "model_type": arch, "vocab_size": int(cfg["vocab_size"]),
           "hidden_size": int(cfg["emb_dim"]), "intermediate_size": int(cfg.get("hidden_dim") or 4 * cfg["emb_dim"]),
           "num_hidden_layers": int(cfg["n_layers"]), "num_attention_heads": heads,
           "num_key_value_heads": int(cfg.get("n_kv_heads") or heads),
           "head_dim": int(cfg.get("head_dim") or int(cfg["emb_dim"]) // heads),
           "max_position_embeddings": int(cfg["context_length"]), "hidden_act": "silu",
           "rms_norm_eps": float(cfg["norm_eps"]), "rope_theta": float(cfg["rope_theta"]), "rope_scaling": scaling,
           "attention_bias": bool(cfg["qkv_bias"]), "mlp_bias": bool(cfg["mlp_bias"]), "attention_dropout": 0.0,
           "tie_word_embeddings": bool(cfg.get("tie_weights", False)), "torch_dtype": dtype,
           "initializer_range": 0.02, "use_cache": True}
    out.update(dict(special or {}))
    return out


def load_hf_decoder(path: str | os.PathLike, backend: Backend | str | None = None) -> Any:
    """A GPTModel (eval mode) holding a Hugging Face Llama or Qwen3 checkpoint, weights cast to the backend dtype."""
    import backends

    from .model import GPTModel

    config_path, weights_path = _resolve(path)
    cfg = config_from_hf_decoder(json.loads(config_path.read_text(encoding="utf-8")), source=str(config_path))
    B = backends.get_backend(backend or "numpy") if backend is None or isinstance(backend, str) else backend
    raw = {k: v for k, v in read_hf_checkpoint(weights_path).items() if not k.endswith(_NOT_WEIGHTS)}
    model = GPTModel(cfg, backend=B, seed=0)
    names = decoder_names(cfg["n_layers"])
    wanted = {names[k] for k in model.state_dict()}
    unexpected = sorted(set(raw) - wanted - ({"lm_head.weight"} if cfg["tie_weights"] else set()))
    missing = sorted(wanted - set(raw))
    if unexpected or missing:
        raise CheckpointError(f"{weights_path}: does not fit {config_path.name} ({cfg['arch']}, "
                              f"{cfg['n_layers']} layers): missing {missing[:5]}, unexpected {unexpected[:5]}")
    try:
        model.load_state_dict({k: raw[names[k]] for k in model.state_dict()})
    except ValueError as e:
        raise CheckpointError(f"{weights_path}: {e} (does config.json match the weights?)") from None
    return model.eval()


def export_hf_decoder(model: Any, out_dir: str | os.PathLike, dtype: str | None = None,
                      special: Mapping[str, int | None] | None = None) -> Path:
    """Write a Llama/Qwen3 GPTModel as a Hugging Face directory (config.json + model.safetensors) that
    `transformers.AutoModelForCausalLM.from_pretrained` loads; `special`: e.g. bos/eos_token_id for config.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg.to_dict()
    sd = {k: _to_numpy(v) for k, v in model.state_dict().items()}
    dtype = dtype or str(sd["tok_emb.weight"].dtype)
    if dtype not in ("float32", "float64", "float16"):
        raise ValueError(f"cannot export in dtype {dtype!r}; choose float32, float64 or float16")
    names = decoder_names(cfg["n_layers"])
    hf = {names[k]: np.ascontiguousarray(v.astype(dtype)) for k, v in sd.items()}
    write_safetensors(out / "model.safetensors", hf, metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config_to_hf_decoder(cfg, dtype, special), indent=2) + "\n",
                                     encoding="utf-8")
    return out


__all__ = ["FAMILIES", "ARCH_CONFIGS", "HF_DECODER_NAMES", "decoder_names", "config_from_hf_decoder",
           "config_to_hf_decoder", "load_hf_decoder", "export_hf_decoder"]
