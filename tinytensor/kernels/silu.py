"""SiLU / swish activation (Elfwing et al. 2018; Ramachandran et al. 2017), forward and hand-derived backward; with
an elementwise product it makes the SwiGLU feed-forward of Llama and Qwen (Shazeer 2020, eq. 6):
silu(x W₁) ⊙ (x W₃).

    σ(x) = 1/(1 + e^(−x)),   out = x · σ(x)
    dout/dx = σ(x) + x · σ(x)(1 − σ(x)) = σ(x) · (1 + x · (1 − σ(x)))     (product rule; σ' = σ(1 − σ))

σ is evaluated as 1/(1 + e^(−|x|)) for x ≥ 0 and e^(−|x|)/(1 + e^(−|x|)) for x < 0, which never overflows.
"""
from __future__ import annotations

from typing import Any

from ..tensor import get_array_module


def sigmoid(x):
    """σ(x) = 1/(1 + e^(−x)), computed from e^(−|x|) ≤ 1 so that no exponential overflows."""
    xp = get_array_module(x)
    e = xp.exp(-xp.abs(x))
    s = 1.0 / (1.0 + e)  # σ(|x|)
    return xp.where(x >= 0, s, e * s)  # σ(−|x|) = e^(−|x|)·σ(|x|)


def silu_forward(x) -> tuple[Any, Any]:
    """x · σ(x); returns (out, σ(x)) for backward."""
    sig = sigmoid(x)
    return x * sig, sig


def silu_backward(dout, x, sig):
    """dx for silu_forward from the saved σ(x): dout · σ · (1 + x · (1 − σ))."""
    dx = 1.0 - sig
    dx *= x  # x · σ'(x)/σ(x) = x · (1 − σ)
    dx += 1.0
    dx *= sig  # term 1: σ(x) (d/dx of x with σ held fixed); term 2: x · σ(1 − σ) (σ's own derivative)
    dx *= dout
    return dx


__all__ = ["sigmoid", "silu_forward", "silu_backward"]
