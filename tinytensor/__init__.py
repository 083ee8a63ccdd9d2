"""tinytensor: tensors on NumPy or CuPy arrays with reverse-mode autograd and hand-written backward passes.

The engine is `tensor.py`; primitive ops with their backward are in `ops.py`; fused ops (linear, layer_norm,
rms_norm, gelu, silu, softmax, cross_entropy, attention with grouped-query heads, rotary embedding, ...) in
`functional.py` over the kernel pairs in `kernels/`; optimizers in `optim.py`; finite-difference checks in
`gradcheck.py`; `graph(t)` (graph.py) walks the autograd graph from a tensor (ops, shapes, bytes kept for
backward). It knows nothing of GPT.
"""
from . import functional, gradcheck, optim, random
from .graph import Graph, Node, graph
from .gradcheck import GradcheckError
from .ops import argmax, cat, chunk, split, stack, where
from .tensor import Function, Parameter, RowGrad, Tensor, get_array_module, is_grad_enabled, no_grad, unbroadcast


def tensor(data, dtype=None, requires_grad: bool = False) -> Tensor:
    """A new leaf tensor holding `data` (an array, list or number), optionally cast to `dtype`."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


__all__ = ["functional", "gradcheck", "optim", "random", "GradcheckError", "Tensor", "Parameter", "Function", "RowGrad", "tensor", "no_grad", "is_grad_enabled", "get_array_module",
           "unbroadcast", "graph", "Graph", "Node", "cat", "stack", "split", "chunk", "where", "argmax"]
