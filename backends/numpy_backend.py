"""The numpy backend: tinytensor on NumPy arrays (and the base of the cupy backend, which swaps `xp`)."""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Sequence

import numpy as np

import tinytensor as tt
from tinytensor import optim

from .base import Backend, NullGradScaler, check_dtype


class NumpyBackend(Backend):
    """tinytensor on NumPy, on the CPU; `B.F` is tinytensor.functional."""

    name = "numpy"
    xp = np

    def __init__(self, dtype: str = "float32", device: str | None = None):
        from tinytensor import functional
        from tinytensor.malloc import tune_malloc

        self.F = functional
        self.dtype_name = check_dtype(dtype, ("float32", "float64"), self.name)
        tune_malloc()  # freed activations stay in the heap: no page faults every step (tinytensor/malloc.py)
        self.device = self._check_device(device)

    def _check_device(self, device: str | None) -> str:
        if device not in (None, "cpu"):
            raise ValueError(f"the numpy backend runs on the CPU only, not device {device!r}; use --backend cupy "
                             f"or torch for a GPU")
        return "cpu"

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.dtype_name)

    def _array(self, data: Any, dtype: str | None = None):
        if isinstance(data, tt.Tensor):
            data = data.data
        arr = self.xp.asarray(data)
        if dtype is not None:
            return arr.astype(check_dtype(dtype, ("float32", "float64", "int64", "int32", "bool"), self.name),
                              copy=False)
        if arr.dtype.kind == "f":
            return arr.astype(self.dtype, copy=False)
        if arr.dtype.kind in "iu":
            return arr.astype(np.int64, copy=False)
        return arr

    def tensor(self, data: Any, dtype: str | None = None, requires_grad: bool = False) -> tt.Tensor:
        return tt.Tensor(self._array(data, dtype), requires_grad=requires_grad)

    def to_numpy(self, t: Any) -> np.ndarray:
        return t.numpy() if isinstance(t, tt.Tensor) else np.asarray(t)

    def parameter(self, array: np.ndarray, requires_grad: bool = True) -> tt.Parameter:
        return tt.Parameter(self._array(array).copy(), requires_grad=requires_grad)

    def is_parameter(self, x: Any) -> bool:
        return isinstance(x, tt.Parameter)

    def assign(self, param: Any, array: Any) -> None:
        src = self._array(array.data if isinstance(array, tt.Tensor) else array)
        if tuple(src.shape) != param.shape:
            raise ValueError(f"cannot assign an array of shape {tuple(src.shape)} to a parameter of shape "
                             f"{param.shape}")
        param.data[...] = src.astype(param.dtype, copy=False)

    def zeros(self, shape: Sequence[int], dtype: str | None = None) -> tt.Tensor:
        return tt.Tensor(self.xp.zeros(tuple(shape), dtype=dtype or self.dtype))

    def cat(self, tensors: Sequence[Any], dim: int = 0) -> tt.Tensor:
        return tt.cat(tensors, dim)

    def stack(self, tensors: Sequence[Any], dim: int = 0) -> tt.Tensor:
        return tt.stack(tensors, dim)

    def where(self, cond: Any, a: Any, b: Any) -> tt.Tensor:
        return tt.where(cond, a, b)

    def rotary_embedding(self, x: Any, cos: Any, sin: Any) -> tt.Tensor:
        return self.F.rotary_embedding(x, cos, sin)

    def AdamW(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
              eps: float = 1e-8, weight_decay: float = 0.01, fused: bool = False) -> optim.AdamW:
        # `fused` changes nothing here: tinytensor's AdamW already updates each tensor in one vectorised pass
        return optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def SGD(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0,
            weight_decay: float = 0.0) -> optim.SGD:
        return optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    def no_grad(self) -> tt.no_grad:
        return tt.no_grad()

    def manual_seed(self, seed: int) -> None:
        from tinytensor import random as tt_random

        tt_random.manual_seed(seed)

    def clip_grad_norm(self, params: Iterable[Any], max_norm: float) -> float:
        return optim.clip_grad_norm(params, max_norm)

    def autocast(self, dtype: str | None) -> contextlib.AbstractContextManager:
        if dtype is None or str(dtype) == self.dtype_name:
            return contextlib.nullcontext()
        raise ValueError(f"autocast to {dtype} is available on the torch backend only; the {self.name} backend "
                         f"computes in {self.dtype_name} (pick it with --dtype)")

    def module(self, model: Any) -> Any:
        return model

    def grad_scaler(self, enabled: bool = False) -> NullGradScaler:
        if enabled:
            raise ValueError(f"loss scaling serves float16 autocast, which the {self.name} backend does not have; "
                             f"use --backend torch with --autocast float16, or drop the grad scaler")
        return NullGradScaler()

    def compile(self, module: Any) -> tuple[Any, str | None]:
        return module, (f"torch.compile is unavailable on the {self.name} backend (it compiles torch graphs): "
                        f"running eagerly; use --backend torch to compile")

    def allow_tf32(self, enabled: bool = True) -> str | None:
        return (f"TF32 matmuls are a torch CUDA option; the {self.name} backend computes in {self.dtype_name}"
                if enabled else None)

    def synchronize(self) -> None:
        return None

    def flash_attention(self, query: Any, key: Any, value: Any, dropout_p: float = 0.0,
                        is_causal: bool = False, enable_gqa: bool = False) -> Any:
        return self.F.flash_attention(query, key, value, dropout_p=dropout_p, is_causal=is_causal,
                                      enable_gqa=enable_gqa)
