"""torch.nn.functional's names and keywords for tinytensor: fused ops, each a few-line `Function` over a kernel pair.

Every fused op (`linear`, `embedding`, `layer_norm`, `gelu`, `softmax`, `log_softmax`, `cross_entropy`, `dropout`,
`scaled_dot_product_attention`) calls the forward/backward pair in `tinytensor.kernels`, where the math is derived.
The `*_composite` twins build the same function from the primitive ops in `ops.py` only, so the tests can check
fused == composite == torch == finite differences (DESIGN §4). Dtypes are never mixed or silently upcast: float32
stays float32 and mixing float dtypes raises TypeError.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import random as _random
from .kernels import attention as _attn
from .kernels import dropout as _drop
from .kernels import flash_attention as _flash
from .kernels import gelu as _gelu
from .kernels import layer_norm as _ln
from .kernels import matmul as _mm
from .kernels import softmax as _sm
from .tensor import Function, Tensor, _dims, get_array_module


def _floats(*xs: Any) -> list[Tensor | None]:
    """Tensors (arrays are wrapped) of one floating dtype; None passes through; mixed dtypes raise TypeError."""
    ts = [x if x is None or isinstance(x, Tensor) else Tensor(x) for x in xs]
    dtypes = {t.dtype for t in ts if t is not None}
    if len(dtypes) > 1:
        raise TypeError(f"dtype mismatch: {sorted(str(d) for d in dtypes)}; convert with .to(dtype) first "
                        f"(tinytensor never upcasts silently)")
    for t in ts:
        if t is not None and t.dtype.kind != "f":
            raise TypeError(f"expected a floating-point tensor, got dtype {t.dtype}")
    return ts


def _int_array(x: Any, what: str):
    """The raw integer array of a Tensor, ndarray or list of ids."""
    a = x.data if isinstance(x, Tensor) else x
    if not hasattr(a, "dtype"):
        a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{what} must hold integers, got dtype {a.dtype}")
    return a


# ---------------------------------------------------------------- linear
class Linear(Function):
    """out = x Wᵀ + b with W (out, in);  dx = g W,  dW = gᵀ x summed over leading dims,  db = Σ g."""

    def forward(self, x, w, b=None):
        self.x, self.w = x, w
        # one 2-D GEMM over all rows: NumPy runs (b, t, in) @ (in, out) as b separate, slower products
        out = _mm.matmul(x.reshape(-1, x.shape[-1]), w.T)  # (N, out)
        if b is not None:
            out += b
        return out.reshape(x.shape[:-1] + (w.shape[0],))  # (..., out)

    def backward(self, g):
        px, pw = self.parents[:2]
        g2 = g.reshape(-1, g.shape[-1])  # (N, out): every leading dim is a row
        dx = _mm.matmul(g2, self.w).reshape(self.x.shape) if px.requires_grad else None  # (..., in)
        dw = _mm.matmul(g2.T, self.x.reshape(-1, self.x.shape[-1])) if pw.requires_grad else None  # (out, in)
        if len(self.parents) == 2:
            return dx, dw
        return dx, dw, (g2.sum(axis=0) if self.parents[2].requires_grad else None)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """torch.nn.functional.linear: input (..., in) @ weight(out, in)ᵀ + bias (out,)."""
    x, w, b = _floats(input, weight, bias)
    if x.shape[-1] != w.shape[-1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features but weight {w.shape} expects {w.shape[-1]}")
    return Linear.apply(x, w) if b is None else Linear.apply(x, w, b)


# ---------------------------------------------------------------- embedding
class Embedding(Function):
    """out = W[ids];  dW = scatter-add of g into the rows named by ids (a row used twice gets both gradients)."""

    def forward(self, w, ids):
        self.ids, self.shape = ids, w.shape
        return w[ids]

    def backward(self, g):
        xp = get_array_module(g)
        dw = xp.zeros(self.shape, dtype=g.dtype)
        ids, g2 = self.ids.reshape(-1), g.reshape(-1, self.shape[1])  # (N,), (N, d)
        if xp is np and ids.size:
            # a segment sum over the ids in sorted order (stable: each row's terms are added in the order that
            # np.add.at would add them, so the result is the same) instead of np.add.at's slow per-row loop
            order = np.argsort(ids, kind="stable")
            sid = ids[order]
            starts = np.flatnonzero(np.concatenate(([True], sid[1:] != sid[:-1])))
            dw[sid[starts]] = np.add.reduceat(g2[order], starts, axis=0)
        elif xp is not np:
            import cupyx

            cupyx.scatter_add(dw, ids, g2)
        return (dw,)


def embedding(input: Any, weight: Tensor) -> Tensor:
    """torch.nn.functional.embedding: rows of weight (num, d) for integer ids of any shape -> (*ids.shape, d)."""
    (w,) = _floats(weight)
    ids = get_array_module(w.data).asarray(_int_array(input, "embedding ids"))  # on the weight's device
    if w.ndim != 2:
        raise ValueError(f"embedding weight must be 2-D (num_embeddings, dim), got shape {w.shape}")
    bad = (ids < 0) | (ids >= w.shape[0])
    if bad.any():
        first = int(ids[bad].ravel()[0])
        raise IndexError(f"token id {first} is out of range for an embedding of {w.shape[0]} rows")
    return Embedding.apply(w, ids=ids)


# ---------------------------------------------------------------- layer_norm
class LayerNorm(Function):
    """Layer norm over the last axis; the math is in kernels/layer_norm.py."""

    def forward(self, x, *wb, eps, has_weight, has_bias):
        w = wb[0] if has_weight else None
        b = wb[-1] if has_bias else None
        self.x, self.w, self.has = x, w, (has_weight, has_bias)
        out, self.mean, self.rstd = _ln.layer_norm_forward(x, w, b, eps)
        return out

    def backward(self, g):
        dx, dw, db = _ln.layer_norm_backward(g, self.x, self.w, self.mean, self.rstd)
        return (dx,) + ((dw,) if self.has[0] else ()) + ((db,) if self.has[1] else ())


def _check_normalized_shape(x: Tensor, normalized_shape) -> None:
    ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if ns != x.shape[-1:]:
        raise ValueError(f"normalized_shape={ns} must be the size of the input's last dim, ({x.shape[-1]},); "
                         f"tinytensor normalises over the last dim only")


def layer_norm(input: Tensor, normalized_shape, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """torch.nn.functional.layer_norm over the last dim (biased variance, as the book's LayerNorm)."""
    x, w, b = _floats(input, weight, bias)
    _check_normalized_shape(x, normalized_shape)
    parents = [t for t in (x, w, b) if t is not None]
    return LayerNorm.apply(*parents, eps=eps, has_weight=w is not None, has_bias=b is not None)


# ---------------------------------------------------------------- gelu
class GELU(Function):
    """GELU, exact (erf) or tanh-approximated; the math is in kernels/gelu.py."""

    def forward(self, x, approximate):
        self.x, self.tanh, self.th, self.deriv = x, approximate == "tanh", None, None
        if isinstance(x, np.ndarray):  # the fast in-place pairs; CuPy keeps the reference ones
            if self.tanh:
                out, self.th = _gelu.gelu_tanh_forward_inplace(x)
            else:
                out, self.deriv = _gelu.gelu_erf_forward_inplace(x)
            return out
        return _gelu.gelu_tanh_forward(x) if self.tanh else _gelu.gelu_erf_forward(x)

    def backward(self, g):
        if self.th is not None:
            return (_gelu.gelu_tanh_backward_inplace(g, self.x, self.th),)
        if self.deriv is not None:
            return (_gelu.gelu_erf_backward_inplace(g, self.deriv),)
        return ((_gelu.gelu_tanh_backward if self.tanh else _gelu.gelu_erf_backward)(g, self.x),)


def _check_approximate(approximate: str) -> None:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu approximate={approximate!r} must be 'none' or 'tanh'")


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """torch.nn.functional.gelu: x·Φ(x) ("none") or the tanh approximation ("tanh", the book's GELU)."""
    _check_approximate(approximate)
    (x,) = _floats(input)
    return GELU.apply(x, approximate=approximate)


# ---------------------------------------------------------------- softmax / log_softmax
class Softmax(Function):
    """p = softmax(x) along dim;  dx = p ⊙ (g − Σ g p)."""

    def forward(self, x, dim):
        self.dim = dim
        self.out = _sm.softmax_forward(x, dim)
        return self.out

    def backward(self, g):
        return (_sm.softmax_backward(g, self.out, self.dim),)


class LogSoftmax(Function):
    """l = log_softmax(x) along dim;  dx = g − softmax(x) Σ g."""

    def forward(self, x, dim):
        self.dim = dim
        self.out = _sm.log_softmax_forward(x, dim)
        return self.out

    def backward(self, g):
        return (_sm.log_softmax_backward(g, self.out, self.dim),)


def softmax(input: Tensor, dim: int) -> Tensor:
    """torch.nn.functional.softmax along `dim` (max-subtracted, stable)."""
    (x,) = _floats(input)
    return Softmax.apply(x, dim=_dims(dim, x.ndim)[0])


def log_softmax(input: Tensor, dim: int) -> Tensor:
    """torch.nn.functional.log_softmax along `dim` (max-subtracted, stable)."""
    (x,) = _floats(input)
    return LogSoftmax.apply(x, dim=_dims(dim, x.ndim)[0])


# ---------------------------------------------------------------- cross_entropy
class CrossEntropy(Function):
    """Fused log-softmax + NLL of (N, C) logits;  dlogits = (softmax − onehot) · row weight · g."""

    def forward(self, logits, targets, ignore_index, reduction):
        loss, self.saved = _sm.cross_entropy_forward(logits, targets, ignore_index, reduction)
        return loss

    def backward(self, g):
        return (_sm.cross_entropy_backward(g, self.saved, consume=self.consume),)


def _ce_rows(input: Any, target: Any, ignore_index: int):
    """(logits as (M, C), targets as (M,), output shape for reduction="none") for torch's accepted layouts:
    (C,) with a 0-d target, (N, C) with (N,), and (N, C, d1, ...) with (N, d1, ...)."""
    (x,) = _floats(input)
    t = _int_array(target, "cross_entropy targets (class ids; class-probability targets are not supported)")
    t = get_array_module(x.data).asarray(t)  # on the logits' device
    if x.ndim == 1:
        expect, logits = (), x.reshape(1, x.shape[0])  # (1, C)
    elif x.ndim == 2:
        expect, logits = x.shape[:1], x
    else:
        expect = (x.shape[0],) + x.shape[2:]
        perm = (0,) + tuple(range(2, x.ndim)) + (1,)
        logits = x.permute(*perm).reshape(-1, x.shape[1])  # (N·d1·…, C): the class dim last
    if t.shape != expect:
        raise ValueError(f"cross_entropy: input of shape {x.shape} needs targets of shape {expect}, "
                         f"got {tuple(t.shape)}")
    c = logits.shape[1]
    bad = (t != ignore_index) & ((t < 0) | (t >= c))
    if bad.any():
        raise IndexError(f"Target {int(t[bad].ravel()[0])} is out of bounds for {c} classes "
                         f"(ids must lie in [0, {c}) or equal ignore_index={ignore_index})")
    return logits, t.reshape(-1), expect


def _check_ce_args(weight, reduction, label_smoothing) -> None:
    if weight is not None or label_smoothing:
        raise ValueError("cross_entropy: class weights and label_smoothing are not supported by tinytensor")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction={reduction!r} must be 'mean', 'sum' or 'none'")


def cross_entropy(input: Tensor, target: Any, weight=None, *, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """torch.nn.functional.cross_entropy for integer class targets (fused softmax + NLL, ignore_index rows dropped)."""
    _check_ce_args(weight, reduction, label_smoothing)
    logits, t, shape = _ce_rows(input, target, ignore_index)
    loss = CrossEntropy.apply(logits, targets=t, ignore_index=ignore_index, reduction=reduction)
    return loss.reshape(shape) if reduction == "none" else loss


# ---------------------------------------------------------------- dropout
class Dropout(Function):
    """out = x ⊙ keep / (1 − p);  dx = g ⊙ keep / (1 − p) (the same mask)."""

    def forward(self, x, keep, p):
        self.keep, self.p = keep, p
        return _drop.dropout_forward(x, keep, p)

    def backward(self, g):
        return (_drop.dropout_backward(g, self.keep, self.p),)


def _check_p(p: float, name: str = "dropout probability") -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} has to be between 0 and 1, but got {p}")


def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """torch.nn.functional.dropout: zero each element with probability p, scale the rest by 1/(1 − p).

    Identity when not training or p == 0; the mask comes from `tinytensor.random` (see `manual_seed`).
    """
    _check_p(p)
    (x,) = _floats(input)
    if not training or p == 0.0:
        return x
    return Dropout.apply(x, keep=_random.keep_mask(x.shape, p, get_array_module(x.data)), p=p)


# ---------------------------------------------------------------- attention
class Attention(Function):
    """Fused scaled-dot-product attention; the forward and the step-by-step backward are in kernels/attention.py."""

    def forward(self, q, k, v, attn_mask, is_causal, scale, keep, p):
        out, self.saved = _attn.attention_forward(q, k, v, attn_mask, is_causal, scale, keep, p)
        return out

    def backward(self, g):
        return _attn.attention_backward(g, self.saved)


def _attention_args(query, key, value, attn_mask, dropout_p, scale):
    """Validated (q, k, v, raw mask, scale, dropout keep-mask or None) shared by the fused and composite paths."""
    _check_p(dropout_p, "dropout_p")
    q, k, v = _floats(query, key, value)
    if q.ndim < 2 or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"attention needs query (..., Tq, E), key (..., Tk, E), value (..., Tk, Ev); "
                         f"got {q.shape}, {k.shape}, {v.shape}")
    mask = attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask
    if mask is not None:
        mask = get_array_module(q.data).asarray(mask)  # on the query's device
    scores_shape = np.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (q.shape[-2], k.shape[-2])
    if mask is not None:
        if mask.dtype != np.bool_ and mask.dtype != q.dtype:
            raise TypeError(f"attn_mask must be boolean (True = may attend) or of the query's dtype {q.dtype}, "
                            f"got {mask.dtype}")
        try:
            scores_shape = np.broadcast_shapes(scores_shape, mask.shape)
        except ValueError:
            raise ValueError(f"attn_mask of shape {mask.shape} does not broadcast to the scores' shape "
                             f"{scores_shape} (..., Tq, Tk)") from None
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    keep = _random.keep_mask(scores_shape, dropout_p, get_array_module(q.data)) if dropout_p > 0 else None
    return q, k, v, mask, s, keep


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Any = None,
                                 dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: float | None = None) -> Tensor:
    """torch.nn.functional.scaled_dot_product_attention, fused: softmax(s·QKᵀ + mask) V with attention dropout.

    attn_mask: boolean (True = may attend) or additive float, broadcastable to (..., Tq, Tk); with is_causal the
    two are combined (torch refuses that combination). A query row that may attend to nothing outputs zeros.
    """
    q, k, v, mask, s, keep = _attention_args(query, key, value, attn_mask, dropout_p, scale)
    return Attention.apply(q, k, v, attn_mask=mask, is_causal=is_causal, scale=s, keep=keep, p=dropout_p)


