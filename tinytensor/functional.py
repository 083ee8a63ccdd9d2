"""torch.nn.functional's names and keywords for tinytensor: fused ops, each a few-line `Function` over a kernel pair.

Every fused op (`linear`, `embedding`, `layer_norm`, `rms_norm`, `gelu`, `silu`, `softmax`, `log_softmax`,
`logsigmoid`, `cross_entropy`, `dropout`, `scaled_dot_product_attention` with `enable_gqa`, and `rotary_embedding`,
which torch has no op for) calls the forward/backward pair in `tinytensor.kernels`, where the math is derived.
The `*_composite` twins build the same function from the primitive ops in `ops.py` only, so the tests can check
fused == composite == torch == finite differences (DESIGN §4). Dtypes are never mixed or silently upcast: float32
stays float32 and mixing float dtypes raises TypeError.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from . import random as _random
from .kernels import attention as _attn
from .kernels import dropout as _drop
from .kernels import flash_attention as _flash
from .kernels import gelu as _gelu
from .kernels import layer_norm as _ln
from .kernels import matmul as _mm
from .kernels import native as _native
from .kernels import reduce as _reduce
from .kernels import rms_norm as _rms
from .kernels import rotary as _rope
from .kernels import sigmoid as _sig
from .kernels import silu as _silu
from .kernels import softmax as _sm
from .ops import cat
from .tensor import Function, RowGrad, Tensor, _dims, get_array_module, is_grad_enabled


class ShapeError(ValueError, RuntimeError):
    """Inputs of incompatible shapes: a ValueError by the house rule for user errors, and the RuntimeError torch
    raises for the same call, so code written against either engine catches it."""


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
        return dx, dw, (_reduce.col_sum(g2) if self.parents[2].requires_grad else None)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """torch.nn.functional.linear: input (..., in) @ weight(out, in)ᵀ + bias (out,)."""
    x, w, b = _floats(input, weight, bias)
    if x.shape[-1] != w.shape[-1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features but weight {w.shape} expects {w.shape[-1]}")
    return Linear.apply(x, w) if b is None else Linear.apply(x, w, b)


# ---------------------------------------------------------------- embedding
class Embedding(Function):
    """out = W[ids];  dW = scatter-add of g into the rows named by ids (a row used twice gets both gradients)."""

    def forward(self, w, ids, poison=None):
        self.ids, self.shape = ids, w.shape
        out = w[ids]
        if poison is not None:  # out-of-range device ids (see _out_of_range): their rows become NaN
            get_array_module(w).copyto(out, np.nan, where=poison[..., None])
        return out

    def backward(self, g):
        xp = get_array_module(g)
        ids, g2 = self.ids.reshape(-1), g.reshape(-1, self.shape[1])  # (N,), (N, d)
        if xp is np and ids.size:
            # a segment sum over the ids in sorted order (stable: np.add.at's order of terms, not its slow per-row
            # loop), returned as a RowGrad of the used rows: the engine adds them in place, no (num, d) of zeros
            order = np.argsort(ids, kind="stable")
            sid = ids[order]
            starts = np.flatnonzero(np.concatenate(([True], sid[1:] != sid[:-1])))
            return (RowGrad(sid[starts], np.add.reduceat(g2[order], starts, axis=0), self.shape),)
        dw = xp.zeros(self.shape, dtype=g.dtype)
        if xp is not np:
            import cupyx

            cupyx.scatter_add(dw, ids, g2)
        return (dw,)


def _out_of_range(ids: Any, bad: Any, message: Callable[[int], str]) -> Any:
    """Host (NumPy) ids: IndexError(message(first bad id)) if `bad` has a True, else None. Device (CuPy) ids: the
    mask `bad` itself, which the op turns into NaN outputs instead of raising, because raising needs a
    device-to-host sync on every call (the hot loop's) and CuPy's own indexing wraps bad ids around silently."""
    if get_array_module(ids) is not np:
        return bad
    if bad.any():
        raise IndexError(message(int(ids[bad].ravel()[0])))
    return None


def embedding(input: Any, weight: Tensor) -> Tensor:
    """torch.nn.functional.embedding: rows of weight (num, d) for integer ids of any shape -> (*ids.shape, d).

    Host ids are range-checked (IndexError); ids already on a GPU are not (see _out_of_range): their rows are NaN."""
    (w,) = _floats(weight)
    if w.ndim != 2:
        raise ValueError(f"embedding weight must be 2-D (num_embeddings, dim), got shape {w.shape}")
    raw = _int_array(input, "embedding ids")
    n = w.shape[0]
    bad = _out_of_range(raw, (raw < 0) | (raw >= n), lambda i: f"token id {i} is out of range for an embedding "
                                                               f"of {n} rows")
    xp = get_array_module(w.data)
    ids = xp.asarray(raw)  # on the weight's device
    if bad is not None:
        ids = xp.where(bad, 0, ids)
    return Embedding.apply(w, ids=ids, poison=bad)


# ---------------------------------------------------------------- layer_norm
class LayerNorm(Function):
    """Layer norm over the last axis; the math is in kernels/layer_norm.py."""

    def forward(self, x, *wb, eps, has_weight, has_bias):
        w = wb[0] if has_weight else None
        b = wb[-1] if has_bias else None
        self.x, self.w, self.has = x, w, (has_weight, has_bias)
        self.k = _native if _native.usable(x, w, b) else _ln  # the C pair where built (kernels/native.py)
        out, self.mean, self.rstd = self.k.layer_norm_forward(x, w, b, eps)
        return out

    def backward(self, g):
        dx, dw, db = self.k.layer_norm_backward(g, self.x, self.w, self.mean, self.rstd)
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


# ---------------------------------------------------------------- rms_norm
class RMSNorm(Function):
    """RMS norm over the trailing `ndims` axes; the math is in kernels/rms_norm.py."""

    def forward(self, x, *w, eps, ndims):
        self.x, self.w, self.ndims = x, (w[0] if w else None), ndims
        out, self.rstd = _rms.rms_norm_forward(x, self.w, eps, ndims)
        return out

    def backward(self, g):
        dx, dw = _rms.rms_norm_backward(g, self.x, self.w, self.rstd, self.ndims)
        return (dx,) if self.w is None else (dx, dw)


def _rms_norm_args(input, normalized_shape, weight, eps) -> tuple[Tensor, Tensor | None, float, int]:
    """(x, w, eps, number of normalised trailing dims), checked as torch checks them; eps None: finfo(dtype).eps."""
    x, w = _floats(input, weight)
    ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(int(n) for n in normalized_shape)
    if len(ns) > x.ndim or x.shape[x.ndim - len(ns):] != ns:
        raise ShapeError(f"rms_norm: normalized_shape={list(ns)} must equal the input's trailing dims, but the "
                         f"input has shape {x.shape}")
    if w is not None and w.shape != ns:
        raise ShapeError(f"rms_norm: weight of shape {w.shape} must have the shape normalized_shape={list(ns)}")
    return x, w, float(np.finfo(x.dtype).eps) if eps is None else float(eps), len(ns)


def rms_norm(input: Tensor, normalized_shape, weight: Tensor | None = None, eps: float | None = None) -> Tensor:
    """torch.nn.functional.rms_norm: x / √(mean(x²) + eps) · weight over the trailing normalized_shape dims
    (Llama's and Qwen's norm); eps None is torch's default, finfo(dtype).eps."""
    x, w, eps, ndims = _rms_norm_args(input, normalized_shape, weight, eps)
    return RMSNorm.apply(*[t for t in (x, w) if t is not None], eps=eps, ndims=ndims)


# ---------------------------------------------------------------- silu
class SiLU(Function):
    """out = x·σ(x);  dx = g · σ(x)(1 + x(1 − σ(x))); the math is in kernels/silu.py."""

    def forward(self, x):
        self.x = x
        out, self.sig = _silu.silu_forward(x)
        return out

    def backward(self, g):
        return (_silu.silu_backward(g, self.x, self.sig),)


def _check_inplace(inplace: bool, name: str) -> None:
    if inplace:
        raise ValueError(f"{name}(inplace=True): tinytensor has no in-place autograd ops; use inplace=False")


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """torch.nn.functional.silu: x·σ(x), the gate of Llama's and Qwen's SwiGLU feed-forward."""
    _check_inplace(inplace, "silu")
    (x,) = _floats(input)
    return SiLU.apply(x)


# ---------------------------------------------------------------- rotary position embedding
class Rotary(Function):
    """out = x ⊙ cos + rotate_half(x) ⊙ sin;  dx = g ⊙ cos + rotate_halfᵀ(g ⊙ sin); kernels/rotary.py."""

    def forward(self, x, cos, sin):
        self.saved = (x, cos, sin)
        return _rope.rotary_forward(x, cos, sin)

    def backward(self, g):
        need = (self.parents[1].requires_grad, self.parents[2].requires_grad)
        return _rope.rotary_backward(g, *self.saved, need_tables=need)


def check_rotary_shapes(x_shape: tuple, cos_shape: tuple, sin_shape: tuple) -> None:
    """Raise ValueError unless x (..., hd) has an even hd and cos, sin share one shape that broadcasts to x's
    without enlarging it (the check every backend's rotary_embedding runs)."""
    x_shape, cos_shape, sin_shape = tuple(x_shape), tuple(cos_shape), tuple(sin_shape)
    if not x_shape or x_shape[-1] % 2:
        raise ValueError(f"rotary_embedding splits the last dim of x into two halves, so it must be even; got x of "
                         f"shape {x_shape}")
    if cos_shape != sin_shape:
        raise ValueError(f"rotary_embedding: cos {cos_shape} and sin {sin_shape} must have the same shape")
    try:
        fits = np.broadcast_shapes(x_shape, cos_shape) == x_shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"rotary_embedding: cos/sin of shape {cos_shape} do not broadcast to x of shape {x_shape}; "
                         f"pass tables of shape (t, head_dim) = {x_shape[-2:]} for the t positions of x")


