"""Softmax, log-softmax and the fused softmax-cross-entropy, forward and hand-derived backward (book ch. 5 loss).

Stable forms subtract the row maximum m first (the result is unchanged since the shift cancels in the ratio):
    softmax:      p_i = e^(x_i − m) / Σ_j e^(x_j − m)          dx = p ⊙ (dout − Σ_j dout_j p_j)
    log_softmax:  l_i = (x_i − m) − log Σ_j e^(x_j − m)      dx = dout − p · Σ_j dout_j
    cross-entropy per row r with target t_r:  loss_r = −l_{r,t_r} = log Σ_j e^(x_rj − m_r) − (x_{r,t_r} − m_r)
                  dloss_r/dx_r = p_r − onehot(t_r)
Rows whose target equals `ignore_index` contribute no loss and no gradient; reduction "mean" divides by the number
of kept rows (all rows ignored: 0/0 = nan, exactly as torch, with a zero gradient).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..tensor import get_array_module
from . import native
from .reduce import row_sum
from .threads import run_chunks


BLOCK = 1 << 17  # elements per block of rows (512 KB of float32): measured best of 2^15..2^18 at 124M and small shapes


def _blockable(a, axis: int) -> bool:
    """A large C-contiguous NumPy array reduced along its last axis: worth splitting into blocks of whole rows."""
    return (isinstance(a, np.ndarray) and a.ndim >= 1 and axis in (-1, a.ndim - 1) and a.size >= 2 * BLOCK
            and a.flags.c_contiguous)


def _row_blocks(fn, arrays: tuple) -> None:
    """Run fn(*blocks) over blocks of whole rows of same-shape C-contiguous arrays, split over the thread pool. The
    blocks depend on the shape only, not on the thread count, so results repeat bit for bit at any thread count
    (they equal the one-shot kernel's to rounding: a BLAS row sum's last bits depend on the rows in its call)."""
    c = arrays[0].shape[-1]
    rows = tuple(a.reshape(-1, c) for a in arrays)
    per = max(1, BLOCK // max(c, 1))

    def work(lo: int, hi: int) -> None:
        for r in range(lo, hi, per):
            fn(*(a[r:min(r + per, hi)] for a in rows))

    run_chunks(work, rows[0].shape[0], arrays[0].size, align=per)


def exp_shifted_rows(x, c, out) -> Any:
    """out = e^(x − c) for NumPy rows (c (..., 1), `out` may be x) and its row sums (..., 1); None where a sum is
    not finite (a row spread beyond the exponent's range above c, a nan, an infinity): then shift by the maximum.

    Any shift gives the same softmax (the module text); the maximum is only the usual one. An element of the row
    as c makes every row sum ≥ 1 and every term at least as large as with the maximum, and skips NumPy's row
    maximum, which costs 2-4 whole passes over short rows (670 µs at (2, 12, 256, 256) float32 against 170 µs for
    a subtraction)."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow and nan are caught below
        np.subtract(x, c, out=out)
        np.exp(out, out=out)
        sums = row_sum(out)
    return sums if np.isfinite(sums).all() else None


def _shifted_exp_rows(x, out) -> Any:
    """out = e^(x − c) along the last axis and its row sums, c the row's first element, or its maximum where that
    overflows."""
    sums = exp_shifted_rows(x, x[..., :1], out)
    if sums is None:
        np.subtract(x, x.max(axis=-1, keepdims=True), out=out)
        np.exp(out, out=out)
        sums = row_sum(out)
    return sums


def _softmax_block(x, out) -> None:
    out /= _shifted_exp_rows(x, out)


def _softmax_backward_block(dout, out, dx) -> None:
    np.multiply(dout, out, out=dx)
    s = row_sum(dx)
    dx -= out * s


def softmax_forward(x, axis: int = -1):
    """e^(x − c) / Σ e^(x − c) along `axis`, c the row's first element or its maximum (NumPy, last axis; else the
    maximum), large NumPy inputs by row blocks across the thread pool."""
    xp = get_array_module(x)
    if _blockable(x, axis):
        out = np.empty_like(x)
        _row_blocks(_softmax_block, (x, out))
        return out
    if xp is np and axis in (-1, x.ndim - 1) and x.size:  # not CuPy: the overflow check would wait for the device
        out = np.empty_like(x)
        out /= _shifted_exp_rows(x, out)
        return out
    out = x - x.max(axis=axis, keepdims=True)
    xp.exp(out, out=out)  # in place: one (..., C) array in all
    out /= out.sum(axis=axis, keepdims=True)
    return out


def softmax_backward(dout, out, axis: int = -1):
    """dx = p ⊙ (dout − Σ_j dout_j p_j), p the forward output (the Jacobian diag(p) − p pᵀ applied to dout)."""
    if _blockable(out, axis) and isinstance(dout, np.ndarray) and dout.shape == out.shape:
        dx = np.empty(out.shape, dtype=np.result_type(dout, out))
        _row_blocks(_softmax_backward_block, (np.ascontiguousarray(dout), out, dx))
        return dx
    dx = dout * out  # term 1: diag(p)·dout
    dx -= out * (row_sum(dx) if axis in (-1, out.ndim - 1) else dx.sum(axis=axis, keepdims=True))  # term 2: −p (pᵀ dout)
    return dx


def log_softmax_forward(x, axis: int = -1):
    """(x − max) − log Σ e^(x − max) along `axis`."""
    xp = get_array_module(x)
    out = x - x.max(axis=axis, keepdims=True)
    out -= xp.log(xp.exp(out).sum(axis=axis, keepdims=True))
    return out


def log_softmax_backward(dout, out, axis: int = -1):
    """dx = dout − softmax(x) · Σ_j dout_j, with softmax(x) = e^out recovered from the forward output."""
    xp = get_array_module(out)
    return dout - xp.exp(out) * dout.sum(axis=axis, keepdims=True)


def cross_entropy_forward(logits, targets, ignore_index: int = -100, reduction: str = "mean") -> tuple[Any, dict]:
    """Fused log-softmax + negative log-likelihood of (N, C) logits for (N,) integer targets.

    Returns (loss, saved): loss is a 0-d array for "mean"/"sum", (N,) for "none" (0 on ignored rows); `saved`
    holds the probabilities and row weights that `cross_entropy_backward` needs.
    """
    xp = get_array_module(logits)
    n = logits.shape[0]
    keep = targets != ignore_index
    safe = xp.where(keep, targets, 0)  # ignored rows read column 0; their weight below is 0
    probs = xp.empty(logits.shape, dtype=logits.dtype)  # (N, C), becomes the softmax, kept for backward
    losses = xp.empty(n, dtype=logits.dtype)

    def rows(lo: int, hi: int) -> None:  # every row is independent: row blocks run on the thread pool
        p, r = probs[lo:hi], xp.arange(hi - lo)
        xp.subtract(logits[lo:hi], logits[lo:hi].max(axis=1, keepdims=True), out=p)  # shifted logits x − m
        picked = p[r, safe[lo:hi]]  # x_t − m, read before exp overwrites the array
        xp.exp(p, out=p)
        sums = row_sum(p)[:, 0]
        losses[lo:hi] = xp.log(sums) - picked  # log Σ e^(x − m) − (x_t − m)
        p /= sums[:, None]

    if native.usable(logits, probs) and logits.flags.c_contiguous:
        native.cross_entropy_rows(logits, safe, probs, losses)  # the same rows in C, one loop per pass
    elif xp is np:
        run_chunks(rows, n, logits.size)
    else:
        rows(0, n)
    losses *= keep
    dt = logits.dtype.type
    if reduction == "mean":
        # the count stays on the device (no sync): loss = Σ / n, or nan for no kept rows (torch's 0/0), whose
        # gradient weight is then 0 rather than inf
        n_kept = keep.sum(dtype=logits.dtype)
        n_safe = xp.maximum(n_kept, 1)
        loss = xp.where(n_kept > 0, losses.sum() / n_safe, dt("nan"))
        weight = keep * (1 / n_safe)
    elif reduction == "sum":
        loss, weight = losses.sum(), keep.astype(logits.dtype)
    elif reduction == "none":
        loss, weight = losses, keep.astype(logits.dtype)
    else:
        raise ValueError(f"reduction={reduction!r} is not one of 'mean', 'sum', 'none'")
    return xp.asarray(loss), {"probs": probs, "targets": safe, "weight": weight, "reduction": reduction}


def cross_entropy_backward(dloss, saved: dict, consume: bool = False):
    """dlogits = (softmax − onehot(target)) · weight_r · dloss, with weight_r = keep_r / n_kept for "mean".

    consume: this is the last use of `saved` (no retain_graph), so the probabilities are overwritten in place
    instead of copied (one (N, C) array less: the logits of a GPT are the largest activation).
    """
    xp = get_array_module(saved["probs"])
    probs, safe, weight = saved["probs"], saved["targets"], saved["weight"]
    dlogits = probs if consume else probs.copy()
    dlogits[xp.arange(probs.shape[0]), safe] -= 1  # p − onehot(t)
    w = weight * dloss  # (N,): the upstream gradient per row ((N,) for "none", a scalar otherwise)
    dlogits *= w[:, None]  # ignored rows have weight 0
    return dlogits
