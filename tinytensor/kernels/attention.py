"""Scaled dot-product attention (Vaswani et al. 2017; book ch. 3), forward and step-by-step hand-derived backward.

Forward, per batch/head, with s the scale (default 1/√hd) and M the additive mask (0 where a query may attend,
−∞ elsewhere; from is_causal and/or attn_mask):
    S = s·Q Kᵀ + M          (Tq, Tk) scores
    P = softmax_rows(S)     attention weights
    P̃ = P ⊙ D / (1 − p)     attention dropout with keep-mask D (P̃ = P without dropout)
    O = P̃ V
Backward, given dO:
    dV = P̃ᵀ dO                          (O is linear in V)
    dP̃ = dO Vᵀ                          (O is linear in P̃)
    dP = dP̃ ⊙ D / (1 − p)               (dropout passes the gradient through the same mask)
    dS = P ⊙ (dP − rowsum(dP ⊙ P))      (the softmax Jacobian diag(p) − p pᵀ, row by row)
    dQ = s·dS K,   dK = s·dSᵀ Q          (S is bilinear in Q and K)
Masked scores get P = 0, so dS = 0 there: the mask needs no backward of its own.

Causal attention on NumPy arrays with heads up to native.ATTENTION_MAX_E and ATTENTION_MIN_T to ATTENTION_MAX_T keys
(GQA too) runs whole in the C kernel (tinytensor/csrc/native.c, "fused attention"): the same equations, each product
summed in its own fixed order, one call over every head forward and one backward (native.whole_attention_fits).

Fully-masked rows (a query that may attend to nothing): torch's math path gives nan; we define the output row and
every gradient through it as 0 (the row's weights are all 0), which keeps padding rows from poisoning a batch.

Grouped-query attention (Ainslie et al. 2023; torch's enable_gqa): K and V have h_kv < h heads and query head i
uses key/value head ⌊i / g⌋, g = h / h_kv (torch's repeat_interleave). Instead of repeating K and V g times, the g
query heads of a group are stacked along the time axis, (.., h, Tq, E) -> (.., h_kv, g·Tq, E), a free reshape:
each stacked query row meets its group's one K, so S = s·Q Kᵀ and O = P̃ V are single products per kv head, and in
backward the contraction over the stacked rows in dK = s·dSᵀ Q and dV = P̃ᵀ dO *is* the sum of the group's
gradients (docs/backprop-llama.md §4). Masks and dropout act on S and P in the (.., h, Tq, Tk) layout as before.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..tensor import get_array_module
from .dropout import keep_scale
from . import native
from .matmul import matmul
from .reduce import row_sum
from .softmax import exp_shifted_rows


def causal_mask(tq: int, tk: int, xp) -> Any:
    """torch's is_causal mask: query i may attend to keys j ≤ i (top-left aligned lower triangle of (tq, tk))."""
    return xp.tril(xp.ones((tq, tk), dtype=bool))


def gqa_groups(q_shape: tuple, k_shape: tuple, v_shape: tuple, enable_gqa: bool) -> tuple[int, int]:
    """(query heads per key head, query heads per value head): (1, 1) unless enable_gqa with fewer kv heads."""
    if not enable_gqa:
        return 1, 1
    hq, hk, hv = q_shape[-3], k_shape[-3], v_shape[-3]
    assert hq % hk == 0 and hq % hv == 0, "the functional wrapper checks that kv heads divide query heads"
    return hq // hk, hq // hv


