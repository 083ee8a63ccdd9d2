"""Matrix products for the engine, three ways to use the cores (`set_matmul_threading`, env TINYTENSOR_MATMUL).

- "pool": single-threaded BLAS calls, large products split into row blocks (or batch entries) across tinytensor's
  own thread pool, one join per product. Robust when the cores are shared: OpenBLAS synchronises its threads
  several times inside every GEMM with spinning barriers, so one descheduled thread stalls the product (measured:
  causal attention forward+backward at GPT-2 shapes took 680-3000 ms with OpenBLAS's 2 threads on busy cores and
  70 ms single-threaded; two shakespeare-char training steps side by side on 2 cores, 44-46 ms/step this way and
  304 ms/step the "blas" way). The price on an idle machine is the hand-off: the OS takes ~30 µs to wake the
  worker (this VM's idle vCPUs halt at once, guest_halt_poll_ns = 0) and ~40 µs to wake the caller.
- "blas": `a @ b` with OpenBLAS's own threads, which spin instead of sleeping. Faster for the small products of
  small models on an idle machine (2 cores, SkylakeX kernels: 768x128 @ 128x512 at 340-380 GFLOP/s against 250-290
  split over the pool; the recipe's step 28.0 vs 30.5 ms), on par for large ones; collapses on busy cores.
- "auto" (the default): per size class (⌊log₂ multiply-adds⌋) an average of each way's seconds per multiply-add;
  the faster way runs and the slower is re-timed once per max(EXPLORE, 100·(slowdown − 1)) calls (at most
  64·EXPLORE), so outside load is noticed at a cost of ~1% of that class's time. Alone: as fast as "blas" (the
  recipe's step 28.4 ms); two recipe steps side by side: 40-45 ms/step, near "pool" (40), where "blas" took 86-457.

Every way computes the same sums up to the order BLAS's micro-kernels take: the ways agree to float rounding
(tests/tinytensor/test_perf_paths.py), each repeats its own bits for a given thread count, and for many shapes
(all of the small models' 2-D products here) they give the same bits. "auto" only chooses where they do: it runs a
product of a new shape and layout once both ways on random operands (`ways_agree`) and leaves the product to the
pool unless the bits are equal, so its results are the pool's, bit for bit, whatever it picks, and a run repeats
itself and resumes exactly. Batched operands with other strides (attention's heads) and products above
AUTO_MAX_MACS stay with the pool. CuPy arrays go straight to `a @ b`.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import math
import os
import time
import warnings
from typing import Any, Callable, Iterator

import numpy as np

from .threads import EXPLORE, MIN_PARALLEL, WayTimer, get_num_threads, park, run_chunks

PARALLEL_MACS = 1 << 24  # multiply-adds (~0.17 ms on one core) below which one thread does the whole product:
# split in two, 768x128 @ 128x128 (12.6M) took 169-179 µs against 123-144 whole, 768x128 @ 128x257 (25M) 228-304
# against 253-279, 768x128 @ 128x384 (38M) 223-282 against 365-380 (2026-12-02)
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
    if before == 1:
        yield
        return
    put(1)
    try:
        yield
    finally:
        put(before)


MODES = ("auto", "pool", "blas")
_mode = "auto"
_TIMER = WayTimer()  # way 0: the pool, way 1: BLAS's threads (threads.py has the rule)
_stats = _TIMER.stats  # size class -> [pool s/MAC, blas s/MAC, calls, pool timings, blas timings]


def set_matmul_threading(mode: str) -> None:
    """Choose how NumPy matrix products use the cores: "auto" (default), "pool" or "blas" (see the module text)."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"matmul threading {mode!r} must be one of {', '.join(MODES)} (TINYTENSOR_MATMUL)")
    _mode = mode
    _stats.clear()
    _AGREE.clear()


def get_matmul_threading() -> str:
    """The way matrix products use the cores: "auto", "pool" or "blas"."""
    return _mode


_choose, _record = _TIMER.choose, _TIMER.record  # per size class ⌊log₂ multiply-adds⌋


