"""Looking inside one forward and backward pass of a GPT: attention maps, gradient flow, activations, the graph.

`inspect_model(model, ids)` runs the prompt's next-token loss (targets = the ids shifted by one, book ch. 5 §5.1)
once forward and backward and returns an `InspectReport`: every layer's attention weights softmax(QKᵀ/√d_k + M)
(Vaswani et al. 2017, eq. 1; recomputed off the graph for the record), every parameter's gradient norm and its
relative error against the torch backend in float64 on the same weights (the engine checked against the
reference on the user's own model, DESIGN §5), per-block activation statistics (mean, std, and the share of GELU
inputs below −3, where GELU's gradient is ~0: Hendrycks & Gimpel 2016), and one transformer block's autograd graph
(`tinytensor.graph`) on the numpy/cupy backends. Rendering (PNG, SVG, HTML) is in `gpt/inspect/render.py`.
Library code: it returns data and never prints (DESIGN §6).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from ..attention import MultiHeadAttention
from ..model import GELU
from ..nn import Module, to_numpy_any

GELU_DEAD_BELOW = -3.0   # GELU'(x) = Φ(x) + x·φ(x) is below 0.012 in magnitude for x < −3: the unit barely learns
REL_ERR_FLOOR = 1e-6     # × the largest reference gradient norm: the floor for gradients that are ~0 (DESIGN §5)


@dataclass
class InspectReport:
    """What `inspect_model` measured; `to_json()` is report.json (DESIGN §3)."""

    tokens: list[str]                    # the input tokens (the attention maps' rows and columns)
    targets: list[str]                   # the next token after each input token
    ids: list[int]                       # the prompt's token ids (inputs followed by the last target)
    loss: float                          # mean next-token cross-entropy over the prompt
    attention: list[np.ndarray]          # per layer: (heads, t, t), rows sum to 1, zero above the diagonal
    gradients: dict[str, dict[str, Any]]  # name -> {"norm": float, "rel_err_vs_torch": float | None}
    activations: list[dict[str, float]]  # per block: {"mean", "std", "gelu_below_-3"}
    graph: Any = None                    # tinytensor.Graph of block 0, or None (torch backend)
    reference: str | None = None         # "torch float64" when the gradients were checked against it
    notes: list[str] = field(default_factory=list)  # why something is missing (no torch, ...)

    def to_json(self) -> dict[str, Any]:
        """report.json: tokens, attention as nested lists, gradients, activations, the graph's op summary."""
        out = {"tokens": self.tokens, "targets": self.targets, "ids": self.ids, "loss": self.loss,
               "attention": [a.tolist() for a in self.attention], "gradients": self.gradients,
               "activations": self.activations, "reference": self.reference, "notes": self.notes}
        if self.graph is not None:
            out["graph"] = {"ops": len(self.graph.ops()), "nodes": len(self.graph.nodes),
                            "kept_bytes_by_op": self.graph.kept_bytes_by_op()}
        return out


def prompt_ids(tokenizer: Any, prompt: str, context_length: int) -> np.ndarray:
    """The prompt's ids for inspection: at least 2 tokens (one input, one target), at most context_length + 1."""
    if not prompt:
        raise ValueError("the prompt is empty; give a text of at least two tokens, e.g. --prompt \"Every effort\"")
    ids = np.asarray(tokenizer.encode(prompt), dtype=np.int64)
    if len(ids) < 2:
        raise ValueError(f"the prompt {prompt!r} is {len(ids)} token; the next-token loss needs at least 2")
    if len(ids) > context_length + 1:
        raise ValueError(f"the prompt is {len(ids)} tokens, longer than the model's context of {context_length} "
                         f"(+1 for the last target); shorten it to at most {context_length + 1} tokens")
    return ids


def token_strings(tokenizer: Any, ids: Any) -> list[str]:
    """Each id decoded on its own (a byte-level piece that is not whole UTF-8 shows as U+FFFD)."""
    if hasattr(tokenizer, "decode_bytes"):
        return [tokenizer.decode_bytes([int(i)]).decode("utf-8", errors="replace") for i in ids]
    return [tokenizer.decode([int(i)]) for i in ids]


@contextlib.contextmanager
def _wrapped_forward(module: Module, wrap: Callable[[Callable], Callable]) -> Iterator[None]:
    """Temporarily replace one module instance's forward (Module.__call__ calls self.forward) by wrap(forward)."""
    module.forward = wrap(type(module).forward.__get__(module))
    try:
        yield
    finally:
        del module.forward


def attention_weights(att: MultiHeadAttention, x: Any) -> np.ndarray:
    """softmax(Q Kᵀ / √d_k + causal mask) of one MultiHeadAttention on input x (b, t, d): (b, heads, t, t)."""
    B = att.B
    b, t, _ = x.shape
    with B.no_grad():
        q = att.W_query(x).reshape(b, t, att.num_heads, att.head_dim).transpose(1, 2)  # (b, nh, t, hd)
        k = att.W_key(x).reshape(b, t, att.num_heads, att.head_dim).transpose(1, 2)    # (b, nh, t, hd)
        scores = (q @ k.transpose(2, 3)).masked_fill(att.mask[:t, :t], float("-inf"))  # (b, nh, t, t)
        return to_numpy_any(B.F.softmax(scores / math.sqrt(att.head_dim), dim=-1)).astype(np.float64)


