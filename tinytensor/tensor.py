"""Tensor and the reverse-mode autograd engine.

A `Tensor` wraps a NumPy or CuPy array (`data`). Every differentiable operation is a `Function` subclass with a
`forward` on raw arrays and a hand-written `backward` that returns the gradients of its parents; the engine
(`Tensor.backward`) walks the graph in reverse topological order (iteratively: no recursion limit), reduces
broadcast gradients back to each parent's shape in one place, accumulates them into leaves, and frees the graph.
An embedding's gradient travels row-sparse (`RowGrad`) and is added in place where it meets the others.
Follows micrograd's engine and tinygrad's `Tensor.backward`, with PyTorch's names and keywords.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator, Sequence

import numpy as np

_grad_enabled = True


def _unique_refs() -> int:
    """sys.getrefcount of an array held by one local variable only (the count differs between Python versions)."""
    a = np.empty(1)
    return sys.getrefcount(a)


_UNIQUE_REFS = _unique_refs()


def is_grad_enabled() -> bool:
    """True unless inside a `no_grad()` block."""
    return _grad_enabled


class no_grad(contextlib.ContextDecorator):
    """Context manager (and decorator) that records no graph: ops return tensors without a backward."""

    def __enter__(self) -> "no_grad":
        global _grad_enabled
        self._prev, _grad_enabled = _grad_enabled, False
        return self

    def __exit__(self, *exc: Any) -> None:
        global _grad_enabled
        _grad_enabled = self._prev


def get_array_module(a: Any):
    """numpy or cupy, whichever owns the array `a` (cupy only if it is installed)."""
    mod = type(a).__module__
    if mod.startswith("cupy"):
        import cupy

        return cupy
    return np


def _is_float(dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def unbroadcast(grad, shape: tuple[int, ...]):
    """Sum `grad` over the axes that broadcasting added or stretched, so it has the operand's `shape`."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        raise AssertionError(f"gradient of shape {grad.shape} cannot reduce to {shape}")
    axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    g = grad.sum(axis=axes, keepdims=True) if axes else grad
    return g.reshape(shape)


class RowGrad:
    """A gradient that is zero outside some rows of axis 0: an embedding table's, where only the looked-up rows get
    one. `rows` are distinct indices, `values` their gradients, (len(rows), *shape[1:]).

    An op's backward may return one for a parent; the engine adds it into the parent's other gradients or into
    the leaf's gradient in place, so a step of a 50257-row table never builds a zero table and then adds and copies
    it (~0.1 s of GPT-2 124M's step). It becomes a dense array only where another op's backward needs one.
    """

    __slots__ = ("rows", "values", "shape", "dtype")

    def __init__(self, rows: Any, values: Any, shape: Sequence[int]):
        self.rows, self.values, self.shape, self.dtype = rows, values, tuple(shape), values.dtype

    def add_into(self, out: Any) -> None:
        """out += this gradient (out has its shape), in place."""
        out[self.rows] += self.values  # distinct rows: a fancy-indexed += adds each exactly once

    def dense(self) -> Any:
        """The gradient as an array of its shape."""
        out = get_array_module(self.values).zeros(self.shape, dtype=self.dtype)
        out[self.rows] = self.values
        return out


class _GradSum:
    """A node's gradient contributions while some are RowGrads: the dense ones summed (or None), the sparse ones
    kept, added in place once the gradient is used (`_dense`, `_into_leaf`)."""

    __slots__ = ("dense", "owned", "sparse", "shape", "dtype")

    def __init__(self, g: Any):
        self.dense, self.owned, self.sparse = None, False, []
        self.shape, self.dtype = g.shape, g.dtype
        self.add(g)

    def add(self, g: Any) -> None:
        if isinstance(g, RowGrad):
            self.sparse.append(g)
        elif self.dense is None:
            self.dense = g  # not ours: it may alias another gradient, so never added into in place
        else:
            self.dense, self.owned = self.dense + g, True


def _add_grads(prev: Any, g: Any) -> Any:
    """Two gradient contributions to one node: out of place for arrays (g may alias another gradient)."""
    if not isinstance(prev, (RowGrad, _GradSum)) and not isinstance(g, RowGrad):
        return prev + g
    acc = prev if isinstance(prev, _GradSum) else _GradSum(prev)
    acc.add(g)
    return acc


