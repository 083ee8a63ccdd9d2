"""Model FLOPs per token and model FLOPs utilisation (MFU), as nanoGPT's `estimate_mfu` and PaLM's appendix B.

Training FLOPs per token (Chowdhery et al. 2022, "PaLM", appendix B; Karpathy's nanoGPT `model.py`):

    flops_per_token = 6·N + 12·L·H·Q·T

- 6·N: every parameter that takes part in a matmul costs 2 FLOPs (multiply + add) per token in the forward pass and
  4 in the backward pass (the gradients with respect to the input and to the weight). N counts every parameter
  except the two embedding *lookups* (tok_emb, pos_emb: a gather, no FLOPs); the vocabulary head's V·d weights are
  counted, whether or not they are tied to tok_emb. With vocabulary padding, V is the true vocab_size (padding rows
  do work but are not model FLOPs). LayerNorm and bias parameters are included, as nanoGPT includes them.
- 12·L·H·Q·T: attention's two matmuls (QKᵀ and softmax·V) over a context of T tokens, with L layers, H heads of
  Q = emb_dim / H dimensions: 2·2·L·H·Q·T forward, twice that backward. The causal mask's skipped half is *not*
  subtracted (PaLM and nanoGPT count the full square).

MFU = achieved FLOP/s / peak FLOP/s = tokens_per_s · flops_per_token / (world_size · peak). The peak is the
device's dense tensor-core figure for the precision the matmuls run in (no 2:4 sparsity), from PEAK_FLOPS below or
from `--peak-flops`; on a CPU, or a GPU not in the table, MFU is reported as n/a unless a peak is given.
"""
from __future__ import annotations

from typing import Any

from backends.base import Backend

# Dense peak FLOP/s from NVIDIA's datasheets, by device and matmul precision ("bf16" also covers float16).
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "A100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "H100 SXM": {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12},
    "H100 PCIe": {"bf16": 756e12, "tf32": 378e12, "fp32": 51e12},
    "H100 NVL": {"bf16": 835e12, "tf32": 418e12, "fp32": 60e12},
    "H200": {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12},
    "L4": {"bf16": 121e12, "tf32": 60e12, "fp32": 30.3e12},
    "V100": {"bf16": 125e12, "fp32": 15.7e12},   # float16 tensor cores; V100 has no bfloat16
}


def matmul_params(cfg: Any) -> int:
    """N of the formula: the model's parameters minus the embedding lookups, plus the (true-vocab) head; for every
    family GPTConfig describes (GQA's narrower key/value projections, SwiGLU's three matrices, RMSNorm's one vector)."""
    d, L, V = int(cfg.emb_dim), int(cfg.n_layers), int(cfg.vocab_size)
    hd = int(getattr(cfg, "head_dim", None) or d // int(cfg.n_heads))
    q, kv = int(cfg.n_heads) * hd, int(getattr(cfg, "n_kv_heads", None) or cfg.n_heads) * hd
    qkv = d * (q + 2 * kv) + ((q + 2 * kv) if cfg.qkv_bias else 0)      # W_query/W_key/W_value
    attention = qkv + q * d + (d if getattr(cfg, "out_bias", True) else 0)   # + out_proj
    hidden, gated = int(getattr(cfg, "hidden_dim", None) or 4 * d), getattr(cfg, "mlp", "gelu") == "swiglu"
    mlp = (3 if gated else 2) * d * hidden                              # layers.0/2, or fc1/fc2/fc3
    if getattr(cfg, "mlp_bias", True):
        mlp += (2 if gated else 1) * hidden + d
    norm = (2 if getattr(cfg, "norm", "layernorm") == "layernorm" else 1) * d   # scale (+ shift)
    qk_norm = 2 * hd if getattr(cfg, "qk_norm", False) else 0
    return L * (attention + mlp + 2 * norm + qk_norm) + norm + V * d   # + final_norm, + out_head


def flops_per_token(cfg: Any, seq_len: int | None = None) -> float:
    """Training FLOPs per token: 6·N + 12·L·H·Q·T (T: seq_len, default the context length)."""
    T = int(seq_len or cfg.context_length)
    L, H = int(cfg.n_layers), int(cfg.n_heads)
    Q = int(cfg.emb_dim) // H
    return 6.0 * matmul_params(cfg) + 12.0 * L * H * Q * T


def precision_key(compute_dtype: str, tf32: bool = False) -> str:
    """The PEAK_FLOPS column for matmuls in `compute_dtype` ("bfloat16"/"float16" -> bf16, float32 -> tf32/fp32)."""
    if compute_dtype in ("bfloat16", "float16"):
        return "bf16"
    if compute_dtype == "float32":
        return "tf32" if tf32 else "fp32"
    raise ValueError(f"no peak FLOP/s for {compute_dtype!r} matmuls (float64 has no tensor cores); pass --peak-flops")


def lookup_peak(device_name: str, precision: str) -> float | None:
    """The table's peak for a device name as CUDA reports it (e.g. "NVIDIA H100 80GB HBM3"), or None."""
    name = device_name.upper()
    if "H100" in name:
        key = "H100 PCIe" if "PCIE" in name else "H100 NVL" if "NVL" in name else "H100 SXM"
    else:
        key = next((k for k in PEAK_FLOPS if k.upper() in name), None)
    return PEAK_FLOPS.get(key, {}).get(precision) if key else None


def resolve_peak(B: Backend, compute_dtype: str, tf32: bool = False, override: float | None = None
                 ) -> tuple[float | None, str]:
    """(peak FLOP/s or None, a sentence saying where it came from) for MFU on B's device."""
    if override:
        return float(override), f"peak {override:.3g} FLOP/s from --peak-flops"
    name = B.device_name()
    if name == "cpu":
        return None, "MFU n/a on the CPU (give --peak-flops to compute it)"
    try:
        precision = precision_key(compute_dtype, tf32)
    except ValueError as e:
        return None, f"MFU n/a: {e}"
    peak = lookup_peak(name, precision)
    if peak is None:
        return None, f"MFU n/a: {name} ({precision}) is not in gpt.training.flops.PEAK_FLOPS; give --peak-flops"
    return peak, f"peak {peak / 1e12:.0f} TFLOP/s ({name}, {precision} dense)"


def mfu(tokens_per_s: float, flops_token: float, peak: float | None, world_size: int = 1) -> float | None:
    """Model FLOPs utilisation in [0, 1] (None without a peak): tokens/s · FLOPs/token / (world_size · peak)."""
    if not peak:
        return None
    return tokens_per_s * flops_token / (world_size * peak)
