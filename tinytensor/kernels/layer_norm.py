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
from .reduce import col_sum, row_mean


def layer_norm_forward(x, w=None, b=None, eps: float = 1e-5) -> tuple[Any, Any, Any]:
    """out = w·(x − mean)/√(var + eps) + b over the last axis; returns (out, mean, rstd), both (..., 1)."""
    xp = get_array_module(x)
    mean = row_mean(x)  # (..., 1); a BLAS product with ones (reduce.py), 3-5x NumPy's sum over short rows
    xc = x - mean
    # biased (divide by C, not C − 1); Σ (x − mean)² as one row dot product: no squared temporary, one pass
    var = xp.einsum("...i,...i->...", xc, xc)[..., None] / x.shape[-1]
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
    xp = get_array_module(x)
    c = x.shape[-1]
    x2, d2, rstd2 = x.reshape(-1, c), dout.reshape(-1, c), rstd.reshape(-1, 1)  # (rows, C), (rows, 1)
    xhat = x2 - mean.reshape(-1, 1)  # recomputed rather than saved: one array less kept alive between passes
    xhat *= rstd2
    db = col_sum(d2)
    dw = xp.einsum("ij,ij->j", d2, xhat) if w is not None else None  # Σ_rows dout ⊙ x̂, no product temporary
    g = d2 * w if w is not None else d2.copy()  # gradient reaching x̂ (a fresh array: dx is built in it)
    # x̂_i = (x_i − mean)·rstd depends on x_j through three routes; each gives one term of dx:
    gx = xp.einsum("ij,ij->i", g, xhat)[:, None] / c  # mean_j(g ⊙ x̂), row dot products
    gm = row_mean(g)
    g -= gm  # term 1 (direct) and term 2 (through the mean): g − mean(g)
    xhat *= gx
    g -= xhat  # term 3 (through rstd): −x̂ · mean(g ⊙ x̂)
    g *= rstd2  # every term carries the outer factor rstd
    return g.reshape(x.shape), dw, db
