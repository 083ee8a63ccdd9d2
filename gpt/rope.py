"""Rotary position embeddings (RoPE, Su et al. 2021, "RoFormer", eq. 34) and Llama 3's frequency scaling.

RoPE encodes position by rotating each query/key pair of features (x_i, x_{i+hd/2}) by the angle m·θ_i, where m is
the token's position and θ_i = theta^(-2i/hd) (i = 0 .. hd/2 − 1). Since a rotation by m·θ followed by the
transpose of one by n·θ is a rotation by (m − n)·θ, the score q_m·k_n depends only on the distance m − n.
Layout: the "rotate half" pairing of Hugging Face's Llama/Qwen and of the book's bonus Llama code, so
    rope(x) = x·cos + rotate_half(x)·sin,   rotate_half([x1, x2]) = [−x2, x1],
with cos/sin tables of shape (context_length, hd) whose two halves repeat the hd/2 angles. The tables are built
once here, in float64 NumPy (a float32 angle m·θ_i at m ~ 10⁴ is already wrong in the 4th digit), and applied by
the backend's `B.rotary_embedding(x, cos, sin)` on (b, h, t, hd) queries and keys.

Llama 3 scaling (Meta's `apply_scaling` in the llama3 reference code; transformers' `_compute_llama3_parameters`):
with wavelengths λ_i = 2π/θ_i and the original context L, frequencies with λ_i < L/high_freq_factor are kept,
those with λ_i > L/low_freq_factor are divided by `factor`, and the band between is interpolated with
s = (L/λ_i − low_freq_factor) / (high_freq_factor − low_freq_factor): θ_i' = (1 − s)·θ_i/factor + s·θ_i.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from backends.base import Backend
from .nn import Module

LLAMA3_SCALING_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def rope_frequencies(head_dim: int, theta: float = 10000.0, scaling: Mapping[str, Any] | None = None) -> np.ndarray:
    """The hd/2 rotation frequencies θ_i = theta^(-2i/hd) in float64, with Llama 3's scaling when given."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim (it rotates pairs of features), got {head_dim}")
    inv_freq = 1.0 / (float(theta) ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if not scaling:
        return inv_freq
    kind = scaling.get("rope_type", scaling.get("type", "llama3"))
    missing = [k for k in LLAMA3_SCALING_KEYS if k not in scaling]
    if kind != "llama3" or missing:
        raise ValueError(f"rope scaling {dict(scaling)!r} is not supported: only rope_type 'llama3' with "
                         f"{', '.join(LLAMA3_SCALING_KEYS)}" + (f" (missing {missing})" if missing else ""))
    factor, low, high = float(scaling["factor"]), float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_context = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > old_context / low, inv_freq / factor, inv_freq)   # long wavelengths: divided
    smooth = (old_context / wavelen - low) / (high - low)
    medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)     # the band in between
    return np.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)


def rope_tables(head_dim: int, context_length: int, theta: float = 10000.0,
                scaling: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of the angles m·θ_i, float64 of shape (context_length, head_dim), each half repeating θ."""
    inv_freq = rope_frequencies(head_dim, theta, scaling)
    angles = np.arange(context_length, dtype=np.float64)[:, None] * inv_freq[None, :]  # (T, hd/2)
    angles = np.concatenate([angles, angles], axis=1)                                   # (T, hd): rotate-half layout
    return np.cos(angles), np.sin(angles)


class RoPE(Module):
    """The cos/sin tables of one model as backend constants (not parameters); `rope(x, positions)` rotates
    (b, h, t, hd) queries or keys as the tokens at positions start .. start + t − 1 (`positions` an int: the KV
    cache's offset) or at per-row positions (b, t) (a cache of rows of different lengths)."""

    def __init__(self, B: Backend, head_dim: int, context_length: int, theta: float = 10000.0,
                 scaling: Mapping[str, Any] | None = None):
        cos, sin = rope_tables(head_dim, context_length, theta, scaling)
        self.B, self.head_dim, self.context_length = B, head_dim, context_length
        self._tables = (cos, sin)                             # float64 NumPy, for per-row gathers
        self._cos, self._sin = B.tensor(cos), B.tensor(sin)   # "_": not walked, never in state_dict

    def forward(self, x: Any, positions: Any = 0) -> Any:
        t = x.shape[2]
        if isinstance(positions, (int, np.integer)):
            start = int(positions)
            if start + t > self.context_length:
                raise ValueError(f"positions up to {start + t} exceed the RoPE tables' context_length="
                                 f"{self.context_length}")
            return self.B.rotary_embedding(x, self._cos[start:start + t], self._sin[start:start + t])
        pos = np.asarray(positions)   # (b, t)
        if pos.max() >= self.context_length:
            raise ValueError(f"position {int(pos.max())} exceeds the RoPE tables' context_length="
                             f"{self.context_length}")
        cos, sin = (self.B.tensor(table[pos][:, None]) for table in self._tables)   # (b, 1, t, hd)
        return self.B.rotary_embedding(x, cos, sin)


__all__ = ["RoPE", "rope_frequencies", "rope_tables", "LLAMA3_SCALING_KEYS"]
