"""Inverted dropout (Srivastava et al. 2014), as torch: keep each element with probability 1 − p and scale the kept
ones by 1/(1 − p), so the expected value is unchanged and evaluation needs no rescaling.

    out = x ⊙ m / (1 − p),   dx = dout ⊙ m / (1 − p)     (m: the boolean keep-mask, drawn by tinytensor.random)
"""
from __future__ import annotations


def keep_scale(p: float) -> float:
    """1/(1 − p), the rescaling of kept elements; 0 for p == 1, where everything is dropped (torch gives zeros)."""
    return 0.0 if p >= 1.0 else 1.0 / (1.0 - p)


def dropout_forward(x, keep, p: float):
    """x ⊙ keep / (1 − p); keep is a boolean array broadcastable to x (p == 1 gives zeros, as torch)."""
    return x * (keep * x.dtype.type(keep_scale(p)))  # keep·scale in x's dtype: bool × float32 scalar stays float32


def dropout_backward(dout, keep, p: float):
    """dx for dropout_forward: the same mask and scale applied to the upstream gradient."""
    return dropout_forward(dout, keep, p)
