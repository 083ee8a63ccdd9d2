"""Layer normalisation over the last axis: forward and hand-derived backward (book ch. 4, `LayerNorm`).

    mean = (1/C) Σ_j x_j,   var = (1/C) Σ_j (x_j − mean)²   (biased, as the book and torch),
    rstd = 1/√(var + eps),  x̂ = (x − mean)·rstd,   out = w ⊙ x̂ + b.

Backward (derivation after llm.c's `layernorm_backward`; g = dout ⊙ w is the gradient reaching x̂):

    db = Σ_rows dout,   dw = Σ_rows dout ⊙ x̂,
    dx = rstd · (g − mean_j(g) − x̂ · mean_j(g ⊙ x̂)).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..tensor import get_array_module
from .threads import run_chunks


BLOCK = 1 << 15  # elements per in-cache block of rows: the passes of a block stay in L2


def _blocked(x) -> bool:
    """Large C-contiguous NumPy input: rows in blocks across the thread pool (a row's numbers do not depend on
    the block holding it, so the results are the one-shot kernel's bit for bit)."""
    return isinstance(x, np.ndarray) and x.flags.c_contiguous and x.ndim >= 1 and x.size >= 2 * BLOCK


def _over_row_blocks(fn, n_rows: int, c: int) -> None:
    per = max(1, BLOCK // max(c, 1))

    def work(lo: int, hi: int) -> None:
        for r in range(lo, hi, per):
            fn(r, min(r + per, hi))

    run_chunks(work, n_rows, n_rows * c, align=per)


def _forward_blocks(x, w, b, eps: float) -> tuple[Any, Any, Any]:
    c = x.shape[-1]
    x2 = x.reshape(-1, c)
    out, mean, rstd = np.empty_like(x2), np.empty((x2.shape[0], 1), x.dtype), np.empty((x2.shape[0], 1), x.dtype)

    def block(lo: int, hi: int) -> None:
        xs, o, m, r = x2[lo:hi], out[lo:hi], mean[lo:hi], rstd[lo:hi]
        np.mean(xs, axis=-1, keepdims=True, out=m)
        np.subtract(xs, m, out=o)
        var = np.einsum("...i,...i->...", o, o)[..., None] / c
        r[...] = 1.0 / np.sqrt(var + eps)
        o *= r
        if w is not None:
            o *= w
        if b is not None:
            o += b

    _over_row_blocks(block, x2.shape[0], c)
    lead = x.shape[:-1] + (1,)
    return out.reshape(x.shape), mean.reshape(lead), rstd.reshape(lead)


def layer_norm_forward(x, w=None, b=None, eps: float = 1e-5) -> tuple[Any, Any, Any]:
    """out = w·(x − mean)/√(var + eps) + b over the last axis; returns (out, mean, rstd), both (..., 1)."""
    xp = get_array_module(x)
    if _blocked(x):
        return _forward_blocks(x, w, b, eps)
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
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


def _backward_blocks(d2, x2, w, mean2, rstd2) -> tuple[Any, Any]:
    """dx and x̂ by row blocks (the three terms of the module docstring, in the same order as the one-shot path)."""
    c = x2.shape[-1]
    xhat, dx = np.empty_like(x2), np.empty_like(x2)

    def block(lo: int, hi: int) -> None:
        xh, g, r = xhat[lo:hi], dx[lo:hi], rstd2[lo:hi]
        np.subtract(x2[lo:hi], mean2[lo:hi], out=xh)
        xh *= r
        if w is not None:
            np.multiply(d2[lo:hi], w, out=g)
        else:
            g[...] = d2[lo:hi]
        gx = np.einsum("ij,ij->i", g, xh)[:, None] / c
        g -= g.mean(axis=-1, keepdims=True)
        g -= xh * gx
        g *= r

    _over_row_blocks(block, x2.shape[0], c)
    return dx, xhat


def layer_norm_backward(dout, x, w, mean, rstd) -> tuple[Any, Any | None, Any | None]:
    """(dx, dw, db) for layer_norm_forward; dw and db are None when w is None (db is then still Σ dout)."""
    xp = get_array_module(x)
    c = x.shape[-1]
    x2, d2, rstd2 = x.reshape(-1, c), dout.reshape(-1, c), rstd.reshape(-1, 1)  # (rows, C), (rows, 1)
    if _blocked(x):
        dx, xhat = _backward_blocks(np.ascontiguousarray(d2), x2, w, mean.reshape(-1, 1), rstd2)
        dw = np.einsum("ij,ij->j", d2, xhat) if w is not None else None
        return dx.reshape(x.shape), dw, d2.sum(axis=0)
    xhat = x2 - mean.reshape(-1, 1)  # recomputed rather than saved: one array less kept alive between passes
    xhat *= rstd2
    db = d2.sum(axis=0)
    dw = xp.einsum("ij,ij->j", d2, xhat) if w is not None else None  # Σ_rows dout ⊙ x̂, no product temporary
    g = d2 * w if w is not None else d2.copy()  # gradient reaching x̂ (a fresh array: dx is built in it)
    # x̂_i = (x_i − mean)·rstd depends on x_j through three routes; each gives one term of dx:
    gx = xp.einsum("ij,ij->i", g, xhat)[:, None] / c  # mean_j(g ⊙ x̂), row dot products
    gm = g.mean(axis=-1, keepdims=True)
    g -= gm  # term 1 (direct) and term 2 (through the mean): g − mean(g)
    xhat *= gx
    g -= xhat  # term 3 (through rstd): −x̂ · mean(g ⊙ x̂)
    g *= rstd2  # every term carries the outer factor rstd
    return g.reshape(x.shape), dw, db
