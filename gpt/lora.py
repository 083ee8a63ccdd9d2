"""Low-rank adaptation (LoRA) of a GPTModel, the book's appendix E, written once for every backend.

Hu et al. 2021 ("LoRA: Low-Rank Adaptation of Large Language Models"): a frozen weight W is adapted by a low-rank
update, y = x Wᵀ + b + alpha · (x A B), with A (in, rank) and B (rank, out). The book initialises A like
torch.nn.Linear (kaiming-uniform with a = √5) and B with zeros, so training starts from the unchanged model.

Names. A wrapped layer keeps the original Linear under `linear` and adds `lora`, so the state_dict of a wrapped
GPT holds e.g. `trf_blocks.0.att.W_query.linear.weight`, `trf_blocks.0.att.W_query.lora.A` and
`trf_blocks.0.att.W_query.lora.B`. `merge_lora` folds alpha · (A B)ᵀ into each weight (our Linear stores
torch's (out, in) layout, hence the transpose) and puts plain Linears back, so the keys are the book's again
(`trf_blocks.0.att.W_query.weight`) and the model exports as a plain GPT-2 (gpt.weights.export_hf_gpt2).

One naming detail: every gpt Module keeps its backend in the attribute `B`, so the LoRA matrix the book calls `B`
lives in the attribute `lora_B`; the state_dict still names it `B`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import numpy as np

from backends.base import Backend
from .nn import Linear, Module, ModuleList, as_rng, to_numpy_any


def kaiming_uniform(shape: tuple[int, int], a: float, rng: np.random.Generator) -> np.ndarray:
    """torch.nn.init.kaiming_uniform_(w, a) in NumPy: U(−bound, bound), bound = gain · √(3 / fan_in).

    As torch, fan_in is shape[1] for a 2-D tensor (for the book's A of shape (in_dim, rank) that is the rank),
    and gain = √(2 / (1 + a²)) (leaky-ReLU gain); with a = √5 the bound is 1 / √fan_in.
    """
    fan_in = shape[1]
    gain = math.sqrt(2.0 / (1.0 + a * a))
    bound = gain * math.sqrt(3.0 / fan_in)
    return rng.uniform(-bound, bound, size=shape)


class LoRALayer(Module):
    """alpha · (x A B): A (in_dim, rank) kaiming-uniform(a = √5), B (rank, out_dim) zeros (book listing E.5).

    Parameters are named `A` and `B` in the state_dict (the attribute holding B is `lora_B`; see the module doc).
    """

    def __init__(self, B: Backend, in_dim: int, out_dim: int, rank: int, alpha: float,
                 rng: np.random.Generator | None = None):
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
            raise ValueError(f"LoRA rank={rank!r} must be a positive integer (the book uses 16)")
        if not math.isfinite(float(alpha)):
            raise ValueError(f"LoRA alpha={alpha!r} must be a finite number (the book uses 16)")
        self.B, self.in_dim, self.out_dim = B, int(in_dim), int(out_dim)
        self.rank, self.alpha = int(rank), float(alpha)
        self.A = B.parameter(kaiming_uniform((self.in_dim, self.rank), math.sqrt(5), as_rng(rng)))
        self.lora_B = B.parameter(np.zeros((self.rank, self.out_dim)))

    def _entries(self) -> Iterator[tuple[str, Any]]:
        # the book's names A and B (the attribute `B` is the backend, which Module's walk skips)
        yield "A", self.A
        yield "B", self.lora_B

    def forward(self, x: Any) -> Any:
        return (x @ self.A @ self.lora_B) * self.alpha          # (..., in) -> (..., rank) -> (..., out)


class LinearWithLoRA(Module):
    """linear(x) + alpha · (x A B): a Linear and its LoRA update (book listing E.6)."""

    def __init__(self, linear: Linear, rank: int, alpha: float, rng: np.random.Generator | None = None):
        if not isinstance(linear, Linear):
            raise TypeError(f"LinearWithLoRA wraps a gpt.nn.Linear, got {type(linear).__name__}")
        self.B = linear.B
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.linear = linear
        self.lora = LoRALayer(linear.B, linear.in_features, linear.out_features, rank, alpha, rng=rng)

    def forward(self, x: Any) -> Any:
        return self.linear(x) + self.lora(x)

    def merged_weight(self) -> np.ndarray:
        """W + alpha · (A B)ᵀ as a NumPy (out, in) array: the one weight computing the same function."""
        A, Bm = to_numpy_any(self.lora.A), to_numpy_any(self.lora.lora_B)
        W = to_numpy_any(self.linear.weight)
        return W + self.lora.alpha * (A @ Bm).T                 # (in, rank) @ (rank, out) -> (in, out), transposed


def _replace_children(module: Module, fn: Callable[[Module], Module]) -> None:
    """Replace every direct sub-module m of `module` by fn(m) (attributes, lists, dicts, ModuleList items)."""
    if isinstance(module, ModuleList):
        module._items[:] = [fn(m) if isinstance(m, Module) else m for m in module._items]
        return
    for key, value in list(vars(module).items()):
        if key == "B" or key.startswith("_"):
            continue
        if isinstance(value, Module):
            setattr(module, key, fn(value))
        elif isinstance(value, list):
            value[:] = [fn(v) if isinstance(v, Module) else v for v in value]
        elif isinstance(value, tuple):
            setattr(module, key, tuple(fn(v) if isinstance(v, Module) else v for v in value))
        elif isinstance(value, dict):
            for k, v in list(value.items()):
                if isinstance(v, Module):
                    value[k] = fn(v)


def freeze(model: Module) -> Module:
    """Set requires_grad = False on every parameter (they stay in state_dict; optimizers skip them)."""
    for p in model.parameters():
        p.requires_grad = False
    return model


def replace_linear_with_lora(model: Module, rank: int, alpha: float, rng: np.random.Generator | None = None,
                             freeze_base: bool = True) -> Module:
    """Wrap every Linear in `model` (attention projections, feed-forward, out_head) in LinearWithLoRA, in place.

    As the book does before calling it, the model's own parameters are frozen first (freeze_base), so only the
    LoRA matrices are trainable. `rng` draws every A in definition order (default: np.random.default_rng(123)).
    """
    rng = np.random.default_rng(123) if rng is None else rng
    if freeze_base:
        freeze(model)

    def convert(m: Module) -> Module:
        if isinstance(m, LinearWithLoRA):
            return m                           # already adapted: wrapping twice would stack two updates
        if isinstance(m, Linear):
            return LinearWithLoRA(m, rank, alpha, rng=rng)
        _replace_children(m, convert)
        return m

    _replace_children(model, convert)
    return model


def lora_layers(model: Module) -> list[tuple[str, LinearWithLoRA]]:
    """(name, layer) for every LinearWithLoRA in the model."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LinearWithLoRA)]


def merge_lora(model: Module) -> Module:
    """Fold each LoRA update into its base weight and restore plain Linears, in place (book keys again).

    The merged weight is a new parameter with the base weight's requires_grad. A LoRA'd head whose weight was tied
    to the token embedding stops being tied (the update changes only the head), and model.cfg.tie_weights is then
    cleared so the state_dict (with its own out_head.weight) loads into GPTModel(model.cfg).
    """
    layers = lora_layers(model)
    if not layers:
        return model
    counts: dict[int, int] = {}
    for _, _, p in model._walk():
        counts[id(p)] = counts.get(id(p), 0) + 1
    untied = False

    def convert(m: Module) -> Module:
        nonlocal untied
        if isinstance(m, LinearWithLoRA):
            base = m.linear
            untied |= counts.get(id(base.weight), 1) > 1
            weight = base.B.parameter(m.merged_weight(), requires_grad=bool(base.weight.requires_grad))
            merged = Linear(base.B, base.in_features, base.out_features, bias=False, weight=weight)
            merged.bias = base.bias
            return merged
        _replace_children(m, convert)
        return m

    _replace_children(model, convert)
    if untied and getattr(getattr(model, "cfg", None), "tie_weights", False):
        model.cfg.tie_weights = False
    return model


__all__ = ["LoRALayer", "LinearWithLoRA", "replace_linear_with_lora", "merge_lora", "freeze", "lora_layers",
           "kaiming_uniform"]
