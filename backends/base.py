"""The one interface that `gpt/` is written against, implemented by the numpy, cupy and torch backends.

Vocabulary is PyTorch's (DESIGN.md §4.2): tensors have torch's methods, `B.F` has torch.nn.functional's names and
keywords (including `rms_norm`, `silu` and `scaled_dot_product_attention(..., enable_gqa=)`); the one op torch has
no functional for, rotary position embedding, is a backend method, `B.rotary_embedding(x, cos, sin)`. A backend is a value passed to every constructor, never a global, so several coexist in one process.
Every public method here must exist on every backend with the same signature (tests/backends/test_conformance.py).
"""
from __future__ import annotations

import abc
from contextlib import AbstractContextManager
from typing import Any, Iterable, Sequence

import numpy as np

FLOAT_DTYPES = ("float32", "float64", "bfloat16", "float16")


class Backend(abc.ABC):
    """An engine for the model code: tensor creation, functional ops (`F`), optimizers and training helpers."""

    name: str          # "numpy" | "cupy" | "torch"
    dtype_name: str    # default float dtype for parameters and activations, e.g. "float32"
    device: str        # "cpu" or "cuda[:N]"
    F: Any             # torch.nn.functional-compatible namespace
    supports_ddp: bool = False   # True where PyTorch's DistributedDataParallel can wrap B.module(model)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} dtype={self.dtype_name!r} device={self.device!r}>"

    # ---- tensors ----
    @property
    @abc.abstractmethod
    def dtype(self) -> Any:
        """The default float dtype as the engine's own object (np.dtype or torch.dtype)."""

    @abc.abstractmethod
    def tensor(self, data: Any, dtype: str | None = None, requires_grad: bool = False) -> Any:
        """A tensor from an array, list or number: floats become the backend dtype, integers int64, bools bool."""

    @abc.abstractmethod
    def to_numpy(self, t: Any) -> np.ndarray:
        """A NumPy array holding `t`'s values (a host copy for GPU tensors; float32 for bfloat16/float16)."""

    @abc.abstractmethod
    def parameter(self, array: np.ndarray, requires_grad: bool = True) -> Any:
        """A native parameter (torch.nn.Parameter / tinytensor.Parameter) initialised from a NumPy array."""

    @abc.abstractmethod
    def is_parameter(self, x: Any) -> bool:
        """True for this backend's parameter type (recognised by type, not by requires_grad)."""

    @abc.abstractmethod
    def assign(self, param: Any, array: Any) -> None:
        """Overwrite a parameter's values in place from a NumPy array or tensor of the same shape (no graph)."""

    @abc.abstractmethod
    def zeros(self, shape: Sequence[int], dtype: str | None = None) -> Any:
        """A tensor of zeros (e.g. a pre-allocated KV cache)."""

    @abc.abstractmethod
    def cat(self, tensors: Sequence[Any], dim: int = 0) -> Any:
        """torch.cat."""

    @abc.abstractmethod
    def stack(self, tensors: Sequence[Any], dim: int = 0) -> Any:
        """torch.stack."""

    @abc.abstractmethod
    def where(self, cond: Any, a: Any, b: Any) -> Any:
        """torch.where(cond, a, b)."""

    # ---- ops torch.nn.functional lacks ----
    @abc.abstractmethod
    def rotary_embedding(self, x: Any, cos: Any, sin: Any) -> Any:
        """Rotary position embedding (RoPE, Su et al. 2021) in the "rotate half" layout of Hugging Face's Llama:
        x ⊙ cos + rotate_half(x) ⊙ sin with rotate_half(x) = cat(−x₂, x₁) over the halves of the last dim.

        x: (b, h, t, hd) queries or keys; cos, sin: the tables for x's t positions, (t, hd) or any shape that
        broadcasts to x without enlarging it. hd must be even. Differentiable in x (and in the tables). numpy/cupy:
        tinytensor's fused op (backward: the transposed rotation); torch: the same formula in torch ops.
        """

    # ---- training ----
    @abc.abstractmethod
    def AdamW(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
              eps: float = 1e-8, weight_decay: float = 0.01, fused: bool = False) -> Any:
        """An optimizer with torch.optim.AdamW's semantics (param groups as dicts allowed); `fused`: torch's
        single-kernel update (tinytensor's AdamW already updates each tensor in one vectorised pass)."""

    @abc.abstractmethod
    def SGD(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0) -> Any:
        """An optimizer with torch.optim.SGD's semantics."""

    @abc.abstractmethod
    def no_grad(self) -> AbstractContextManager:
        """A context in which no graph is recorded."""

    @abc.abstractmethod
    def manual_seed(self, seed: int) -> None:
        """Seed the engine's own random numbers (dropout masks)."""

    @abc.abstractmethod
    def clip_grad_norm(self, params: Iterable[Any], max_norm: float) -> float:
        """Scale gradients so their global L2 norm is at most max_norm; return the norm before clipping."""

    @abc.abstractmethod
    def autocast(self, dtype: str | None) -> AbstractContextManager:
        """Mixed precision for the enclosed forward pass; None or the backend's own dtype is a no-op."""

    @abc.abstractmethod
    def module(self, model: Any) -> Any:
        """torch: an nn.Module view of `model` sharing its parameters (for compile/DDP); numpy/cupy: the model."""

    @abc.abstractmethod
    def grad_scaler(self, enabled: bool = False) -> Any:
        """A loss scaler for float16 autocast (torch.amp.GradScaler's scale/unscale_/step/update); disabled: a
        pass-through with the same methods, so the trainer calls it unconditionally."""

    @abc.abstractmethod
    def compile(self, module: Any) -> tuple[Any, str | None]:
        """(`module` compiled with torch.compile, None) where a compiler is available, else (`module`, a note
        saying why it runs eagerly)."""

    @abc.abstractmethod
    def allow_tf32(self, enabled: bool = True) -> str | None:
        """Let float32 matmuls use TF32 tensor cores (process-wide); a note when that has no effect here."""

    @abc.abstractmethod
    def synchronize(self) -> None:
        """Wait for queued device work (for timing); a no-op on the CPU."""

    def device_name(self) -> str:
        """The accelerator's name as its driver reports it (e.g. "NVIDIA H100 80GB HBM3"); "cpu" on the CPU."""
        return "cpu"

    def flash_attention(self, query: Any, key: Any, value: Any, dropout_p: float = 0.0,
                        is_causal: bool = False) -> Any:
        """Memory-efficient attention (the FlashAttention algorithm): the engine's tiled kernel where it has one,
        else `F.scaled_dot_product_attention` (torch's already picks such a kernel itself)."""
        return self.F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p, is_causal=is_causal)


