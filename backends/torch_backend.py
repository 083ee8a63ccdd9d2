"""The torch backend: PyTorch itself, so `B.F` *is* torch.nn.functional and the model code's reference."""
from __future__ import annotations

import contextlib
import importlib.util
import shutil
from typing import Any, Iterable, Sequence

import numpy as np

from .base import Backend, check_dtype


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError('the torch backend needs PyTorch: pip install "tinygpt[torch]", or use '
                          '--backend numpy') from None
    return torch


class TorchBackend(Backend):
    """PyTorch tensors and autograd; parameters are torch.nn.Parameter."""

    name = "torch"
    supports_ddp = True

    def __init__(self, dtype: str = "float32", device: str | None = None):
        torch = self.torch = _import_torch()
        self.F = torch.nn.functional
        self.dtype_name = check_dtype(dtype, ("float32", "float64", "bfloat16", "float16"), self.name)
        device = device or "cpu"
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} was asked for, but this PyTorch sees no CUDA device; "
                               f"use --device cpu")
        try:
            self.device = str(torch.device(device))
        except RuntimeError:
            raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from None

    @property
    def dtype(self):
        return getattr(self.torch, self.dtype_name)

    def tensor(self, data: Any, dtype: str | None = None, requires_grad: bool = False):
        torch = self.torch
        if isinstance(data, torch.Tensor):
            t = data.to(self.device)
        else:
            t = torch.as_tensor(np.asarray(data), device=self.device)
        if dtype is not None:
            t = t.to(getattr(torch, str(dtype).replace("torch.", "")))
        elif t.is_floating_point():
            t = t.to(self.dtype)
        elif t.dtype not in (torch.bool,):
            t = t.long()
        return t.requires_grad_(requires_grad) if requires_grad else t

    def to_numpy(self, t: Any) -> np.ndarray:
        t = t.detach()
        if t.dtype in (self.torch.bfloat16, self.torch.float16):
            t = t.float()
        return t.cpu().numpy()

    def parameter(self, array: np.ndarray, requires_grad: bool = True):
        data = self.torch.as_tensor(np.asarray(array), device=self.device).to(self.dtype).clone()
        return self.torch.nn.Parameter(data, requires_grad=requires_grad)

    def is_parameter(self, x: Any) -> bool:
        return isinstance(x, self.torch.nn.Parameter)

    def assign(self, param: Any, array: Any) -> None:
        src = array if isinstance(array, self.torch.Tensor) else self.torch.as_tensor(np.asarray(array))
        if tuple(src.shape) != tuple(param.shape):
            raise ValueError(f"cannot assign an array of shape {tuple(src.shape)} to a parameter of shape "
                             f"{tuple(param.shape)}")
        with self.torch.no_grad():
            param.copy_(src.to(device=param.device, dtype=param.dtype))

    def zeros(self, shape: Sequence[int], dtype: str | None = None):
        dt = getattr(self.torch, dtype) if dtype else self.dtype
        return self.torch.zeros(tuple(shape), dtype=dt, device=self.device)

    def cat(self, tensors: Sequence[Any], dim: int = 0):
        return self.torch.cat(list(tensors), dim=dim)

    def stack(self, tensors: Sequence[Any], dim: int = 0):
        return self.torch.stack(list(tensors), dim=dim)

    def where(self, cond: Any, a: Any, b: Any):
        return self.torch.where(cond, a, b)

    def rotary_embedding(self, x: Any, cos: Any, sin: Any):
        from tinytensor.functional import check_rotary_shapes  # the same shape rules and messages as numpy's

        check_rotary_shapes(x.shape, cos.shape, sin.shape)
        x1, x2 = x.chunk(2, dim=-1)  # the halves (.., hd/2) each
        return x * cos + self.torch.cat((-x2, x1), dim=-1) * sin

    def AdamW(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
              eps: float = 1e-8, weight_decay: float = 0.01, fused: bool = False):
        # fused=None (not False) lets torch pick its default foreach implementation when fusion is not asked for
        return self.torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      fused=True if fused else None)

    def SGD(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0):
        return self.torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    def no_grad(self) -> contextlib.AbstractContextManager:
        return self.torch.no_grad()

    def manual_seed(self, seed: int) -> None:
        self.torch.manual_seed(seed)

    def clip_grad_norm(self, params: Iterable[Any], max_norm: float) -> float:
        return float(self.torch.nn.utils.clip_grad_norm_(list(params), max_norm))

    def autocast(self, dtype: str | None) -> contextlib.AbstractContextManager:
        if dtype is None or str(dtype) == self.dtype_name:
            return contextlib.nullcontext()
        name = check_dtype(dtype, ("bfloat16", "float16"), "torch autocast")
        return self.torch.autocast(device_type=self.device.split(":")[0], dtype=getattr(self.torch, name))

    def module(self, model: Any):
        return TorchModuleView.wrap(self.torch, model, self)

    def grad_scaler(self, enabled: bool = False):
        # torch.amp.GradScaler(enabled=False) is itself the pass-through, so both cases are torch's own object
        return self.torch.amp.GradScaler(self.device.split(":")[0], enabled=bool(enabled))

    def compile(self, module: Any) -> tuple[Any, str | None]:
        missing = self._compiler_missing()
        if missing:
            return module, f"torch.compile is unavailable ({missing}): running eagerly"
        try:
            return self.torch.compile(module), None
        except RuntimeError as e:   # e.g. a Python version this torch cannot compile for
            return module, f"torch.compile is unavailable ({e}): running eagerly"

    def _compiler_missing(self) -> str | None:
        """Why Inductor could not build kernels here (None if it can): Triton on CUDA, a C++ compiler on the CPU."""
        if self.device.startswith("cuda"):
            return None if importlib.util.find_spec("triton") else "no Triton for CUDA kernels: pip install triton"
        cxx = self._cpp_compiler()
        return None if cxx and shutil.which(cxx) else "no C++ compiler for CPU kernels: install g++ or set CXX"

    def _cpp_compiler(self) -> str | None:
        try:
            from torch._inductor import cpp_builder

            return cpp_builder.get_cpp_compiler()
        except Exception:   # a private helper: any failure means we cannot tell, so look for the usual name
            return "g++"

    def allow_tf32(self, enabled: bool = True) -> str | None:
        # process-wide switches (torch.backends), as in nanoGPT's train.py
        self.torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
        self.torch.backends.cudnn.allow_tf32 = bool(enabled)
        if enabled and not self.device.startswith("cuda"):
            return "TF32 applies to CUDA matmuls only; it has no effect on the CPU"
        return None

    def device_name(self) -> str:
        return self.torch.cuda.get_device_name(self.device) if self.device.startswith("cuda") else "cpu"

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize(self.device)


class TorchModuleView:
    """Builds a torch.nn.Module that registers the model's *own* Parameter objects (DESIGN.md §4.5).

    `torch.compile`, autocast, DDP and torch.optim then see the same tensors the model computes with.
    ParameterDict keys may not contain '.', so names use '/' instead.
    """

    @staticmethod
    def wrap(torch, model: Any, backend: TorchBackend):
        class ModelView(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = [model]  # a list hides it from nn.Module's attribute scan
                self.params = torch.nn.ParameterDict(
                    {name.replace(".", "/"): p for name, p in model.named_parameters()})

            def forward(self, *args, **kwargs):
                if getattr(self.model[0], "training", self.training) != self.training:
                    self.model[0].train(self.training)  # keep dropout in step with .train()/.eval() on the view
                return self.model[0](*args, **kwargs)

        view = ModelView()
        view.train(getattr(model, "training", True))
        return view