def _rotary_args(x: Any, cos: Any, sin: Any) -> tuple[Tensor, Tensor, Tensor]:
    """x and the tables as tensors of one float dtype, array tables moved to x's device, shapes checked."""
    xt = x if isinstance(x, Tensor) else Tensor(x)
    xp = get_array_module(xt.data)
    x, c, s = _floats(xt, *(t if isinstance(t, Tensor) else xp.asarray(t) for t in (cos, sin)))
    check_rotary_shapes(x.shape, c.shape, s.shape)
    return x, c, s


def rotary_embedding(x: Tensor, cos: Any, sin: Any) -> Tensor:
    """Rotary position embedding (RoPE), "rotate half" layout: x ⊙ cos + rotate_half(x) ⊙ sin for x (b, h, t, hd)
    and tables (t, hd) (or any shape broadcasting to x) holding the angles of x's positions."""
    return Rotary.apply(*_rotary_args(x, cos, sin))


# ---------------------------------------------------------------- gelu
class GELU(Function):
    """GELU, exact (erf) or tanh-approximated; the math is in kernels/gelu.py."""

    def forward(self, x, approximate):
        self.x, self.tanh, self.th, self.deriv, self.native = x, approximate == "tanh", None, None, False
        if _native.usable(x):  # the C pair where built (kernels/native.py)
            self.native = True
            if self.tanh:
                return _native.gelu_tanh_forward(x)
            need = is_grad_enabled() and self.parents[0].requires_grad  # else skip the derivative's work
            out, self.deriv = _native.gelu_erf_forward(x, need_grad=need)
            self.x = None  # backward needs only the derivative
            return out
        if isinstance(x, np.ndarray):  # the fast in-place NumPy pairs; CuPy keeps the reference ones
            if self.tanh:
                out, self.th = _gelu.gelu_tanh_forward_inplace(x)
            else:
                out, self.deriv = _gelu.gelu_erf_forward_inplace(x)
            return out
        return _gelu.gelu_tanh_forward(x) if self.tanh else _gelu.gelu_erf_forward(x)

    def backward(self, g):
        if self.native:
            if self.tanh:
                return (_native.gelu_tanh_backward(g, self.x),)
            return (_native.gelu_erf_backward(g, self.deriv),)
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
        self.native = dim == x.ndim - 1 and _native.usable(x)  # the C pair over rows (kernels/native.py)
        self.out = _native.softmax_forward(x) if self.native else _sm.softmax_forward(x, dim)
        return self.out

    def backward(self, g):
        if self.native and _native.usable(g, self.out):
            return (_native.softmax_backward(g, self.out),)
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


