"""A small thread pool that splits large elementwise kernels into contiguous chunks, one per core.

NumPy's ufunc loops run on one core but release the GIL while they work on large arrays, so two Python threads each
running the same kernel on half of the rows use two cores. Only worth it for big arrays: below `MIN_PARALLEL`
elements the pool's hand-off (~20 µs idle, milliseconds on a busy machine) costs more than it saves, and
everything runs on the calling thread.
`set_num_threads(1)` turns the pool off (the plain, single-threaded path the tests compare against).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

MIN_PARALLEL = 1 << 18  # elements (1 MB of float32): below, a hand-off to the pool costs more than it saves
_num_threads = max(1, min(os.cpu_count() or 1, 4))
_pool: ThreadPoolExecutor | None = None


def set_num_threads(n: int) -> None:
    """Use n threads for the chunked kernels (1: no pool at all)."""
    global _num_threads, _pool
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    if _pool is not None and n != _num_threads:
        _pool.shutdown(wait=True)
        _pool = None
    _num_threads = int(n)


def get_num_threads() -> int:
    """How many threads the chunked kernels use."""
    return _num_threads


def run_chunks(fn: Callable[[int, int], None], n: int, size: int, align: int = 1) -> None:
    """Call fn(lo, hi) on contiguous ranges that cover [0, n), in parallel when `size` (elements) is large.

    Chunk borders are multiples of `align` (e.g. a row length). fn must write only its own range.
    """
    global _pool
    k = _num_threads if size >= MIN_PARALLEL else 1
    if k == 1 or n < 2 * align:
        fn(0, n)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_num_threads - 1, thread_name_prefix="tinytensor")
    step = -(-n // k)
    step = -(-step // align) * align
    bounds = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
    futures = [_pool.submit(fn, lo, hi) for lo, hi in bounds[1:]]
    fn(*bounds[0])  # the calling thread takes the first chunk
    for f in futures:
        f.result()
