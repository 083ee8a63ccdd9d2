"""Primitive operations, each a `Function` with its forward and its hand-written backward side by side.

Notation: `g` is the upstream gradient dL/d(out) with out's shape; each backward returns dL/d(input) per input.
Broadcast operands get the full-shape gradient here; the engine (`tensor.unbroadcast`) sums it back down.
"""
from __future__ import annotations

from collections import namedtuple
from typing import Sequence

import numpy as np

from .kernels import matmul as _mm
from .tensor import Function, Tensor, _dims, _pair, get_array_module, is_grad_enabled


# ---------------------------------------------------------------- elementwise binary
class Add(Function):
    """out = a + b;  da = g, db = g."""

    def forward(self, a, b):
        return a + b

    def backward(self, g):
        return g, g


class Sub(Function):
    """out = a − b;  da = g, db = −g."""

    def forward(self, a, b):
        return a - b

    def backward(self, g):
        return g, -g


class Mul(Function):
    """out = a · b;  da = g · b, db = g · a."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        a, b = self.parents
        return (g * self.b if a.requires_grad else None), (g * self.a if b.requires_grad else None)


class Div(Function):
    """out = a / b;  da = g / b, db = −g · a / b² = −g · out / b."""

    def forward(self, a, b):
        self.b = b
        self.out = a / b
        return self.out

    def backward(self, g):
        a, b = self.parents
        da = g / self.b if a.requires_grad else None
        db = -g * self.out / self.b if b.requires_grad else None
        return da, db


class MatMul(Function):
    """out = a @ b (batched, broadcasting);  da = g @ bᵀ, db = aᵀ @ g (ᵀ: swap the last two axes).

    1-D operands are promoted as in numpy.matmul (a vector a becomes (1, n), b becomes (n, 1)) and the
    gradients squeezed back; batch broadcasting is undone by the engine.
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        return _mm.matmul(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g
        if b.ndim == 1:  # first, so that a vector·vector product (g is 0-d) becomes (1, 1)
            g2 = g2[..., None]
        if a.ndim == 1:
            g2 = g2[..., None, :]
        da = db = None
        if self.parents[0].requires_grad:
            da = _mm.matmul(g2, b2.swapaxes(-1, -2))
            if a.ndim == 1:  # (..., 1, n): sum the batch copies of the vector
                da = da.reshape(-1, a.shape[0]).sum(axis=0)
        if self.parents[1].requires_grad:
            db = _mm.matmul(a2.swapaxes(-1, -2), g2)
            if b.ndim == 1:  # (..., n, 1)
                db = db.reshape(-1, b.shape[0]).sum(axis=0)
        return da, db


# ---------------------------------------------------------------- elementwise unary
class Neg(Function):
    """out = −x;  dx = −g."""

    def forward(self, x):
        return -x

    def backward(self, g):
        return (-g,)


class Pow(Function):
    """out = xᵖ (p a Python number);  dx = g · p · xᵖ⁻¹."""

    def forward(self, x, exponent):
        self.x, self.p = x, exponent
        return x ** exponent

    def backward(self, g):
        p = self.p
        return (g * (p * self.x ** (p - 1)).astype(self.x.dtype, copy=False),)


class Exp(Function):
    """out = eˣ;  dx = g · out."""

    def forward(self, x):
        self.out = get_array_module(x).exp(x)
        return self.out

    def backward(self, g):
        return (g * self.out,)


class Log(Function):
    """out = ln x;  dx = g / x."""

    def forward(self, x):
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, g):
        return (g / self.x,)


class Tanh(Function):
    """out = tanh x;  dx = g · (1 − out²)."""

    def forward(self, x):
        self.out = get_array_module(x).tanh(x)
        return self.out

    def backward(self, g):
        return (g * (1 - self.out * self.out),)


class Sqrt(Function):
    """out = √x;  dx = g / (2·out)."""

    def forward(self, x):
        self.out = get_array_module(x).sqrt(x)
        return self.out

    def backward(self, g):
        return (g / (2 * self.out),)


class Abs(Function):
    """out = |x|;  dx = g · sign(x) (0 at x = 0, as torch)."""

    def forward(self, x):
        self.x = x
        return abs(x)

    def backward(self, g):
        return (g * get_array_module(self.x).sign(self.x),)