class NullGradScaler:
    """torch.amp.GradScaler's interface doing nothing: no scaling, step() is optimizer.step()."""

    def is_enabled(self) -> bool:
        return False

    def scale(self, loss: Any) -> Any:
        return loss

    def unscale_(self, optimizer: Any) -> None:
        return None

    def step(self, optimizer: Any) -> None:
        optimizer.step()

    def update(self) -> None:
        return None

    def state_dict(self) -> dict:
        return {}


def any_to_numpy(x: Any) -> np.ndarray:
    """A NumPy array from a NumPy array, a tinytensor tensor, a torch tensor (bfloat16 -> float32) or a CuPy array,
    whichever backend made it (checkpoints and cross-backend copies go through NumPy)."""
    if isinstance(x, np.ndarray):
        return x
    module = type(x).__module__
    if module.startswith("torch"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":  # NumPy has no bfloat16
            x = x.float()
        return x.numpy()
    if module.startswith("cupy"):
        return x.get()
    if hasattr(x, "numpy"):  # tinytensor.Tensor (on NumPy or CuPy)
        return np.asarray(x.numpy())
    return np.asarray(x)


def check_dtype(dtype: str, allowed: Sequence[str], backend: str) -> str:
    """Normalise a dtype name and refuse the ones this backend cannot compute in, naming the choices."""
    name = str(dtype).replace("torch.", "")
    if name not in allowed:
        raise ValueError(f"dtype {dtype!r} is not supported by the {backend} backend; choose one of {list(allowed)}")
    return name
