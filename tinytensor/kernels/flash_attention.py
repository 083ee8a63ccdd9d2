"""Memory-efficient attention: the FlashAttention algorithm (Dao et al. 2022, Algorithms 1 and 2) in NumPy/CuPy.

The plain kernel (attention.py) materialises the (Tq, Tk) probabilities per head and keeps them for backward.
Here the keys are visited in tiles and the softmax is computed online, so only O(T·hd) per head is ever kept:
the output O and the row log-sum-exp L. Per query tile Qᵢ (rows i) and key tile Kⱼ, Vⱼ, with s the scale:

    Sᵢⱼ = s·Qᵢ Kⱼᵀ (causal: −∞ where key > query)
    mᵢ' = max(mᵢ, rowmax Sᵢⱼ);   Pᵢⱼ = exp(Sᵢⱼ − mᵢ')
    ℓᵢ ← e^(mᵢ − mᵢ')·ℓᵢ + rowsum Pᵢⱼ;   Aᵢ ← e^(mᵢ − mᵢ')·Aᵢ + Pᵢⱼ Vⱼ;   mᵢ ← mᵢ'
    at the end Oᵢ = Aᵢ / ℓᵢ and Lᵢ = mᵢ + log ℓᵢ (so P = exp(S − L) exactly, for backward).

Backward recomputes each tile's probabilities from L instead of storing them (Algorithm 2). With Dᵢ = rowsum(dOᵢ ⊙ Oᵢ)
(= rowsum(dPᵢ ⊙ Pᵢ), the softmax Jacobian's correction term, since O = P V):

    Pᵢⱼ = exp(Sᵢⱼ − Lᵢ);   dVⱼ += Pᵢⱼᵀ dOᵢ;   dPᵢⱼ = dOᵢ Vⱼᵀ;   dSᵢⱼ = Pᵢⱼ ⊙ (dPᵢⱼ − Dᵢ)
    dQᵢ += s·dSᵢⱼ Kⱼ;   dKⱼ += s·dSᵢⱼᵀ Qᵢ

Each tile operation is batched over every leading (batch, head) axis at once. With is_causal, tiles entirely above
the diagonal are skipped (half the work) and only diagonal tiles are masked. No attn_mask here (the functional
wrapper sends that case to the plain kernel).

Attention dropout (keep-mask Dᵢⱼ, factor c = 1/(1 − p)) multiplies Pᵢⱼ only where it meets V: Aᵢ += (Pᵢⱼ ⊙ Dᵢⱼ·c) Vⱼ
while ℓᵢ sums the undropped Pᵢⱼ (dropout acts after the softmax); in backward dVⱼ += (P ⊙ D·c)ᵀ dOᵢ and
dPᵢⱼ = (dOᵢ Vⱼᵀ) ⊙ D·c, and Dᵢ = rowsum(dO ⊙ O) still equals rowsum(dP ⊙ P). As in FlashAttention, the mask is
never stored: each tile's mask is regenerated from a counter-based generator (Philox) keyed by (seed, tile).

Grouped-query attention (enable_gqa): K and V are repeated to the query heads first, exactly torch's math path
(repeat_interleave along dim −3), and in backward dK, dV are summed back over each group of g query heads. The
tiles walk the time axis, so the plain kernel's trick of stacking a group's queries along it would break the causal
tiling; the repeat costs g copies of K and V (still O(T·hd) per head).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..tensor import get_array_module
from .dropout import keep_scale
from .matmul import matmul

BLOCK = 128  # query and key rows per tile


def _tile_scores(qi, kj, s: float, q0: int, k0: int, causal: bool, xp) -> Any:
    """s·Qᵢ Kⱼᵀ for the tile whose first query row is q0 and first key row is k0, causal-masked when it crosses
    the diagonal (top-left aligned, torch's is_causal: query r may see keys c ≤ r)."""
    sc = matmul(qi, kj.swapaxes(-1, -2))
    sc *= s
    if causal and k0 + kj.shape[-2] - 1 > q0:
        rows = xp.arange(q0, q0 + qi.shape[-2])[:, None]
        cols = xp.arange(k0, k0 + kj.shape[-2])[None, :]
        xp.copyto(sc, -xp.inf, where=cols > rows)
    return sc


def tile_keep_mask(seed: int, q0: int, k0: int, shape: tuple[int, ...], p: float, xp) -> Any:
    """The dropout keep-mask of the tile at (q0, k0), scaled by 1/(1 − p): the same every time it is regenerated."""
    rng = np.random.Generator(np.random.Philox(key=[seed, (q0 << 32) | k0]))
    keep = rng.random(shape, dtype=np.float32) >= p
    return xp.asarray(keep * np.float32(keep_scale(p)))


def repeat_heads(x, groups: int) -> Any:
    """(.., h_kv, T, E) -> (.., h_kv·groups, T, E), each head repeated `groups` times in place (repeat_interleave)."""
    return x if groups == 1 else get_array_module(x).repeat(x, groups, axis=-3)


def sum_head_groups(dx, groups: int) -> Any:
    """repeat_heads' backward: (.., h_kv·groups, T, E) -> (.., h_kv, T, E), summing each group's gradients."""
    if groups == 1:
        return dx
    return dx.reshape(dx.shape[:-3] + (-1, groups) + dx.shape[-2:]).sum(axis=-3)


def flash_attention_forward(q, k, v, is_causal: bool = False, scale: float | None = None, dropout_p: float = 0.0,
                            seed: int = 0, block: int = BLOCK, enable_gqa: bool = False) -> tuple[Any, dict]:
    """O = dropout(softmax(s·Q Kᵀ [+ causal mask])) V by key tiles with an online softmax; returns (O, saved) where
    saved holds q, k, v, O and the row log-sum-exp L (..., Tq, 1) — no (Tq, Tk) array is kept. `seed` keys the
    per-tile dropout masks; with enable_gqa, k and v may have fewer heads (dim −3), each count dividing q's."""
    xp = get_array_module(q)
    groups = (q.shape[-3] // k.shape[-3], q.shape[-3] // v.shape[-3]) if enable_gqa else (1, 1)
    k, v = repeat_heads(k, groups[0]), repeat_heads(v, groups[1])  # (.., h, Tk, E): one K, V per query head
    tq, tk = q.shape[-2], k.shape[-2]
    if is_causal and tq > tk:
        raise ValueError("flash attention with is_causal needs Tq <= Tk")
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    batch = q.shape[:-2]
    out = xp.empty(batch + (tq, v.shape[-1]), dtype=q.dtype)
    lse = xp.empty(batch + (tq, 1), dtype=q.dtype)
    for q0 in range(0, tq, block):
        qi = q[..., q0:q0 + block, :]
        n = qi.shape[-2]
        m = xp.full(batch + (n, 1), -xp.inf, dtype=q.dtype)
        ell = xp.zeros(batch + (n, 1), dtype=q.dtype)
        acc = xp.zeros(batch + (n, v.shape[-1]), dtype=q.dtype)
        k_end = min(tk, q0 + n) if is_causal else tk  # causal: keys after the tile's last query never count
        for k0 in range(0, k_end, block):
            sc = _tile_scores(qi, k[..., k0:k0 + block, :], s, q0, k0, is_causal, xp)
            m_new = xp.maximum(m, sc.max(axis=-1, keepdims=True))
            sc -= m_new
            xp.exp(sc, out=sc)  # Pᵢⱼ relative to the running max
            alpha = xp.exp(m - m_new)  # rescales what was accumulated under the old max
            ell *= alpha
            ell += sc.sum(axis=-1, keepdims=True)
            acc *= alpha
            if dropout_p > 0:
                sc *= tile_keep_mask(seed, q0, k0, sc.shape, dropout_p, xp).astype(q.dtype, copy=False)
            acc += matmul(sc, v[..., k0:k0 + block, :])
            m = m_new
        acc /= ell
        out[..., q0:q0 + n, :] = acc
        lse[..., q0:q0 + n, :] = m + xp.log(ell)
    saved = {"q": q, "k": k, "v": v, "out": out, "lse": lse, "scale": s, "causal": is_causal, "block": block,
             "p": dropout_p, "seed": seed, "groups": groups}
    return out, saved


def flash_attention_backward(dout, saved: dict) -> tuple[Any, Any, Any]:
    """(dq, dk, dv) for flash_attention_forward, recomputing each tile's probabilities from the saved L."""
    q, k, v, out, lse = saved["q"], saved["k"], saved["v"], saved["out"], saved["lse"]
    s, causal, block, p_drop, seed = saved["scale"], saved["causal"], saved["block"], saved["p"], saved["seed"]
    xp = get_array_module(q)
    tq, tk = q.shape[-2], k.shape[-2]
    d = (dout * out).sum(axis=-1, keepdims=True)  # Dᵢ = rowsum(dO ⊙ O)
    dq = xp.zeros(q.shape, dtype=q.dtype)
    dk = xp.zeros(k.shape, dtype=q.dtype)
    dv = xp.zeros(v.shape, dtype=q.dtype)
    for k0 in range(0, tk, block):
        kj, vj = k[..., k0:k0 + block, :], v[..., k0:k0 + block, :]
        q_start = (k0 // block) * block if causal else 0  # causal: query tiles above this key tile see none of it
        for q0 in range(q_start, tq, block):
            qi, doi = q[..., q0:q0 + block, :], dout[..., q0:q0 + block, :]
            p = _tile_scores(qi, kj, s, q0, k0, causal, xp)
            p -= lse[..., q0:q0 + block, :]
            xp.exp(p, out=p)  # Pᵢⱼ = exp(Sᵢⱼ − Lᵢ), exactly the forward's probabilities
            dp = matmul(doi, vj.swapaxes(-1, -2))  # dP̃ᵢⱼ = dOᵢ Vⱼᵀ
            if p_drop > 0:
                mask = tile_keep_mask(seed, q0, k0, p.shape, p_drop, xp).astype(q.dtype, copy=False)
                dv[..., k0:k0 + block, :] += matmul((p * mask).swapaxes(-1, -2), doi)  # dVⱼ += P̃ᵀ dOᵢ
                dp *= mask  # dP = dP̃ ⊙ D·c
            else:
                dv[..., k0:k0 + block, :] += matmul(p.swapaxes(-1, -2), doi)  # dVⱼ += Pᵀ dOᵢ
            dp -= d[..., q0:q0 + block, :]
            dp *= p  # dSᵢⱼ = P ⊙ (dP − D)
            dp *= s  # the scale, folded in once for dQ and dK
            dq[..., q0:q0 + block, :] += matmul(dp, kj)  # dQᵢ += s·dS Kⱼ
            dk[..., k0:k0 + block, :] += matmul(dp.swapaxes(-1, -2), qi)  # dKⱼ += s·dSᵀ Qᵢ
    gk, gv = saved["groups"]
    return dq, sum_head_groups(dk, gk), sum_head_groups(dv, gv)  # GQA: each group's heads summed back


__all__ = ["flash_attention_forward", "flash_attention_backward", "tile_keep_mask", "repeat_heads", "sum_head_groups",
           "BLOCK"]
