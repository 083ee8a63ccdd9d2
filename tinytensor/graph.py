"""Walking the autograd graph from a tensor: the ops that produced it, their outputs and what each keeps for backward.

`graph(t)` returns a `Graph` of `Node`s (one per tensor: an op's output, or a leaf: a parameter, an input, a
constant) and `edges` (parent -> child) in topological order, as the engine (`Tensor.backward`) would visit them
reversed. Each op node reports the arrays its `Function` saved for backward (`Function.saved_arrays`) and their
size, the quantity behind activation memory (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models", §4 counts the same per-layer terms by hand). The walk only reads the graph, so call it
before `backward()` frees it (or pass `retain_graph=True`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .tensor import _FREED, Parameter, Tensor


@dataclass
class Node:
    """One tensor of the graph: `op` is the Function's class name for an op output, else "Parameter"/"Tensor"."""

    id: int                      # position in topological order (parents before children)
    op: str                      # "MatMul", "LayerNorm", ... or "Parameter" / "Tensor" for a leaf
    shape: tuple[int, ...]       # the tensor's shape
    dtype: str                   # the tensor's dtype name
    is_leaf: bool                # no op produced it (or the walk stopped here)
    name: str | None = None      # a parameter's name, when `params` named it
    saved: dict[str, tuple[tuple[int, ...], str, int]] = field(default_factory=dict)  # name -> (shape, dtype, bytes)
    saved_bytes: int = 0         # bytes of the distinct buffers the op keeps for backward
    kept_bytes: int = 0          # of those, bytes no leaf owns and no earlier op already keeps (counted once)


@dataclass
class Graph:
    """Nodes in topological order and edges (parent id, child id)."""

    nodes: list[Node]
    edges: list[tuple[int, int]]

    def ops(self) -> list[Node]:
        """The op nodes (no leaves), in topological order."""
        return [n for n in self.nodes if not n.is_leaf]

    def kept_bytes_by_op(self) -> dict[str, int]:
        """Bytes kept for backward by op kind (each buffer counted once, at the first op that keeps it)."""
        out: dict[str, int] = {}
        for n in self.ops():
            out[n.op] = out.get(n.op, 0) + n.kept_bytes
        return out

    def total_kept_bytes(self) -> int:
        """All the activation memory the graph holds for backward, beyond its leaves."""
        return sum(n.kept_bytes for n in self.nodes)


def _root(a: Any) -> Any:
    """The array that owns `a`'s memory (a view's base, followed to the end)."""
    while getattr(a, "base", None) is not None and hasattr(a.base, "nbytes"):
        a = a.base
    return a


def _topo(t: Tensor, stop: set[int]) -> list[Tensor]:
    """Every tensor reachable from t through op parents, parents first (iterative DFS, as the engine's)."""
    order, seen, stack = [], set(), [(t, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        ctx = node._ctx
        if ctx is _FREED:
            raise RuntimeError("graph() on a graph that backward() already freed; call graph() before backward(), "
                               "or pass retain_graph=True to backward()")
        if ctx is not None and id(node) not in stop:
            stack.extend((p, False) for p in reversed(ctx.parents) if id(p) not in seen)
    return order


def _leaf_op(t: Tensor) -> str:
    return "Parameter" if isinstance(t, Parameter) else "Tensor"


def graph(t: Tensor, params: Mapping[str, Tensor] | None = None, stop_at: Iterable[Tensor] = ()) -> Graph:
    """The autograd graph that produced `t`: nodes (op, shape, dtype, saved bytes) and edges, parents first.

    params: names for parameters (e.g. `dict(model.named_parameters())`); stop_at: tensors treated as leaves, to
    cut out a subgraph (one transformer block: stop at its input).
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"graph() needs a tinytensor Tensor, got {type(t).__name__}")
    stop = {id(s) for s in stop_at}
    names = {id(p): n for n, p in (params or {}).items()}
    order = _topo(t, stop)
    index = {id(x): i for i, x in enumerate(order)}
    leaf_buffers = {id(_root(x.data)) for x in order if x._ctx is None or id(x) in stop}
    kept: set[int] = set()
    nodes, edges = [], []
    for i, x in enumerate(order):
        leaf = x._ctx is None or id(x) in stop
        node = Node(i, _leaf_op(x) if leaf else type(x._ctx).__name__, tuple(x.shape), str(x.dtype), leaf,
                    names.get(id(x)))
        if not leaf:
            _count_saved(node, x._ctx.saved_arrays(), leaf_buffers, kept)
            edges.extend((index[id(p)], i) for p in x._ctx.parents if id(p) in index)
        nodes.append(node)
    return Graph(nodes, edges)


def _count_saved(node: Node, arrays: dict[str, Any], leaf_buffers: set[int], kept: set[int]) -> None:
    """Fill node.saved / saved_bytes / kept_bytes, each buffer once (an op may save a view of its own input)."""
    mine: set[int] = set()
    for name, a in arrays.items():
        root = _root(a)
        node.saved[name] = (tuple(a.shape), str(a.dtype), int(root.nbytes))
        if id(root) in mine:
            continue
        mine.add(id(root))
        node.saved_bytes += int(root.nbytes)
        if id(root) not in leaf_buffers and id(root) not in kept:
            kept.add(id(root))
            node.kept_bytes += int(root.nbytes)


__all__ = ["graph", "Graph", "Node"]
