"""Matrix products for the engine: single-threaded BLAS calls, split across tinytensor's own thread pool.

Why not let OpenBLAS thread itself: it synchronises its threads several times inside every GEMM with spinning
barriers, so on a machine whose cores are shared with other work one descheduled thread stalls the product; measured
here with the 2 cores busy, causal attention forward+backward at GPT-2 shapes took 680-3000 ms with OpenBLAS's 2
threads and 70 ms with 1. Splitting the product into independent row blocks (or batch entries), each a
single-threaded GEMM on its own thread, needs one join per product and runs as fast on an idle machine.
NumPy releases the GIL inside matmul, so the Python threads really run in parallel.

`matmul(a, b)` is the plain `a @ b` in value (each output element is computed by the same BLAS kernel from the same
operands), only scheduled differently; CuPy arrays go straight to `a @ b`.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import os
from typing import Any, Callable, Iterator

import numpy as np

from .threads import MIN_PARALLEL, get_num_threads, run_chunks

PARALLEL_MACS = 1 << 23  # multiply-adds (~0.2 ms on one core) below which one thread does the whole product
PARALLEL_GEMV = 1 << 22  # elements of b (16 MB of float32) below which a few-row product stays on one thread


def _openblas_threads() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    """(get, set) for the thread count of NumPy's bundled OpenBLAS, or None when it cannot be found."""
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs", "*openblas*"))
    for path in libs:
        try:
            so = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "")):
            get = getattr(so, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(so, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype = ctypes.c_int
                put.argtypes = [ctypes.c_int]
                return get, put
    return None


_BLAS = _openblas_threads()


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread inside the block (restored after); a no-op when the BLAS is not NumPy's OpenBLAS."""
    if _BLAS is None:
        yield
        return
    get, put = _BLAS
    before = get()
    if before != 1:
        put(1)
    try:
        yield
    finally:
        if before != 1:
            put(before)


def matmul(a: Any, b: Any) -> Any:
    """a @ b (2-D, or batched with equal batch shapes), split into row blocks / batch entries across the pool."""
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray) or a.ndim < 2 or b.ndim < 2:
        with single_threaded_blas():
            return a @ b
    m, k = a.shape[-2:]
    n = b.shape[-1]
    batch = a.shape[:-2]
    macs = m * k * n * int(np.prod(batch, dtype=np.int64))
    few_rows = a.ndim == 2 and m < 64
    # a few rows (decoding one token) is a matrix-vector product bound by reading b: split it once b is large
    big = b.size >= PARALLEL_GEMV if few_rows else macs >= PARALLEL_MACS
    with single_threaded_blas():
        if not big or get_num_threads() == 1 or b.ndim != a.ndim or b.shape[:-2] != batch:
            return a @ b
        out = np.empty(batch + (m, n), dtype=np.result_type(a, b))
        if few_rows:  # split the columns of b: each thread reads its own part of it
            def cols(lo: int, hi: int) -> None:
                np.matmul(a, b[:, lo:hi], out=out[:, lo:hi])

            run_chunks(cols, n, MIN_PARALLEL, align=64)
        elif a.ndim == 2:
            def rows(lo: int, hi: int) -> None:
                np.matmul(a[lo:hi], b, out=out[lo:hi])

            run_chunks(rows, m, MIN_PARALLEL)
        else:
            a3, b3, o3 = a.reshape((-1, m, k)), b.reshape((-1, k, n)), out.reshape((-1, m, n))

            def entries(lo: int, hi: int) -> None:
                np.matmul(a3[lo:hi], b3[lo:hi], out=o3[lo:hi])

            run_chunks(entries, a3.shape[0], MIN_PARALLEL)
        return out


__all__ = ["matmul", "single_threaded_blas", "PARALLEL_MACS", "PARALLEL_GEMV"]
