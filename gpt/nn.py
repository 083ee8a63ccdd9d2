"""A micrograd-sized `Module` base and the layers the GPT is built from, written once for every backend.

`Module` walks its attributes in definition order to find parameters and sub-modules (DESIGN.md §4.4), the way
`torch.nn.Module` does, so the names come out as the book's (`trf_blocks.0.att.W_query.weight`). Parameters are the
backend's native tensors, recognised by `B.is_parameter` (§4.3). Layers draw their initial weights as NumPy arrays
from a seeded `np.random.Generator` and only then hand them to the backend, so one seed gives bit-identical weights
on numpy, cupy and torch. Initialisation follows GPT-2: N(0, 0.02) weights, zero biases (Radford et al. 2019).
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from backends.base import Backend, any_to_numpy


def to_numpy_any(x: Any) -> np.ndarray:
    """A NumPy array from a NumPy array or any backend's tensor (backends.base.any_to_numpy: the engines are told
    apart there, not here)."""
    return any_to_numpy(x)


class Module:
    """Base class: `__call__` runs `forward`; parameters and sub-modules are found by walking the attributes.

    A module that owns parameters directly must store its backend as `self.B` (it is how parameters are recognised).
    """

    training: bool = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} defines no forward()")

    # ---- the walk ----
    def _entries(self) -> Iterator[tuple[str, Any]]:
        """(name, value) for every attribute value, list item and dict value, in definition order."""
        for key, value in vars(self).items():
            if key == "B" or key.startswith("_"):
                continue
            if isinstance(value, (list, tuple)):
                yield from ((f"{key}.{i}", v) for i, v in enumerate(value))
            elif isinstance(value, dict):
                yield from ((f"{key}.{k}", v) for k, v in value.items())
            else:
                yield key, value

    def _is_param(self, value: Any) -> bool:
        B = getattr(self, "B", None)
        return B is not None and B.is_parameter(value)

    def _walk(self, prefix: str = "") -> Iterator[tuple[str, "Module", Any]]:
        """(full name, owning module, parameter) for every parameter, tied ones once per name."""
        for name, value in self._entries():
            if isinstance(value, Module):
                yield from value._walk(f"{prefix}{name}.")
            elif self._is_param(value):
                yield prefix + name, self, value

    def named_parameters(self, prefix: str = "", remove_duplicate: bool = True) -> Iterator[tuple[str, Any]]:
        """(name, parameter) pairs in definition order; a tied parameter appears once, under its first name."""
        seen: set[int] = set()
        for name, _, p in self._walk(f"{prefix}." if prefix else ""):
            if remove_duplicate and id(p) in seen:
                continue
            seen.add(id(p))
            yield name, p

    def parameters(self) -> Iterator[Any]:
        """Every parameter once (frozen ones included)."""
        return (p for _, p in self.named_parameters())

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """(name, module) for this module ("") and every sub-module, depth first."""
        yield prefix, self
        for name, value in self._entries():
            if isinstance(value, Module):
                yield from value.named_modules(f"{prefix}.{name}" if prefix else name)

    def train(self, mode: bool = True) -> "Module":
        """Set training mode (dropout active) on this module and every sub-module."""
        for _, m in self.named_modules():
            m.training = bool(mode)
        return self

    def eval(self) -> "Module":
        """Inference mode: dropout off."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (set to None, as torch does by default)."""
        for p in self.parameters():
            p.grad = None

    def num_parameters(self, trainable_only: bool = False) -> int:
        """The number of scalar parameters, tied weights counted once."""
        return sum(int(np.prod(p.shape)) for p in self.parameters() if p.requires_grad or not trainable_only)

    # ---- state ----
    def state_dict(self) -> dict[str, Any]:
        """{name: detached native tensor} for every parameter (frozen ones included, tied ones once; no buffers)."""
        return {name: p.detach() for name, p in self.named_parameters()}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Copy values in by name from NumPy arrays or any backend's tensors (converted through NumPy).

        strict: every parameter must be given and nothing else (a tied parameter's second name is optional).
        A shape mismatch always raises ValueError naming the key and both shapes.
        """
        owners: dict[str, tuple[Module, Any]] = {}
        aliases: dict[str, str] = {}  # second name of a tied parameter -> its first name
        first_name: dict[int, str] = {}
        for name, owner, p in self._walk():
            if id(p) in first_name:
                aliases[name] = first_name[id(p)]
            else:
                first_name[id(p)] = name
                owners[name] = (owner, p)
        given = dict(state_dict)
        for alias, name in aliases.items():
            if alias not in given:
                continue
            value = given.pop(alias)
            if name not in given:
                given[name] = value
            elif not np.array_equal(to_numpy_any(value), to_numpy_any(given[name])):
                raise ValueError(f"{alias} differs from {name}, but this model ties them to one parameter; "
                                 f"build the model untied (tie_weights=False) to load both")
        missing = [k for k in owners if k not in given]
        unexpected = [k for k in given if k not in owners]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise KeyError(f"load_state_dict into {type(self).__name__}: {'; '.join(parts)} "
                           f"(pass strict=False to load a subset)")
        arrays = {}
        for name, value in given.items():
            if name not in owners:
                continue
            array = to_numpy_any(value)
            expected = tuple(owners[name][1].shape)
            if tuple(array.shape) != expected:
                raise ValueError(f"{name}: expected {expected}, got {tuple(array.shape)}")
            arrays[name] = array
        for name, array in arrays.items():  # shapes all checked first: a failed load changes nothing
            owner, p = owners[name]
            owner.B.assign(p, array)


class ModuleList(Module):
    """A list of modules whose parameters are named by index (`trf_blocks.0.…`), like torch.nn.ModuleList."""

    def __init__(self, modules: list[Module] | tuple[Module, ...] = ()):
        self._items = list(modules)

    def _entries(self) -> Iterator[tuple[str, Any]]:
        return ((str(i), m) for i, m in enumerate(self._items))

    def __getitem__(self, i: int) -> Module:
        return self._items[i]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._items)

    def append(self, module: Module) -> "ModuleList":
        self._items.append(module)
        return self


class Sequential(ModuleList):
    """Modules applied in order; parameter names are `<index>.<name>`, as torch.nn.Sequential's."""

    def __init__(self, *modules: Module):
        super().__init__(modules)

    @property
    def layers(self) -> list[Module]:
        return self._items

    def forward(self, x: Any) -> Any:
        for m in self._items:
            x = m(x)
        return x


def as_rng(rng: np.random.Generator | None) -> np.random.Generator:
    """`rng`, or a fresh unseeded generator when None (pass one for reproducible weights)."""
    return np.random.default_rng() if rng is None else rng


class Linear(Module):
    """y = x Wᵀ + b with `weight` (out, in) as torch.nn.Linear; weight ~ N(0, std²), bias zero (GPT-2's init).

    `weight`: an existing parameter to use instead of drawing one (weight tying).
    """

    def __init__(self, B: Backend, in_features: int, out_features: int, bias: bool = True,
                 rng: np.random.Generator | None = None, std: float = 0.02, weight: Any = None):
        self.B, self.in_features, self.out_features = B, in_features, out_features
        if weight is None:
            weight = B.parameter(as_rng(rng).normal(0.0, std, size=(out_features, in_features)))
        elif tuple(weight.shape) != (out_features, in_features):
            raise ValueError(f"a shared weight of shape {tuple(weight.shape)} cannot serve a Linear({in_features}, "
                             f"{out_features}), which needs ({out_features}, {in_features})")
        self.weight = weight
        self.bias = B.parameter(np.zeros(out_features)) if bias else None

    def forward(self, x: Any) -> Any:
        return self.B.F.linear(x, self.weight, self.bias)


class Embedding(Module):
    """A lookup table `weight` (num_embeddings, embedding_dim) ~ N(0, std²) (GPT-2's init for wte and wpe)."""

    def __init__(self, B: Backend, num_embeddings: int, embedding_dim: int, rng: np.random.Generator | None = None,
                 std: float = 0.02):
        self.B, self.num_embeddings, self.embedding_dim = B, num_embeddings, embedding_dim
        self.weight = B.parameter(as_rng(rng).normal(0.0, std, size=(num_embeddings, embedding_dim)))

    def forward(self, ids: Any) -> Any:
        return self.B.F.embedding(ids, self.weight)


class LayerNorm(Module):
    """The book's LayerNorm (ch. 4): (x − mean) / √(var + eps) · scale + shift over the last dim (biased var)."""

    def __init__(self, B: Backend, emb_dim: int, eps: float = 1e-5):
        self.B, self.emb_dim, self.eps = B, emb_dim, eps
        self.scale = B.parameter(np.ones(emb_dim))
        self.shift = B.parameter(np.zeros(emb_dim))

    def forward(self, x: Any) -> Any:
        return self.B.F.layer_norm(x, (self.emb_dim,), self.scale, self.shift, self.eps)


class RMSNorm(Module):
    """x / √(mean(x²) + eps) · scale over the last dim (Zhang & Sennrich 2019): LayerNorm without the mean and the
    shift, the norm of Llama and Qwen3 (also their per-head QK-norm)."""

    def __init__(self, B: Backend, emb_dim: int, eps: float = 1e-6):
        self.B, self.emb_dim, self.eps = B, emb_dim, eps
        self.scale = B.parameter(np.ones(emb_dim))

    def forward(self, x: Any) -> Any:
        return self.B.F.rms_norm(x, (self.emb_dim,), self.scale, self.eps)


class Dropout(Module):
    """Zero each element with probability p while training, scaling the rest by 1/(1 − p); identity in eval()."""

    def __init__(self, B: Backend, p: float):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability p={p} must lie in [0, 1)")
        self.B, self.p = B, float(p)

    def forward(self, x: Any) -> Any:
        return self.B.F.dropout(x, self.p, training=self.training)


__all__ = ["Module", "ModuleList", "Sequential", "Linear", "Embedding", "LayerNorm", "RMSNorm", "Dropout",
           "to_numpy_any"]
