"""One interface, three engines: `get_backend("numpy" | "cupy" | "torch", dtype=, device=)`.

See base.py for the interface; DESIGN.md §3-4 for how the model is written once against it.
"""
from __future__ import annotations

from .base import Backend

BACKENDS = ("numpy", "cupy", "torch")


def get_backend(name: str = "numpy", dtype: str = "float32", device: str | None = None) -> Backend:
    """The backend called `name` computing in `dtype` on `device` (None: the backend's default device)."""
    if isinstance(name, Backend):
        return name
    if name == "numpy":
        from .numpy_backend import NumpyBackend

        return NumpyBackend(dtype, device)
    if name == "cupy":
        from .cupy_backend import CupyBackend

        return CupyBackend(dtype, device)
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(dtype, device)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["Backend", "BACKENDS", "get_backend"]