def _write(acc: _GradSum, out: Any) -> Any:
    """out = the sum of acc's contributions, its old contents overwritten (out may be acc's own dense sum)."""
    sparse = acc.sparse
    if acc.dense is not None:
        if acc.dense is not out:
            out[...] = acc.dense
    else:  # the first sparse part over zeros: the same bits as RowGrad.dense
        out[...] = 0
        out[sparse[0].rows] = sparse[0].values
        sparse = sparse[1:]
    for r in sparse:
        r.add_into(out)
    return out


def _dense(g: Any) -> Any:
    """A node's gradient as one array, for its op's backward."""
    if isinstance(g, RowGrad):
        return g.dense()
    if not isinstance(g, _GradSum):
        return g
    if g.owned:
        return _write(g, g.dense)
    xp = get_array_module(g.dense if g.dense is not None else g.sparse[0].values)
    return _write(g, xp.empty(g.shape, dtype=g.dtype))  # a dense part not ours may alias another gradient


def _grad_buffer(node: "Tensor", g: Any) -> Any:
    """The optimizer's preallocated buffer for this leaf's gradient (a view into its flat buffer), where it has one
    of g's shape and dtype; else None."""
    buf = getattr(node, "grad_buffer", None)
    return buf if buf is not None and buf.shape == g.shape and buf.dtype == g.dtype else None


def _into_leaf(node: "Tensor", g: RowGrad | _GradSum) -> None:
    """Accumulate a gradient with sparse parts into a leaf's .grad: into the existing gradient or the optimizer's
    buffer in place, else into a new array."""
    acc = g if isinstance(g, _GradSum) else _GradSum(g)
    if node.grad is None:
        buf = _grad_buffer(node, acc)
        node.grad = Tensor(_dense(acc) if buf is None else _write(acc, buf))
        return
    out = node.grad.data
    if acc.dense is not None:
        out += acc.dense
    for r in acc.sparse:
        r.add_into(out)