# ---------------------------------------------------------------- logsigmoid
class LogSigmoid(Function):
    """out = logσ(x) = −log(1 + e^(−x));  dx = g · σ(−x); the stable forms are in kernels/sigmoid.py."""

    def forward(self, x):
        self.x = x
        out, self.e = _sig.log_sigmoid_forward(x)
        return out

    def backward(self, g):
        return (_sig.log_sigmoid_backward(g, self.x, self.e),)


def logsigmoid(input: Tensor) -> Tensor:
    """torch.nn.functional.logsigmoid, elementwise log(1 / (1 + e^(−x))) without overflow (DPO's loss)."""
    (x,) = _floats(input)
    return LogSigmoid.apply(x)


# ---------------------------------------------------------------- cross_entropy
class CrossEntropy(Function):
    """Fused log-softmax + NLL of (N, C) logits;  dlogits = (softmax − onehot) · row weight · g."""

    def forward(self, logits, targets, ignore_index, reduction, poison=None):
        loss, self.saved = _sm.cross_entropy_forward(logits, targets, ignore_index, reduction)
        if poison is not None:  # out-of-range device targets (see _out_of_range): a NaN loss
            loss = get_array_module(loss).where(poison if reduction == "none" else poison.any(), np.nan, loss)
        return loss

    def backward(self, g):
        return (_sm.cross_entropy_backward(g, self.saved, consume=self.consume),)