class Cast(Function):
    """out = x converted to another float dtype;  dx = g converted back."""

    def forward(self, x, dtype):
        self.src = x.dtype
        return x.astype(dtype)

    def backward(self, g):
        return (g.astype(self.src),)


# ---------------------------------------------------------------- reductions
def _expand_back(g, shape, dims, keepdim):
    """Broadcast a reduced gradient back over the reduced axes (undo sum's shape change)."""
    if dims is None:
        dims = tuple(range(len(shape)))
    if not keepdim:
        for d in sorted(dims):
            g = get_array_module(g).expand_dims(g, d)
    return get_array_module(g).broadcast_to(g, shape)


class Sum(Function):
    """out = Σ over dims of x;  dx = g broadcast back over the summed dims."""

    def forward(self, x, dim, keepdim):
        self.shape, self.dim, self.keepdim = x.shape, dim, keepdim
        return x.sum(axis=dim, keepdims=keepdim)

    def backward(self, g):
        return (_expand_back(g, self.shape, self.dim, self.keepdim),)


class Max(Function):
    """out = max over dims of x;  dx = g split evenly among the positions that attain the max (torch's amax)."""

    def forward(self, x, dim, keepdim):
        self.x, self.dim, self.keepdim = x, dim, keepdim
        self.out = x.max(axis=dim, keepdims=True)
        return self.out if keepdim else x.max(axis=dim, keepdims=False)

    def backward(self, g):
        mask = (self.x == self.out).astype(self.x.dtype)
        mask /= mask.sum(axis=self.dim, keepdims=True)
        return (_expand_back(g, self.x.shape, self.dim, self.keepdim) * mask,)


class MaxAlongDim(Function):
    """out = x[..., argmax, ...] along one dim;  dx = g scattered to the argmax index (torch.max(x, dim))."""

    def forward(self, x, dim, keepdim, indices):
        self.shape, self.dim, self.keepdim, self.indices = x.shape, dim, keepdim, indices
        out = get_array_module(x).take_along_axis(x, indices, axis=dim)
        return out if keepdim else out.squeeze(dim)

    def backward(self, g):
        xp = get_array_module(g)
        dx = xp.zeros(self.shape, dtype=g.dtype)
        gk = g if self.keepdim else xp.expand_dims(g, self.dim)
        xp.put_along_axis(dx, self.indices, gk, axis=self.dim)
        return (dx,)


MaxResult = namedtuple("MaxResult", ["values", "indices"])


def max(x: Tensor, dim: int | None = None, keepdim: bool = False):  # noqa: A001 - torch's name
    """torch.max: the overall maximum, or (values, indices) along `dim`."""
    if dim is None:
        return Max.apply(x, dim=None, keepdim=False)
    (d,) = _dims(dim, x.ndim)
    xp = get_array_module(x.data)
    idx = xp.expand_dims(x.data.argmax(axis=d), d)
    values = MaxAlongDim.apply(x, dim=d, keepdim=keepdim, indices=idx)
    return MaxResult(values, Tensor(idx if keepdim else idx.squeeze(d)))