class FlashAttention(Function):
    """Memory-efficient attention (tiled, online softmax, recomputed in backward); kernels/flash_attention.py."""

    def forward(self, q, k, v, is_causal, scale, p, seed):
        out, self.saved = _flash.flash_attention_forward(q, k, v, is_causal, scale, p, seed)
        return out

    def backward(self, g):
        return _flash.flash_attention_backward(g, self.saved)


def flash_attention(query: Tensor, key: Tensor, value: Tensor, dropout_p: float = 0.0, is_causal: bool = False,
                    scale: float | None = None) -> Tensor:
    """scaled_dot_product_attention computed by the FlashAttention algorithm (Dao et al. 2022): the same values,
    but only O(T·hd) per head is kept for backward instead of the (Tq, Tk) probabilities. No attn_mask; the
    dropout masks are drawn per tile (from a seed taken from `tinytensor.random`), so they differ from the plain
    kernel's for the same seed."""
    q, k, v, _, s, _ = _attention_args(query, key, value, None, 0.0, scale)
    _check_p(dropout_p, "dropout_p")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-2] != v.shape[:-2]:
        raise ValueError(f"flash_attention needs equal batch shapes, got {q.shape}, {k.shape}, {v.shape}")
    seed = int(_random.generator().integers(2**62)) if dropout_p > 0 else 0
    return FlashAttention.apply(q, k, v, is_causal=is_causal, scale=s, p=dropout_p, seed=seed)


