"""The cupy backend: the same tinytensor engine with CuPy arrays on a CUDA device."""
from __future__ import annotations

from typing import Any

import tinytensor as tt

from .numpy_backend import NumpyBackend


def _import_cupy():
    try:
        import cupy
    except ImportError:
        raise ImportError('the cupy backend needs CuPy: pip install "tinygpt[cupy]" (CUDA 12), or use '
                          '--backend numpy|torch') from None
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken
        raise RuntimeError(f"the cupy backend needs a CUDA device, but CUDA reports: {e}; use --backend numpy") from None
    if n == 0:
        raise RuntimeError("the cupy backend needs a CUDA device and none was found; use --backend numpy")
    return cupy


class CupyBackend(NumpyBackend):
    """tinytensor on CuPy: every kernel runs on the GPU; to_numpy copies to the host."""

    name = "cupy"

    def __init__(self, dtype: str = "float32", device: str | None = None):
        self.xp = _import_cupy()
        super().__init__(dtype, device)

    def _check_device(self, device: str | None) -> str:
        if device in (None, "cuda"):
            return "cuda:0"
        if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
            self.xp.cuda.Device(int(device[5:])).use()
            return device
        raise ValueError(f"the cupy backend runs on a CUDA device ('cuda' or 'cuda:N'), not {device!r}")

    def to_numpy(self, t: Any):
        # a Tensor's .data is its array; a CuPy array's own .data is a memory pointer, so never getattr(t, "data")
        return self.xp.asnumpy(t.data if isinstance(t, tt.Tensor) else t)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def device_name(self) -> str:
        props = self.xp.cuda.runtime.getDeviceProperties(self.xp.cuda.Device().id)
        return props["name"].decode()