def argmax(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Index of the maximum (flattened when dim is None); an integer tensor with no gradient."""
    if dim is None:
        return Tensor(x.data.argmax())
    (d,) = _dims(dim, x.ndim)
    return Tensor(x.data.argmax(axis=d, keepdims=keepdim) if keepdim else x.data.argmax(axis=d))


def mean(x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Σx / n over dims (composite: sum then scale)."""
    dims = _dims(dim, x.ndim)
    n = x.data.size if dims is None else int(np.prod([x.shape[d] for d in dims]))
    return Sum.apply(x, dim=dims, keepdim=keepdim) * (1.0 / n)


def var(x: Tensor, dim=None, keepdim: bool = False, correction: int = 1) -> Tensor:
    """Σ(x − mean)² / (n − correction) (composite; correction=0 is the biased variance the book's LayerNorm uses)."""
    dims = _dims(dim, x.ndim)
    n = x.data.size if dims is None else int(np.prod([x.shape[d] for d in dims]))
    c = x - mean(x, dims, keepdim=True)
    return Sum.apply(c * c, dim=dims, keepdim=keepdim) * (1.0 / (n - correction))


# ---------------------------------------------------------------- shape
class Reshape(Function):
    """out = x viewed with a new shape;  dx = g reshaped back."""

    def forward(self, x, shape):
        self.shape = x.shape
        return x.reshape(shape)

    def backward(self, g):
        return (g.reshape(self.shape),)


class Transpose(Function):
    """out = x with axes dim0 and dim1 swapped;  dx = g with them swapped back."""

    def forward(self, x, dim0, dim1):
        self.d0, self.d1 = dim0, dim1
        return x.swapaxes(dim0, dim1)

    def backward(self, g):
        return (g.swapaxes(self.d0, self.d1),)


class Permute(Function):
    """out = x with axes reordered by dims;  dx = g with the inverse permutation."""

    def forward(self, x, dims):
        if sorted(d % x.ndim for d in dims) != list(range(x.ndim)):
            raise ValueError(f"permute dims {dims} are not a permutation of {x.ndim} axes")
        self.dims = tuple(d % x.ndim for d in dims)
        return x.transpose(self.dims)

    def backward(self, g):
        return (g.transpose(np.argsort(self.dims)),)


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dims start_dim..end_dim into one (a reshape)."""
    if x.ndim == 0:
        return x.reshape(1)
    s, e = start_dim % x.ndim, end_dim % x.ndim
    shape = x.shape[:s] + (int(np.prod(x.shape[s:e + 1])),) + x.shape[e + 1:]
    return x.reshape(shape)


def unsqueeze(x: Tensor, dim: int) -> Tensor:
    """Insert an axis of size 1 at dim (a reshape)."""
    d = dim % (x.ndim + 1)
    return x.reshape(x.shape[:d] + (1,) + x.shape[d:])


def squeeze(x: Tensor, dim: int | None = None) -> Tensor:
    """Drop axes of size 1 (only `dim`, if given and of size 1), as torch.squeeze."""
    if dim is None:
        return x.reshape(tuple(n for n in x.shape if n != 1))
    d = dim % x.ndim
    return x if x.shape[d] != 1 else x.reshape(x.shape[:d] + x.shape[d + 1:])


# ---------------------------------------------------------------- indexing
def _is_advanced(idx) -> bool:
    parts = idx if isinstance(idx, tuple) else (idx,)
    return any(not isinstance(p, (int, np.integer, slice, type(None), type(Ellipsis))) for p in parts)


class Index(Function):
    """out = x[idx];  dx = zeros with g written (basic slicing) or scatter-added (integer arrays) at idx.

    Scatter-add, not assignment, because an integer index may name one row several times (an embedding).
    """

    def forward(self, x, idx):
        self.shape, self.idx = x.shape, idx
        return x[idx]

    def backward(self, g):
        xp = get_array_module(g)
        dx = xp.zeros(self.shape, dtype=g.dtype)
        if _is_advanced(self.idx):
            if xp is np:
                np.add.at(dx, self.idx, g)
            else:
                import cupyx

                cupyx.scatter_add(dx, self.idx, g)
        else:
            dx[self.idx] = g
        return (dx,)


def _raw_index(idx):
    if isinstance(idx, Tensor):
        return idx.data
    if isinstance(idx, tuple):
        return tuple(_raw_index(i) for i in idx)
    if isinstance(idx, list):
        return np.asarray(idx)
    return idx


def index(x: Tensor, idx) -> Tensor:
    """x[idx] for ints, slices, None, Ellipsis, integer and boolean arrays; out-of-range ids raise IndexError on
    NumPy (CuPy wraps them around, its documented difference; checking would cost a device-to-host sync)."""
    idx = _raw_index(idx)
    parts = idx if isinstance(idx, tuple) else (idx,)
    for p in parts:
        if hasattr(p, "dtype") and p.dtype.kind == "f":
            raise IndexError(f"tensors used as indices must be integer or boolean, got {p.dtype}")
    try:
        return Index.apply(x, idx=idx)
    except IndexError as e:
        raise IndexError(f"index out of range for a tensor of shape {x.shape}: {e}") from None


class Cat(Function):
    """out = concatenation of the inputs along dim;  d(input i) = the matching slice of g."""

    def forward(self, *xs, dim):
        self.dim = dim
        self.bounds = np.cumsum([x.shape[dim] for x in xs])[:-1]
        return get_array_module(xs[0]).concatenate(xs, axis=dim)

    def backward(self, g):
        return tuple(get_array_module(g).split(g, self.bounds, axis=self.dim))


class Stack(Function):
    """out = inputs stacked along a new axis dim;  d(input i) = g indexed at i along dim."""

    def forward(self, *xs, dim):
        self.dim = dim
        return get_array_module(xs[0]).stack(xs, axis=dim)

    def backward(self, g):
        return tuple(g.take(i, axis=self.dim) for i in range(g.shape[self.dim]))


def _same_dtype(tensors: Sequence[Tensor]) -> list[Tensor]:
    ts = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    if not ts:
        raise ValueError("expected a non-empty sequence of tensors")
    for t in ts[1:]:
        if t.dtype != ts[0].dtype:
            raise TypeError(f"dtype mismatch: {ts[0].dtype} and {t.dtype}; convert with .to(dtype) first")
    return ts


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """torch.cat."""
    ts = _same_dtype(tensors)
    return Cat.apply(*ts, dim=dim % ts[0].ndim)


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """torch.stack."""
    ts = _same_dtype(tensors)
    return Stack.apply(*ts, dim=dim % (ts[0].ndim + 1))


def split(x: Tensor, split_size_or_sections, dim: int = 0) -> tuple[Tensor, ...]:
    """torch.split: pieces of a given size (the last may be smaller) or of the given sizes, as slices of x."""
    d = dim % x.ndim
    n = x.shape[d]
    if isinstance(split_size_or_sections, int):
        if split_size_or_sections <= 0:
            raise ValueError(f"split size must be positive, got {split_size_or_sections}")
        sizes = [split_size_or_sections] * (n // split_size_or_sections)
        if n % split_size_or_sections:
            sizes.append(n % split_size_or_sections)
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise ValueError(f"split sizes {sizes} do not add up to {n}, the size of dim {dim}")
    out, start = [], 0
    for s in sizes:
        out.append(index(x, (slice(None),) * d + (slice(start, start + s),)))
        start += s
    return tuple(out)


def chunk(x: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """torch.chunk: `chunks` pieces of ceil(n / chunks)."""
    n = x.shape[dim % x.ndim]
    return split(x, -(-n // chunks), dim)


# ---------------------------------------------------------------- selection
class Where(Function):
    """out = cond ? a : b;  da = g where cond, db = g where not cond."""

    def forward(self, a, b, cond):
        self.cond = cond
        return get_array_module(a).where(cond, a, b)

    def backward(self, g):
        zero = g.dtype.type(0)
        xp = get_array_module(g)
        return xp.where(self.cond, g, zero), xp.where(self.cond, zero, g)


def where(cond, a, b) -> Tensor:
    """torch.where(cond, a, b) for tensors or Python numbers a, b (cond is a boolean array or tensor)."""
    c = cond.data if isinstance(cond, Tensor) else cond
    if getattr(c, "dtype", None) != np.bool_:
        raise TypeError(f"where() needs a boolean condition, got {getattr(c, 'dtype', type(c))}")
    a, b = _pair(a, b)
    return Where.apply(a, b, cond=c)


class MaskedFill(Function):
    """out = value where mask else x (mask broadcasts);  dx = g where not mask."""

    def forward(self, x, mask, value):
        xp = get_array_module(x)
        if getattr(mask, "dtype", None) != np.bool_:
            raise TypeError(f"masked_fill needs a boolean mask, got {getattr(mask, 'dtype', type(mask))}")
        self.mask = mask
        return xp.where(mask, x.dtype.type(value), x)

    def backward(self, g):
        return (get_array_module(g).where(self.mask, g.dtype.type(0), g),)


__all__ = ["Add", "Sub", "Mul", "Div", "MatMul", "Neg", "Pow", "Exp", "Log", "Tanh", "Sqrt", "Abs", "Cast", "Sum",
           "Max", "MaxAlongDim", "Reshape", "Transpose", "Permute", "Index", "Cat", "Stack", "Where", "MaskedFill",
           "max", "argmax", "mean", "var", "flatten", "unsqueeze", "squeeze", "index", "cat", "stack", "split",
           "chunk", "where", "is_grad_enabled"]