def _ce_rows(input: Any, target: Any, ignore_index: int):
    """(logits as (M, C), targets as (M,) on the logits' device, output shape for reduction="none", the (M,) mask
    of out-of-range device targets or None) for torch's accepted layouts: (C,) with a 0-d target, (N, C) with
    (N,), and (N, C, d1, ...) with (N, d1, ...)."""
    (x,) = _floats(input)
    t = _int_array(target, "cross_entropy targets (class ids; class-probability targets are not supported)")
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
    bad = _out_of_range(t, (t != ignore_index) & ((t < 0) | (t >= c)),
                        lambda i: f"Target {i} is out of bounds for {c} classes (ids must lie in [0, {c}) or "
                                  f"equal ignore_index={ignore_index})")
    xp = get_array_module(x.data)
    t = xp.asarray(t).reshape(-1)  # on the logits' device
    if bad is not None:
        bad = bad.reshape(-1)
        t = xp.where(bad, 0, t)
    return logits, t, expect, bad


def _check_ce_args(weight, reduction, label_smoothing) -> None:
    if weight is not None or label_smoothing:
        raise ValueError("cross_entropy: class weights and label_smoothing are not supported by tinytensor")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction={reduction!r} must be 'mean', 'sum' or 'none'")


def cross_entropy(input: Tensor, target: Any, weight=None, *, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """torch.nn.functional.cross_entropy for integer class targets (fused softmax + NLL, ignore_index rows dropped).

    Host targets are range-checked (IndexError); out-of-range targets already on a GPU give a NaN loss instead
    (see _out_of_range)."""
    _check_ce_args(weight, reduction, label_smoothing)
    logits, t, shape, bad = _ce_rows(input, target, ignore_index)
    loss = CrossEntropy.apply(logits, targets=t, ignore_index=ignore_index, reduction=reduction, poison=bad)
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

    def forward(self, q, k, v, attn_mask, is_causal, scale, keep, p, enable_gqa=False):
        out, self.saved = _attn.attention_forward(q, k, v, attn_mask, is_causal, scale, keep, p, enable_gqa)
        return out

    def backward(self, g):
        return _attn.attention_backward(g, self.saved)


def _scores_batch(q: Tensor, k: Tensor, v: Tensor, enable_gqa: bool) -> tuple[int, ...]:
    """The batch shape (..., heads) of the scores. Heads must broadcast, or with enable_gqa the key and value head
    counts must each divide the query's (grouped-query attention: query head i uses kv head ⌊i·h_kv/h⌋)."""
    kb, vb = k.shape[:-2], v.shape[:-2]
    if enable_gqa:
        if min(q.ndim, k.ndim, v.ndim) < 3:
            raise IndexError(f"enable_gqa needs a heads dim: query, key and value of shape (..., heads, T, E), got "
                             f"{q.shape}, {k.shape}, {v.shape}")
        hq, hk, hv = q.shape[-3], k.shape[-3], v.shape[-3]
        if hq % hk or hq % hv:
            raise ShapeError(f"enable_gqa: the number of key heads ({hk}) and value heads ({hv}) must each divide the "
                             f"number of query heads ({hq}); choose n_kv_heads as a divisor of n_heads")
        kb, vb = kb[:-1] + (hq,), vb[:-1] + (hq,)
    try:
        return np.broadcast_shapes(q.shape[:-2], kb, vb)
    except ValueError:
        hint = ("; for key/value heads shared by groups of query heads pass enable_gqa=True"
                if not enable_gqa and min(q.ndim, k.ndim) >= 3 and q.shape[-3] != k.shape[-3] else "")
        raise ShapeError(f"attention: the batch/head dims of query {q.shape}, key {k.shape} and value {v.shape} do "
                         f"not broadcast{hint}") from None


def _attention_args(query, key, value, attn_mask, dropout_p, scale, enable_gqa=False):
    """Validated (q, k, v, raw mask, scale, dropout keep-mask or None) shared by the fused and composite paths."""
    _check_p(dropout_p, "dropout_p")
    q, k, v = _floats(query, key, value)
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2 or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"attention needs query (..., Tq, E), key (..., Tk, E), value (..., Tk, Ev); "
                         f"got {q.shape}, {k.shape}, {v.shape}")
    mask = attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask
    if mask is not None:
        mask = get_array_module(q.data).asarray(mask)  # on the query's device
    scores_shape = _scores_batch(q, k, v, enable_gqa) + (q.shape[-2], k.shape[-2])
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
                                 dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> Tensor:
    """torch.nn.functional.scaled_dot_product_attention, fused: softmax(s·QKᵀ + mask) V with attention dropout.

    attn_mask: boolean (True = may attend) or additive float, broadcastable to (..., Tq, Tk); with is_causal the
    two are combined (torch refuses that combination). A query row that may attend to nothing outputs zeros.
    enable_gqa: key/value may have fewer heads (dim −3), each group of query heads sharing one (as torch).
    """
    q, k, v, mask, s, keep = _attention_args(query, key, value, attn_mask, dropout_p, scale, enable_gqa)
    return Attention.apply(q, k, v, attn_mask=mask, is_causal=is_causal, scale=s, keep=keep, p=dropout_p,
                           enable_gqa=enable_gqa)