class _Recorder:
    """While active: each block's attention maps, output statistics and GELU inputs; block 0's input and output."""

    def __init__(self, model: Any):
        self.model, self.attention, self.outputs, self.gelu_in = model, [], [], []
        self.block_io: tuple[Any, Any] | None = None

    @contextlib.contextmanager
    def active(self) -> Iterator["_Recorder"]:
        with contextlib.ExitStack() as stack:
            for i, block in enumerate(self.model.trf_blocks):
                stack.enter_context(_wrapped_forward(block, self._block(i)))
                for _, m in block.named_modules():
                    if isinstance(m, MultiHeadAttention):
                        stack.enter_context(_wrapped_forward(m, self._attention))
                    elif isinstance(m, GELU):
                        stack.enter_context(_wrapped_forward(m, self._gelu))
            yield self

    def _block(self, i: int) -> Callable[[Callable], Callable]:
        def wrap(forward: Callable) -> Callable:
            def run(x: Any, *args: Any, **kwargs: Any) -> Any:
                self.gelu_in.append([])
                out = forward(x, *args, **kwargs)
                self.outputs.append(to_numpy_any(out).astype(np.float64))
                if i == 0:
                    self.block_io = (x, out)
                return out
            return run
        return wrap

    def _attention(self, forward: Callable) -> Callable:
        def run(x: Any, *args: Any, **kwargs: Any) -> Any:
            self.attention.append(attention_weights(forward.__self__, x)[0])  # (nh, t, t) of the one sequence
            return forward(x, *args, **kwargs)
        return run

    def _gelu(self, forward: Callable) -> Callable:
        def run(x: Any) -> Any:
            self.gelu_in[-1].append(to_numpy_any(x))
            return forward(x)
        return run

    def activations(self) -> list[dict[str, float]]:
        """Per block: mean and std of its output, share of its GELU inputs below GELU_DEAD_BELOW."""
        stats = []
        for out, g in zip(self.outputs, self.gelu_in):
            below = float(np.mean(np.concatenate([a.ravel() for a in g]) < GELU_DEAD_BELOW)) if g else float("nan")
            stats.append({"mean": float(out.mean()), "std": float(out.std()), "gelu_below_-3": below})
        return stats


def next_token_loss(model: Any, ids: np.ndarray) -> Any:
    """Mean cross-entropy of predicting ids[1:] from ids[:-1] (one sequence), a backend scalar with a graph."""
    B = model.B
    logits = model(ids[None, :-1])                                           # (1, t, vocab)
    return B.F.cross_entropy(logits.flatten(0, 1), B.tensor(ids[1:]))        # (t, vocab) against (t,)


def gradients_by_name(model: Any) -> dict[str, np.ndarray]:
    """Every parameter's gradient as float64 NumPy (zeros where it has none: frozen, or unused)."""
    out = {}
    for name, p in model.named_parameters():
        g = getattr(p, "grad", None)
        out[name] = np.zeros(tuple(p.shape)) if g is None else to_numpy_any(g).astype(np.float64)
    return out


def reference_gradients(model: Any, ids: np.ndarray) -> dict[str, np.ndarray]:
    """The same loss's gradients from the torch backend in float64 on this model's weights (ImportError: no torch)."""
    import backends
    from ..model import GPTModel

    ref = GPTModel(model.cfg, backend=backends.get_backend("torch", dtype="float64"), seed=0)
    ref.load_state_dict(model.state_dict())
    ref.eval()
    next_token_loss(ref, ids).backward()
    return gradients_by_name(ref)


def relative_errors(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """‖ours − ref‖ / max(‖ref‖, REL_ERR_FLOOR · the largest ‖ref‖) per name (the floor: DESIGN §5, trap 1)."""
    floor = REL_ERR_FLOOR * max((float(np.linalg.norm(r)) for r in ref.values()), default=0.0)
    return {n: float(np.linalg.norm(ours[n] - ref[n]) / max(float(np.linalg.norm(ref[n])), floor, 1e-300))
            for n in ours}


def inspect_model(model: Any, ids: Any, tokenizer: Any = None, reference: bool = True) -> InspectReport:
    """One forward and backward pass of the next-token loss of `ids` (1-D) through `model`, measured.

    reference: also compute the torch float64 gradients and each parameter's relative error (None without torch).
    The model is put in eval mode (no dropout) and its gradients are overwritten.
    """
    import tinytensor

    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    model.eval()
    model.zero_grad()
    rec = _Recorder(model)
    with rec.active():
        loss = next_token_loss(model, ids)
    graph = None
    x, out = rec.block_io
    if isinstance(out, tinytensor.Tensor):
        graph = tinytensor.graph(out, params=dict(model.named_parameters()), stop_at=[x])
    loss.backward()
    grads = gradients_by_name(model)
    errs, notes, ref_name = {}, [], None
    if reference:
        try:
            errs, ref_name = relative_errors(grads, reference_gradients(model, ids)), "torch float64"
        except ImportError:
            notes.append("torch is not installed: no reference gradients (pip install \"tinygpt[torch]\")")
    if graph is None:
        notes.append("the autograd graph is drawn on the numpy/cupy backends only (torch keeps its own graph)")
    show = token_strings(tokenizer, ids) if tokenizer is not None else [str(int(i)) for i in ids]
    gradients = {n: {"norm": float(np.linalg.norm(g)), "rel_err_vs_torch": errs.get(n)} for n, g in grads.items()}
    return InspectReport(show[:-1], show[1:], [int(i) for i in ids], float(to_numpy_any(loss)), rec.attention,
                         gradients, rec.activations(), graph, ref_name, notes)


__all__ = ["InspectReport", "inspect_model", "prompt_ids", "token_strings", "attention_weights", "next_token_loss",
           "gradients_by_name", "reference_gradients", "relative_errors", "GELU_DEAD_BELOW", "REL_ERR_FLOOR"]
