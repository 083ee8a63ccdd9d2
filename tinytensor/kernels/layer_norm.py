"""Layer normalisation over the last axis: forward and hand-derived backward (book ch. 4, `LayerNorm`).

    mean = (1/C) Σ_j x_j,   var = (1/C) Σ_j (x_j − mean)²   (biased, as the book and torch),
    rstd = 1/√(var + eps),  x̂ = (x − mean)·rstd,   out = w ⊙ x̂ + b.

Backward (derivation after llm.c's `layernorm_backward`; g = dout ⊙ w is the gradient reaching x̂):

    db = Σ_rows dout,   dw = Σ_rows dout ⊙ x̂,
    dx = rstd · (g − mean_j(g) − x̂ · mean_j(g ⊙ x̂)).
"""
from __future__ import annotations

from typing import Any

from ..tensor import get_array_module


def layer_norm_forward(x, w=None, b=None, eps: float = 1e-5) -> tuple[Any, Any, Any]:
    """out = w·(x − mean)/√(var + eps) + b over the last axis; returns (out, mean, rstd), both (..., 1)."""
    xp = get_array_module(x)
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    xc = x - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)  # biased: divide by C, not C − 1
    rstd = 1.0 / xp.sqrt(var + eps)  # a Python float keeps x's dtype (NumPy 2 / CuPy promotion)
    out = xc
    out *= rstd  # x̂, in place over the centred copy
    if w is not None:
        out *= w
    if b is not None:
        out += b
    return out, mean, rstd


def layer_norm_backward(dout, x, w, mean, rstd) -> tuple[Any, Any | None, Any | None]:
    """(dx, dw, db) for layer_norm_forward; dw and db are None when w is None (db is then still Σ dout)."""
    lead = tuple(range(x.ndim - 1))  # every axis but the normalised one
    xhat = (x - mean) * rstd  # recomputed rather than saved: one array less kept alive between passes
    db = dout.sum(axis=lead)
    dw = (dout * xhat).sum(axis=lead) if w is not None else None
    g = dout * w if w is not None else dout  # gradient reaching x̂
    # x̂_i = (x_i − mean)·rstd depends on x_j through three routes; each gives one term of dx:
    dx = g - g.mean(axis=-1, keepdims=True)  # term 1 (direct) and term 2 (through the mean): g − mean(g)
    dx -= xhat * (g * xhat).mean(axis=-1, keepdims=True)  # term 3 (through rstd): −x̂ · mean(g ⊙ x̂)
    dx *= rstd  # every term carries the outer factor rstd
    return dx, dw, db