class FlashAttention(Function):
    """Memory-efficient attention (tiled, online softmax, recomputed in backward); kernels/flash_attention.py."""

    def forward(self, q, k, v, is_causal, scale, p, seed, enable_gqa=False):
        out, self.saved = _flash.flash_attention_forward(q, k, v, is_causal, scale, p, seed, enable_gqa=enable_gqa)
        return out

    def backward(self, g):
        return _flash.flash_attention_backward(g, self.saved)


def flash_attention(query: Tensor, key: Tensor, value: Tensor, dropout_p: float = 0.0, is_causal: bool = False,
                    scale: float | None = None, enable_gqa: bool = False) -> Tensor:
    """scaled_dot_product_attention computed by the FlashAttention algorithm (Dao et al. 2022): the same values,
    but only O(T·hd) per head is kept for backward instead of the (Tq, Tk) probabilities. No attn_mask; the
    dropout masks are drawn per tile (from a seed taken from `tinytensor.random`), so they differ from the plain
    kernel's for the same seed. enable_gqa as in scaled_dot_product_attention."""
    q, k, v, _, s, _ = _attention_args(query, key, value, None, 0.0, scale, enable_gqa)
    _check_p(dropout_p, "dropout_p")
    lead = 3 if enable_gqa else 2  # with GQA the heads may differ; the batch dims must still be equal
    if not q.shape[:-lead] == k.shape[:-lead] == v.shape[:-lead]:
        raise ShapeError(f"flash_attention needs equal batch shapes, got {q.shape}, {k.shape}, {v.shape}")
    seed = int(_random.generator().integers(2**62)) if dropout_p > 0 else 0
    return FlashAttention.apply(q, k, v, is_causal=is_causal, scale=s, p=dropout_p, seed=seed, enable_gqa=enable_gqa)


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