class Function:
    """One differentiable operation: `forward` on arrays, `backward(grad)` -> one gradient (or None) per parent.

    Non-tensor arguments (axes, shapes, constants) arrive as keywords and are kept on `self` for backward.
    `consume` is True while backward runs for the last time (the engine frees the graph right after, no
    retain_graph): a backward may then overwrite its saved arrays in place instead of copying them.
    """

    consume = False

    def __init__(self, *parents: "Tensor"):
        self.parents = parents

    def forward(self, *args: Any, **kwargs: Any):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad: Any) -> tuple[Any, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def saved_arrays(self) -> dict[str, Any]:
        """The arrays this op keeps for backward, by attribute name ("probs", "saved.q", ...).

        For inspection (tinytensor.graph); the engine never calls it, so ops pay nothing for it.
        """
        found: dict[str, Any] = {}
        stack = [(k, v) for k, v in vars(self).items() if k not in ("parents", "consume")]
        while stack:
            name, v = stack.pop()
            if hasattr(v, "nbytes") and hasattr(v, "shape") and not isinstance(v, (np.generic, Tensor)):
                found[name] = v
            elif isinstance(v, dict):
                stack.extend((f"{name}.{k}", x) for k, x in v.items())
            elif isinstance(v, (tuple, list)):
                stack.extend((f"{name}.{i}", x) for i, x in enumerate(v))
        return dict(sorted(found.items()))

    @classmethod
    def apply(cls, *parents: "Tensor", **kwargs: Any) -> "Tensor":
        """Run forward on the parents' arrays; record the op in the graph if any parent needs a gradient."""
        ctx = cls(*parents)
        out = ctx.forward(*(p.data for p in parents), **kwargs)
        requires = _grad_enabled and any(p.requires_grad for p in parents)
        return Tensor(out, requires_grad=requires, _ctx=ctx if requires else None)


class Tensor:
    """An n-dimensional array with an optional gradient and the op that produced it."""

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "__weakref__")
    __array_priority__ = 1000  # make ndarray + Tensor call Tensor.__radd__ rather than broadcasting elementwise

    def __init__(self, data: Any, requires_grad: bool = False, _ctx: Function | None = None, dtype: Any = None):
        if isinstance(data, Tensor):
            data = data.data
        if not isinstance(data, np.ndarray) and get_array_module(data) is np:  # lists, numbers, numpy scalars
            data = np.asarray(data, dtype=dtype)
        elif dtype is not None and data.dtype != np.dtype(dtype):
            data = data.astype(dtype)
        if requires_grad and not _is_float(data.dtype):
            raise TypeError(f"only floating-point tensors can require a gradient, got dtype {data.dtype}")
        self.data = data
        self.grad: Tensor | None = None
        self.requires_grad = bool(requires_grad)
        self._ctx = _ctx

    # ---- introspection (torch names) ----
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def device(self) -> str:
        return "cpu" if get_array_module(self.data) is np else "cuda"

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        return int(self.data.size)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad})"

    def item(self) -> float | int | bool:
        return self.data.item()

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied to the host for CuPy)."""
        d = self.data
        return d if isinstance(d, np.ndarray) else d.get()

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and not _is_float(self.dtype):
            raise TypeError(f"only floating-point tensors can require a gradient, got dtype {self.dtype}")
        self.requires_grad = requires_grad
        return self

    def zero_grad(self) -> None:
        self.grad = None

    # ---- the engine ----
    def _topo(self) -> list["Tensor"]:
        """Nodes reachable from self, parents before children (iterative post-order DFS)."""
        order, seen = [], set()
        stack: list[tuple[Tensor, Iterator[Tensor] | None]] = [(self, None)]
        while stack:
            node, it = stack.pop()
            if it is None:
                if id(node) in seen:
                    continue
                seen.add(id(node))
                it = iter(node._ctx.parents if node._ctx is not None else ())
            nxt = next((p for p in it if p.requires_grad and id(p) not in seen), None)
            if nxt is None:
                order.append(node)
            else:
                stack.append((node, it))
                stack.append((nxt, None))
        return order

    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) · grad into every leaf's `.grad`; frees the graph unless retain_graph.

        `grad` defaults to 1 for a scalar (one-element) tensor, as in torch.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no parameter or input needs one)")
        xp = get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"grad can be implicitly created only for scalar outputs, not shape {self.shape}")
            g = xp.ones_like(self.data)
        else:
            g = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
            if g.shape != self.data.shape:
                raise ValueError(f"grad has shape {g.shape} but the tensor has shape {self.shape}")
        grads: dict[int, Any] = {id(self): g}
        for node in reversed(self._topo()):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            ctx = node._ctx
            if ctx is _FREED:
                raise RuntimeError("backward through a graph that a previous backward() already freed; "
                                   "pass retain_graph=True to the first backward() to call it again")
            if ctx is None:  # a leaf: accumulate (a leaf used twice has already had both contributions summed)
                if isinstance(g, (RowGrad, _GradSum)):
                    _into_leaf(node, g)
                elif node.grad is None:
                    buf = _grad_buffer(node, g)
                    if buf is not None:
                        buf[...] = g
                        node.grad = Tensor(buf)
                    elif (isinstance(g, np.ndarray) and g.base is None and g.flags.writeable
                          and sys.getrefcount(g) == _UNIQUE_REFS):
                        node.grad = Tensor(g)  # nothing else holds g (no view, no op, not the caller): kept
                        # as it is, as torch's AccumulateGrad steals a gradient no one else refers to
                    else:
                        node.grad = Tensor(g.copy())
                else:
                    node.grad.data += g
                continue
            ctx.consume = not retain_graph
            pgrads = ctx.backward(_dense(g))
            for p, pg in zip(ctx.parents, pgrads):
                if pg is None or not p.requires_grad:
                    continue
                pg = unbroadcast(pg, p.data.shape)
                assert pg.dtype == p.dtype, f"{type(ctx).__name__} backward gave {pg.dtype} for a {p.dtype} input"
                prev = grads.get(id(p))
                grads[id(p)] = pg if prev is None else _add_grads(prev, pg)
            pgrads = pg = prev = None  # hold no gradient here, so a leaf's can be kept without a copy (above)
            if not retain_graph:
                node._ctx = _FREED  # drops the saved arrays; a second backward through here raises, as in torch

    # ---- operators: thin calls into tinytensor.ops ----
    def __add__(self, other): return _ops().Add.apply(*_pair(self, other))
    def __radd__(self, other): return _ops().Add.apply(*_pair(other, self))
    def __sub__(self, other): return _ops().Sub.apply(*_pair(self, other))
    def __rsub__(self, other): return _ops().Sub.apply(*_pair(other, self))
    def __mul__(self, other): return _ops().Mul.apply(*_pair(self, other))
    def __rmul__(self, other): return _ops().Mul.apply(*_pair(other, self))
    def __truediv__(self, other): return _ops().Div.apply(*_pair(self, other))
    def __rtruediv__(self, other): return _ops().Div.apply(*_pair(other, self))
    def __neg__(self): return _ops().Neg.apply(self)
    def __pos__(self): return self
    def __matmul__(self, other): return _ops().MatMul.apply(*_pair(self, other))
    def __rmatmul__(self, other): return _ops().MatMul.apply(*_pair(other, self))

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            raise TypeError("Tensor ** Tensor is not supported; use a Python number as the exponent")
        return _ops().Pow.apply(self, exponent=exponent)

    def __getitem__(self, idx):
        return _ops().index(self, idx)

    def __setitem__(self, idx, value) -> None:
        """In-place write (a KV cache filling its buffer); refused where it would corrupt a recorded graph."""
        if _grad_enabled and (self.requires_grad or getattr(value, "requires_grad", False)):
            raise RuntimeError("in-place assignment into a tensor that is part of a graph; wrap it in no_grad() "
                               "or use cat/where to build a new tensor")
        v = value.data if isinstance(value, Tensor) else value
        if hasattr(v, "dtype") and v.dtype != self.dtype:
            raise TypeError(f"dtype mismatch: cannot write {v.dtype} into a {self.dtype} tensor")
        self.data[_ops()._raw_index(idx)] = v

    # comparisons give boolean tensors without a graph (for masks); == and != keep identity semantics
    def __lt__(self, other): return Tensor(self.data < _raw(other))
    def __le__(self, other): return Tensor(self.data <= _raw(other))
    def __gt__(self, other): return Tensor(self.data > _raw(other))
    def __ge__(self, other): return Tensor(self.data >= _raw(other))
    def eq(self, other): return Tensor(self.data == _raw(other))
    def ne(self, other): return Tensor(self.data != _raw(other))
    def logical_not(self): return Tensor(~self.data)
    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise RuntimeError(f"the truth value of a tensor of shape {self.shape} is ambiguous")
        return bool(self.data.item())

    # ---- elementwise math ----
    def exp(self): return _ops().Exp.apply(self)
    def log(self): return _ops().Log.apply(self)
    def log1p(self): return _ops().Log1p.apply(self)
    def tanh(self): return _ops().Tanh.apply(self)
    def sqrt(self): return _ops().Sqrt.apply(self)
    def pow(self, exponent): return self ** exponent
    def abs(self): return _ops().Abs.apply(self)

    # ---- reductions (torch keywords: dim, keepdim) ----
    def sum(self, dim=None, keepdim: bool = False): return _ops().Sum.apply(self, dim=_dims(dim, self.ndim), keepdim=keepdim)
    def mean(self, dim=None, keepdim: bool = False): return _ops().mean(self, dim, keepdim)
    def var(self, dim=None, keepdim: bool = False, unbiased: bool = True, correction: int | None = None):
        return _ops().var(self, dim, keepdim, 1 if correction is None and unbiased else (correction or 0))
    def max(self, dim: int | None = None, keepdim: bool = False): return _ops().max(self, dim, keepdim)
    def amax(self, dim=None, keepdim: bool = False): return _ops().Max.apply(self, dim=_dims(dim, self.ndim), keepdim=keepdim)
    def argmax(self, dim: int | None = None, keepdim: bool = False): return _ops().argmax(self, dim, keepdim)

    # ---- shape ----
    def reshape(self, *shape): return _ops().Reshape.apply(self, shape=_shape_arg(shape))
    def view(self, *shape): return self.reshape(*shape)
    def flatten(self, start_dim: int = 0, end_dim: int = -1): return _ops().flatten(self, start_dim, end_dim)
    def unsqueeze(self, dim: int): return _ops().unsqueeze(self, dim)
    def squeeze(self, dim: int | None = None): return _ops().squeeze(self, dim)
    def transpose(self, dim0: int, dim1: int): return _ops().Transpose.apply(self, dim0=dim0, dim1=dim1)
    def permute(self, *dims): return _ops().Permute.apply(self, dims=_shape_arg(dims))
    def split(self, split_size_or_sections, dim: int = 0): return _ops().split(self, split_size_or_sections, dim)
    def chunk(self, chunks: int, dim: int = 0): return _ops().chunk(self, chunks, dim)
    def masked_fill(self, mask, value: float): return _ops().MaskedFill.apply(self, mask=_raw(mask), value=value)
    def contiguous(self): return self

    @property
    def T(self):
        return _ops().Permute.apply(self, dims=tuple(reversed(range(self.ndim))))

    # ---- dtype / device ----
    def to(self, dtype=None) -> "Tensor":
        """Cast to `dtype` (a differentiable copy); device strings are accepted only for this tensor's device."""
        if dtype is None or isinstance(dtype, str) and dtype in ("cpu", "cuda", self.device):
            return self
        return _ops().Cast.apply(self, dtype=np.dtype(dtype))

    def new_tensor(self, data: Any, dtype: Any = None) -> "Tensor":
        """torch.Tensor.new_tensor: a leaf tensor holding `data`, with this tensor's dtype (or `dtype`) and device."""
        xp = get_array_module(self.data)
        return Tensor(xp.asarray(_raw(data), dtype=self.dtype if dtype is None else np.dtype(dtype)))

    def float(self) -> "Tensor": return self.to(np.float32)
    def double(self) -> "Tensor": return self.to(np.float64)
    def long(self) -> "Tensor": return Tensor(self.data.astype(np.int64))