# ---------------------------------------------------------------- composites (primitive ops only)
def softmax_composite(input: Tensor, dim: int) -> Tensor:
    """softmax from primitives: e = exp(x − max), e / Σe (max is a constant: the shift cancels in the ratio)."""
    (x,) = _floats(input)
    d = _dims(dim, x.ndim)[0]
    e = (x - Tensor(x.data.max(axis=d, keepdims=True))).exp()
    return e / e.sum(d, keepdim=True)


def log_softmax_composite(input: Tensor, dim: int) -> Tensor:
    """log_softmax from primitives: (x − max) − log Σ exp(x − max)."""
    (x,) = _floats(input)
    d = _dims(dim, x.ndim)[0]
    z = x - Tensor(x.data.max(axis=d, keepdims=True))
    return z - z.exp().sum(d, keepdim=True).log()


def layer_norm_composite(input: Tensor, normalized_shape, weight: Tensor | None = None,
                         bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """The book's LayerNorm from primitives: (x − mean) / √(var + eps) · w + b, biased variance."""
    x, w, b = _floats(input, weight, bias)
    _check_normalized_shape(x, normalized_shape)
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, correction=0)
    out = (x - mean) / (var + eps).sqrt()
    if w is not None:
        out = out * w
    if b is not None:
        out = out + b
    return out