def logsigmoid_composite(input: Tensor) -> Tensor:
    """logsigmoid from primitives: min(x, 0) − log(1 + e^(−|x|)), with min(x, 0) = (x − |x|) / 2."""
    (x,) = _floats(input)
    return 0.5 * (x - x.abs()) - (1.0 + (-x.abs()).exp()).log()


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
    logits, t, shape, bad = _ce_rows(input, target, ignore_index)
    xp = get_array_module(t)
    keep = t != ignore_index
    logp = log_softmax_composite(logits, -1)
    picked = logp[xp.arange(t.shape[0]), xp.where(keep, t, 0)]  # (M,) log-probability of each target
    losses = -picked * Tensor(keep.astype(logits.dtype))
    if bad is not None:
        losses = losses + Tensor(xp.where(bad, np.nan, 0).astype(logits.dtype))
    if reduction == "none":
        return losses.reshape(shape)
    if reduction == "sum":
        return losses.sum()
    n_kept = keep.sum(dtype=logits.dtype)  # stays on the device: 1/n, or nan (torch's 0/0) when every row is ignored
    return losses.sum() * Tensor(xp.where(n_kept > 0, 1 / xp.maximum(n_kept, 1), np.nan).astype(logits.dtype))


def repeat_heads_composite(x: Tensor, groups: int) -> Tensor:
    """torch's x.repeat_interleave(groups, dim=-3) from primitives (unsqueeze, cat, reshape): (.., h, T, E) ->
    (.., h·groups, T, E); its backward (through Cat and Reshape) sums each group's gradients."""
    if groups == 1:
        return x
    x5 = x.unsqueeze(-3)  # (.., h, 1, T, E)
    return cat([x5] * groups, dim=-3).reshape(x.shape[:-3] + (x.shape[-3] * groups,) + x.shape[-2:])


def attention_composite(query: Tensor, key: Tensor, value: Tensor, attn_mask: Any = None, dropout_p: float = 0.0,
                        is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> Tensor:
    """scaled_dot_product_attention from primitives (matmul, masked_fill, exp/sum/div), as the book's ch. 3 writes it.

    Draws the same dropout mask as the fused op for the same seed; a fully-masked row gives nan here (as torch).
    enable_gqa repeats the key/value heads up to the query's, as torch's math path does.
    """
    q, k, v, mask, s, keep = _attention_args(query, key, value, attn_mask, dropout_p, scale, enable_gqa)
    if enable_gqa:
        k = repeat_heads_composite(k, q.shape[-3] // k.shape[-3])  # (.., h, Tk, E)
        v = repeat_heads_composite(v, q.shape[-3] // v.shape[-3])  # (.., h, Tk, Ev)
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


def rms_norm_composite(input: Tensor, normalized_shape, weight: Tensor | None = None,
                       eps: float | None = None) -> Tensor:
    """rms_norm from primitives: x / √(mean(x²) + eps) · w over the trailing normalized_shape dims."""
    x, w, eps, ndims = _rms_norm_args(input, normalized_shape, weight, eps)
    dims = tuple(range(x.ndim - ndims, x.ndim))
    out = x / ((x * x).mean(dims, keepdim=True) + eps).sqrt()
    return out * w if w is not None else out


def silu_composite(input: Tensor, inplace: bool = False) -> Tensor:
    """silu from primitives: x · σ(x) with σ(x) = ½(1 + tanh(x/2)) (the same function; tanh never overflows)."""
    _check_inplace(inplace, "silu_composite")
    (x,) = _floats(input)
    return x * ((x * 0.5).tanh() * 0.5 + 0.5)


def rotary_embedding_composite(x: Tensor, cos: Any, sin: Any) -> Tensor:
    """rotary_embedding from primitives, as Hugging Face's Llama writes it: x·cos + cat(−x₂, x₁)·sin."""
    x, c, s = _rotary_args(x, cos, sin)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return x * c + cat([-x2, x1], dim=-1) * s


__all__ = ["linear", "embedding", "layer_norm", "rms_norm", "gelu", "silu", "softmax", "log_softmax", "logsigmoid",
           "cross_entropy", "dropout", "scaled_dot_product_attention", "flash_attention", "rotary_embedding",
           "FlashAttention", "attention_composite", "layer_norm_composite", "rms_norm_composite", "gelu_composite",
           "silu_composite", "softmax_composite", "log_softmax_composite", "logsigmoid_composite",
           "cross_entropy_composite", "rotary_embedding_composite", "repeat_heads_composite", "check_rotary_shapes",
           "ShapeError", "Linear", "Embedding", "LayerNorm", "RMSNorm", "GELU", "SiLU", "Softmax", "LogSoftmax",
           "LogSigmoid", "CrossEntropy", "Dropout", "Attention", "Rotary"]