class _FreedFunction:
    """Stands in for a Function whose saved arrays backward() released: no parents, no backward."""

    parents: tuple = ()


_FREED = _FreedFunction()


def _ops():
    from . import ops  # late import: ops imports this module

    return ops


def _raw(x):
    return x.data if isinstance(x, Tensor) else x


def _pair(a, b) -> tuple[Tensor, Tensor]:
    """Two operands as tensors of one dtype: Python numbers take the tensor's dtype; mixed dtypes are an error."""
    if not isinstance(a, Tensor):
        a = _scalar_like(a, b)
    if not isinstance(b, Tensor):
        b = _scalar_like(b, a)
    if a.dtype != b.dtype:
        raise TypeError(f"dtype mismatch: {a.dtype} and {b.dtype}; convert one with .to(dtype) first "
                        f"(tinytensor never upcasts silently)")
    return a, b


def _scalar_like(x, like: Tensor) -> Tensor:
    xp = get_array_module(like.data)
    if isinstance(x, (int, float, bool, np.number)):
        return Tensor(xp.asarray(x, dtype=like.dtype))
    arr = xp.asarray(x)
    if arr.dtype != like.dtype:
        raise TypeError(f"dtype mismatch: array of {arr.dtype} and tensor of {like.dtype}; "
                        f"convert one with .astype/.to first (tinytensor never upcasts silently)")
    return Tensor(arr)


def _shape_arg(shape: Sequence) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


def _dims(dim, ndim: int) -> tuple[int, ...] | None:
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    out = []
    for d in dims:
        if not -ndim <= d < max(ndim, 1):
            raise IndexError(f"dim {d} is out of range for a tensor of {ndim} dimensions")
        out.append(d % max(ndim, 1))
    return tuple(out)


class Parameter(Tensor):
    """A leaf tensor that a Module owns and an optimizer updates (tinytensor's torch.nn.Parameter).

    `grad_buffer`: None, or a preallocated array (a view into an optimizer's flat gradient buffer) that backward
    writes this parameter's gradient into instead of allocating a new one.
    """

    __slots__ = ("grad_buffer",)

    def __init__(self, data: Any, requires_grad: bool = True):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)
        self.grad_buffer = None

    def __repr__(self) -> str:
        return f"Parameter({self.data!r})"