def gelu_composite(input: Tensor, approximate: str = "tanh") -> Tensor:
    """The book's GELU from primitives (tanh form only: erf is not a primitive op)."""
    _check_approximate(approximate)
    if approximate != "tanh":
        raise ValueError("gelu_composite builds only approximate='tanh' (erf is not a primitive op); "
                         "use gelu(x, approximate='none') for the exact form")
    (x,) = _floats(input)
    return 0.5 * x * (1.0 + (math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)).tanh())


def cross_entropy_composite(input: Tensor, target: Any, weight=None, *, ignore_index: int = -100,
                            reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """cross_entropy from primitives: −log_softmax picked at the targets, ignored rows masked out, then reduced."""
    _check_ce_args(weight, reduction, label_smoothing)
    logits, t, shape = _ce_rows(input, target, ignore_index)
    xp = get_array_module(t)
    keep = t != ignore_index
    logp = log_softmax_composite(logits, -1)
    picked = logp[xp.arange(t.shape[0]), xp.where(keep, t, 0)]  # (M,) log-probability of each target
    losses = -picked * Tensor(keep.astype(logits.dtype))
    if reduction == "none":
        return losses.reshape(shape)
    if reduction == "sum":
        return losses.sum()
    n_kept = int(keep.sum())
    return losses.sum() * (1.0 / n_kept if n_kept else float("nan"))


def attention_composite(query: Tensor, key: Tensor, value: Tensor, attn_mask: Any = None, dropout_p: float = 0.0,
                        is_causal: bool = False, scale: float | None = None) -> Tensor:
    """scaled_dot_product_attention from primitives (matmul, masked_fill, exp/sum/div), as the book's ch. 3 writes it.

    Draws the same dropout mask as the fused op for the same seed; a fully-masked row gives nan here (as torch).
    """
    q, k, v, mask, s, keep = _attention_args(query, key, value, attn_mask, dropout_p, scale)
    xp = get_array_module(q.data)
    scores = (q @ k.transpose(-2, -1)) * s  # (..., Tq, Tk)
    allowed = _attn.causal_mask(q.shape[-2], k.shape[-2], xp) if is_causal else None
    if mask is not None:
        if mask.dtype == np.bool_:
            allowed = mask if allowed is None else allowed & mask
        else:
            scores = scores + Tensor(mask)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    probs = softmax_composite(scores, -1)
    if keep is not None:
        probs = probs * Tensor(keep * probs.dtype.type(_drop.keep_scale(dropout_p)))
    return probs @ v


__all__ = ["linear", "embedding", "layer_norm", "gelu", "softmax", "log_softmax", "cross_entropy", "dropout",
           "scaled_dot_product_attention", "flash_attention", "FlashAttention", "attention_composite",
           "layer_norm_composite", "gelu_composite", "softmax_composite", "log_softmax_composite", "cross_entropy_composite", "Linear", "Embedding",
           "LayerNorm", "GELU", "Softmax", "LogSoftmax", "CrossEntropy", "Dropout", "Attention"]