AUTO_MAX_MACS = 1 << 27  # "auto" leaves larger products to the pool (a probe would cost ~1 ms+). Alone, BLAS's
# threads ran the 124M model's block products 7-14% faster (they pack b once for both threads), but letting "auto"
# choose them made whole steps slower: small config 0.56-0.60 s against the pool's 0.45-0.49, 124M 2.10-2.72 s
# against 2.11-2.24 (2026-12-02, fresh processes, a VM with stolen time; benchmarks/NOTES.md)
_AGREE: dict[tuple, bool] = {}  # (shapes, layouts, dtypes, thread counts) -> do the two ways give the same bits?
_PROBE = np.random.default_rng(20261202)


def _layout(x: np.ndarray) -> str | None:
    """'C' for a C-contiguous array, 'T' for the transposed view of one (a weight's .T), None for other strides."""
    if x.flags.c_contiguous:
        return "C"
    return "T" if x.swapaxes(-1, -2).flags.c_contiguous else None


def _probe_array(x: np.ndarray, layout: str) -> np.ndarray:
    """Random values with x's shape, dtype and layout."""
    if layout == "C":
        return _PROBE.standard_normal(x.shape).astype(x.dtype)
    return _PROBE.standard_normal(x.swapaxes(-1, -2).shape).astype(x.dtype).swapaxes(-1, -2)


def ways_agree(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the pool and BLAS's threads compute a @ b with the same operations in the same order, so the same
    bits: checked once per shapes, layouts, dtypes and thread counts on random operands (two different orders of
    the additions give equal results over a whole random product with negligible probability), then cached."""
    la, lb = _layout(a), _layout(b)
    if la is None or lb is None or _BLAS is None:
        return False
    key = (a.shape, b.shape, la, lb, a.dtype.str, b.dtype.str, _BLAS[0](), get_num_threads())
    agree = _AGREE.get(key)
    if agree is None:
        if len(_AGREE) > 1024:  # generation meets many lengths: keep the cache small
            _AGREE.clear()
        pa, pb = _probe_array(a, la), _probe_array(b, lb)
        agree = _AGREE[key] = bool(np.array_equal(_pool_matmul(pa, pb), pa @ pb))
    return agree


def matmul(a: Any, b: Any) -> Any:
    """a @ b (2-D, or batched): by the pool or by BLAS's own threads, as `set_matmul_threading` says."""
    if _mode == "pool" or not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray) or a.ndim < 2 or b.ndim < 2:
        return _pool_matmul(a, b)
    if _mode == "blas":
        park()
        return a @ b
    macs = a.shape[-2] * a.shape[-1] * b.shape[-1] * math.prod(a.shape[:-2])
    if macs > AUTO_MAX_MACS or not ways_agree(a, b):  # a choice that could change the bits is never made
        return _pool_matmul(a, b)
    size_class = int(math.log2(max(macs, 1)))
    way = _choose(size_class)
    t0 = time.perf_counter()
    if way:
        park()  # BLAS's threads would share a core with the C pool's spinning worker
    out = _pool_matmul(a, b) if way == 0 else a @ b
    _record(size_class, way, (time.perf_counter() - t0) / max(macs, 1), max(macs, 1))
    return out


def _pool_matmul(a: Any, b: Any) -> Any:
    """a @ b (2-D, or batched with equal batch shapes), split into row blocks / batch entries across the pool."""
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray) or a.ndim < 2 or b.ndim < 2:
        with single_threaded_blas():
            return a @ b
    m, k = a.shape[-2:]
    n = b.shape[-1]
    batch = a.shape[:-2]
    macs = m * k * n * math.prod(batch)  # not np.prod: a Python int product of a short tuple, 40x cheaper
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


if os.environ.get("TINYTENSOR_MATMUL", "auto") in MODES:
    set_matmul_threading(os.environ.get("TINYTENSOR_MATMUL", "auto"))
else:
    warnings.warn(f"TINYTENSOR_MATMUL={os.environ['TINYTENSOR_MATMUL']!r} is not one of {', '.join(MODES)}; "
                  f"using auto", stacklevel=2)

__all__ = ["matmul", "single_threaded_blas", "set_matmul_threading", "get_matmul_threading", "ways_agree", "MODES",
           "EXPLORE", "AUTO_MAX_MACS", "PARALLEL_MACS", "PARALLEL_GEMV"]