def grouped_matmul(a, b, groups: int) -> Any:
    """a @ b where a (.., h, m, n) has `groups` times the heads of b (.., h/groups, n, p): each group of a's heads,
    stacked along its rows, meets one head of b. Returns (.., h, m, p); plain a @ b when groups == 1."""
    if groups == 1:
        return matmul(a, b)
    h, m = a.shape[-3], a.shape[-2]
    out = matmul(a.reshape(a.shape[:-3] + (h // groups, groups * m, a.shape[-1])), b)  # (.., h_kv, g·m, p)
    return out.reshape(out.shape[:-3] + (h, m, out.shape[-1]))  # (.., h, m, p)


def grouped_matmul_tn(a, b, groups: int) -> Any:
    """aᵀ b contracted over the rows of each group: a (.., h, m, n), b (.., h, m, p) -> (.., h/groups, n, p), the
    sum over each group's g heads of a_headᵀ b_head (the backward of grouped_matmul's shared operand)."""
    if groups == 1:
        return matmul(a.swapaxes(-1, -2), b)
    h, m = a.shape[-3], a.shape[-2]
    a2 = a.reshape(a.shape[:-3] + (h // groups, groups * m, a.shape[-1]))  # (.., h_kv, g·m, n)
    b2 = b.reshape(b.shape[:-3] + (h // groups, groups * m, b.shape[-1]))  # (.., h_kv, g·m, p)
    return matmul(a2.swapaxes(-1, -2), b2)  # (.., h_kv, n, p): Σ over the g·m stacked rows


def attention_forward(q, k, v, attn_mask=None, is_causal: bool = False, scale: float | None = None,
                      dropout_keep=None, dropout_p: float = 0.0, enable_gqa: bool = False) -> tuple[Any, dict]:
    """O = dropout(softmax(s·Q Kᵀ + M)) V for q (..., Tq, hd), k (..., Tk, hd), v (..., Tk, hv); returns (O, saved).

    attn_mask: boolean (True = may attend, torch's convention) or float (added to the scores), broadcastable to
    (..., Tq, Tk). dropout_keep: boolean keep-mask broadcastable to (..., Tq, Tk), or None for no dropout.
    enable_gqa: k and v may have fewer heads (dim −3) than q, each dividing q's (grouped-query attention).
    """
    xp = get_array_module(q)
    tq, tk = q.shape[-2], k.shape[-2]
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    gk, gv = gqa_groups(q.shape, k.shape, v.shape, enable_gqa)
    diagonal = xp is np and is_causal and attn_mask is None and tq <= tk
    if diagonal and gk == gv and native.whole_attention_fits(q, k, v, dropout_keep, gk):
        c = 1.0 if dropout_keep is None else keep_scale(dropout_p)  # the whole of it in one C call (small heads)
        out, probs = native.causal_attention_forward(q, k, v, s, dropout_keep, c, gk)
        return out, {"q": q, "k": k, "v": v, "probs": probs, "scale": s, "keep": dropout_keep, "p": dropout_p,
                     "groups": (gk, gv), "fused": True, "whole": True}
    scores = grouped_matmul(q, k.swapaxes(-1, -2), gk)  # (..., Tq, Tk)
    fused = diagonal and native.usable(scores) and scores.flags.c_contiguous
    if fused:  # the C kernel: scale, mask and softmax in one pass per row, the masked half never read
        probs = native.causal_softmax_forward(scores, s)
        return _dropout_and_values(probs, q, k, v, s, dropout_keep, dropout_p, (gk, gv), fused)
    scores *= s
    if diagonal:  # the mask as one add of 0 / −∞: 4x cheaper than a masked fill (a stray inf or nan among the
        scores += _causal_bias(tq, tk, scores.dtype)  # masked scores makes a row's sum nan: the fallback refills)
    allowed = causal_mask(tq, tk, xp) if is_causal and not diagonal else None
    if attn_mask is not None:
        if attn_mask.dtype == bool:
            allowed = attn_mask if allowed is None else allowed & attn_mask
        else:
            scores = scores + attn_mask  # additive float mask; may broadcast scores to a larger batch shape
    if allowed is not None:
        if np.broadcast_shapes(scores.shape, allowed.shape) != scores.shape:  # a mask with more batch axes
            scores = xp.array(xp.broadcast_to(scores, np.broadcast_shapes(scores.shape, allowed.shape)))
        xp.copyto(scores, -xp.inf, where=~allowed)  # mask fill in place
    probs = _softmax_diagonal_shift(scores) if diagonal else None
    if probs is None:
        probs = _softmax_max_shift(_causal_scores(q, k, s, gk, xp) if diagonal else scores, xp)
    return _dropout_and_values(probs, q, k, v, s, dropout_keep, dropout_p, (gk, gv), False)


def _dropout_and_values(probs, q, k, v, s: float, keep, p: float, groups: tuple[int, int], fused: bool):
    """O = P̃ V from the attention weights, and what backward keeps."""
    pd = probs if keep is None else probs * keep  # P ⊙ D (the boolean mask cast in the loop)
    out = grouped_matmul(pd, v, groups[1])  # (..., Tq, hv)
    if keep is not None:
        out *= keep_scale(p)  # O = P̃ V with P̃ = P ⊙ D / (1 − p): the scale on the smaller array
    saved = {"q": q, "k": k, "v": v, "probs": probs, "scale": s, "keep": keep, "p": p, "groups": groups,
             "fused": fused}
    return out, saved


_BIAS: dict[tuple[int, int, Any], np.ndarray] = {}


def _causal_bias(tq: int, tk: int, dtype: Any) -> np.ndarray:
    """The causal mask as an additive (tq, tk) array, 0 where a query may attend and −∞ elsewhere (cached)."""
    key = (tq, tk, np.dtype(dtype))
    bias = _BIAS.get(key)
    if bias is None:
        if len(_BIAS) > 64:  # generation meets many lengths: keep the cache small
            _BIAS.clear()
        bias = _BIAS[key] = np.where(causal_mask(tq, tk, np), 0.0, -np.inf).astype(dtype)
        bias.flags.writeable = False
    return bias


def _softmax_max_shift(scores, xp) -> Any:
    """Row softmax of the masked scores in place, shifted by the row maximum; a fully-masked row has max −∞: it is
    shifted by 0 instead, so it stays all zeros (and 0/1 = 0 rather than 0/0)."""
    m = scores.max(axis=-1, keepdims=True)
    xp.copyto(m, 0, where=m == -xp.inf)  # not m[mask] = 0: boolean-mask assignment syncs with the host on CuPy
    scores -= m
    xp.exp(scores, out=scores)
    denom = row_sum(scores)
    xp.copyto(denom, 1, where=denom == 0)
    scores /= denom
    return scores


def _softmax_diagonal_shift(scores) -> Any:
    """Row softmax of causally masked scores in place, shifted by each row's diagonal score S_ii instead of its
    maximum; None (scores spent) if that overflows.

    softmax(S) = softmax(S − c) for any c per row; the maximum is only the usual c that keeps e^(S − c) ≤ 1. Any c
    with max_j S_ij − c below the exponent's overflow (88.7 in float32, 709 in float64) gives the same ratios to
    rounding, and the diagonal is always allowed under the causal mask, so c = S_ii ≤ max makes the row's sum ≥ 1
    and every term at least as large as with the maximum (no extra underflow). What it saves: NumPy's maximum over
    rows of 64-256 scores costs 2-4x a whole pass (216 µs at (12, 4, 64, 64), float32). A row with a score more than
    the overflow bound above its diagonal makes its sum infinite: then the caller recomputes with the maximum.
    (Base-2 exponentials were tried: NumPy's float32 exp2 is faster than exp on small arrays but 2x slower on a
    (2, 12, 256, 256) one and 5x on the masked −∞ half, so e stays.)"""
    c = np.diagonal(scores, axis1=-2, axis2=-1)[..., None].copy()  # (..., Tq, 1), copied: scores is overwritten
    denom = exp_shifted_rows(scores, c, scores)
    if denom is None:
        return None
    scores /= denom
    return scores


def _causal_scores(q, k, s: float, gk: int, xp) -> Any:
    """s·Q Kᵀ with the causal mask filled (the scores again, for the rare row that overflows the diagonal shift)."""
    scores = grouped_matmul(q, k.swapaxes(-1, -2), gk)
    scores *= s
    xp.copyto(scores, -xp.inf, where=~causal_mask(q.shape[-2], k.shape[-2], xp))
    return scores


def attention_backward(dout, saved: dict) -> tuple[Any, Any, Any]:
    """(dq, dk, dv) for attention_forward, step by step as in the module docstring (batch shapes may be broadcast;
    the autograd engine sums them back to each input's shape)."""
    q, k, v, probs, s, keep = saved["q"], saved["k"], saved["v"], saved["probs"], saved["scale"], saved["keep"]
    gk, gv = saved["groups"]  # query heads per key / value head (1 without GQA)
    c = 1.0 if keep is None else keep_scale(saved["p"])  # 1 / (1 − p)
    if saved.get("whole"):
        return native.causal_attention_backward(dout, q, k, v, probs, s, keep, c, gk)
    pd = probs if keep is None else probs * keep  # P ⊙ D = (1 − p)·P̃, recomputed from the saved boolean mask
    dv = grouped_matmul_tn(pd, dout, gv)  # dV = P̃ᵀ dO (GQA: summed over each group's query heads)
    if keep is not None:
        dv *= c
    dp = grouped_matmul(dout, v.swapaxes(-1, -2), gv)  # dP̃ = dO Vᵀ
    if keep is not None:
        dp *= keep  # dP = dP̃ ⊙ D / (1 − p), its factor c left for the scale below
    # dS = P ⊙ (dP − rowsum(dP ⊙ P)), written into dp in place; linear in dP, so c can come last
    if saved.get("fused"):  # the C kernel (the masked half written as 0, never read)
        ds = native.causal_softmax_backward(dp, probs, s * c)
    else:
        dp -= row_sum(dp * probs)
        dp *= probs
        ds = dp
        ds *= s * c  # fold the scales into dS once instead of into both dQ and dK
    dq = grouped_matmul(ds, k, gk)  # dQ = s·dS K
    dk = grouped_matmul_tn(ds, q, gk)  # dK = s·dSᵀ Q (GQA: summed over each group's query heads)
    return dq, dk, dv
