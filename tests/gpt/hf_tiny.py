"""Tiny random Llama / Qwen3 models from `transformers` for the family tests, and the float64 reference.

DESIGN.md §5 trap 3: transformers computes RMSNorm's variance and RoPE's frequencies/angles in float32 even in a
.double() model, so the reference runs with those two steps patched to float64 (`exact_float64`): its RMSNorm
forward replaced by the same formula without the float32 cast, and `torch.float` pointed at float64 while the
model is built and run (the RoPE code names its dtype `torch.float`), so its own llama3 scaling code yields
float64 frequencies. No downloads: models are random and saved to a temporary directory.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import transformers

VOCAB = 97
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 16}   # head_dim 8, theta 1e4: every band of the scaling is hit


def _rms_norm_float64(self, hidden_states):
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


@contextlib.contextmanager
def exact_float64():
    """transformers' two float32 steps (RMSNorm variance, RoPE tables) run in float64 inside this block."""
    from transformers.models.llama import modeling_llama
    from transformers.models.qwen3 import modeling_qwen3

    mp = pytest.MonkeyPatch()
    mp.setattr(modeling_llama.LlamaRMSNorm, "forward", _rms_norm_float64)
    mp.setattr(modeling_qwen3.Qwen3RMSNorm, "forward", _rms_norm_float64)
    mp.setattr(torch, "float", torch.float64)
    try:
        yield
    finally:
        mp.undo()


def hf_config(kind: str, vocab: int = 97, context: int = 64, **overrides):
    """Llama: GQA (4 heads, 2 kv), llama3 rope scaling, tied head. Qwen3: QK-norm, head_dim 16 != 32 / 4, untied."""
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=context, attn_implementation="sdpa",
                  bos_token_id=1, eos_token_id=2)
    if kind == "llama":
        return transformers.LlamaConfig(**{**common, "tie_word_embeddings": True, "rope_theta": 10000.0,
                                           "rope_scaling": dict(LLAMA3_SCALING), **overrides})
    return transformers.Qwen3Config(**{**common, "head_dim": 16, "tie_word_embeddings": False,
                                       "rope_theta": 1000000.0, **overrides})


def make_hf_dir(kind: str, path, seed: int = 0, vocab: int = 97, context: int = 64, config: dict | None = None,
                **save_kwargs):
    """A random tiny transformers model saved to `path` (`config`: hf_config overrides); returns it in float64
    eval mode (norm scales randomised too, so a swapped or ignored norm weight shows)."""
    torch.manual_seed(seed)
    cls = transformers.LlamaForCausalLM if kind == "llama" else transformers.Qwen3ForCausalLM
    with exact_float64():
        model = cls(hf_config(kind, vocab, context, **(config or {})))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.normal_(1.0, 0.3)
    model.save_pretrained(path, **save_kwargs)
    return model.double().eval()


def hf_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad(), exact_float64():
        return model(torch.tensor(ids)).logits.double().numpy()


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())
