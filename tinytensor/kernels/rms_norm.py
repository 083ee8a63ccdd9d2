"""Root-mean-square layer normalisation (Zhang & Sennrich 2019, eq. 4; Llama's and Qwen's norm), forward and
hand-derived backward, over the trailing axes that torch's `normalized_shape` names (usually the last one).

With C the number of normalised elements per row (the product of normalized_shape):

    ms = (1/C) Σ_j x_j²,   rstd = 1/√(ms + eps),   x̂ = x · rstd,   out = w ⊙ x̂

No mean is subtracted and there is no bias: LayerNorm without its centring. Backward, with g = dout ⊙ w the
gradient reaching x̂ (derived in docs/backprop-llama.md §2):

    dw = Σ_rows dout ⊙ x̂,
    dx = rstd · (g − x̂ · mean_j(g ⊙ x̂))      (term 1 direct through x·rstd; term 2 through rstd,
                                               since ∂rstd/∂x_j = −rstd³ · x_j / C)
"""
from __future__ import annotations

from typing import Any


def _axes(x, ndims: int) -> tuple[int, ...]:
    """The trailing `ndims` axes of x: the ones normalised over."""
    return tuple(range(x.ndim - ndims, x.ndim))


def rms_norm_forward(x, w=None, eps: float = 1e-6, ndims: int = 1) -> tuple[Any, Any]:
    """out = w ⊙ x / √(mean(x²) + eps) over the trailing `ndims` axes; returns (out, rstd), rstd (..., 1, ...)."""
    axes = _axes(x, ndims)
    ms = (x * x).mean(axis=axes, keepdims=True)  # mean square per row
    ms += eps  # a Python float keeps x's dtype (NumPy 2 / CuPy promotion)
    rstd = ms
    rstd **= -0.5  # 1/√(ms + eps), in place over the mean square
    out = x * rstd
    if w is not None:
        out *= w
    return out, rstd


def rms_norm_backward(dout, x, w, rstd, ndims: int = 1) -> tuple[Any, Any | None]:
    """(dx, dw) for rms_norm_forward; dw is None when w is None."""
    axes = _axes(x, ndims)
    lead = tuple(range(x.ndim - ndims))  # the rows: every axis that is not normalised
    xhat = x * rstd  # recomputed rather than saved: one array less kept alive between passes
    dw = (dout * xhat).sum(axis=lead) if w is not None else None
    g = dout * w if w is not None else dout  # gradient reaching x̂
    term2 = xhat * (g * xhat).mean(axis=axes, keepdims=True)  # through rstd: x̂ · mean(g ⊙ x̂)
    dx = g - term2  # term 1 (direct, through x · rstd) minus term 2
    dx *= rstd  # both terms carry the outer factor rstd
    return dx, dw


__all__ = ["rms_norm_forward", "rms_norm_backward"]
