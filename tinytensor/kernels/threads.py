"""A small thread pool that splits large kernels into contiguous chunks, one per core.

NumPy's ufunc loops and BLAS calls run on one core but release the GIL while they work on large arrays, so two
Python threads each running the same kernel on half of the rows use two cores. Only worth it for big arrays: below
`MIN_PARALLEL` elements the hand-off costs more than it saves, and everything runs on the calling thread.

The hand-off: each worker waits on a plain lock ("go"), the caller releases it, runs the first range itself, then
waits on the worker's "done" lock. Timed on a 768x128 @ 128x512 product split in two (2-core VM, 2026-12-02): the
worker starts ~28 µs after the caller (the OS waking it), and a caller that finishes first and sleeps is woken ~40
µs after the worker ends, so the caller's range is made LEAD longer than the others: the worker then tends to finish
first and the caller never sleeps (the split product 5-10% faster than with equal halves). A second thread calling
while the pool is busy (or a kernel calling it from inside a range) runs inline; a forked child starts its own.
`set_num_threads(1)` turns the pool off (the plain, single-threaded path the tests compare against).

Where the C kernels are built (kernels/native.py registers them with `use_native_pool`), the workers wait in C
instead (tinytensor/csrc/native.c, "the pool"): without the GIL, spinning SPIN_S after their last task before they
sleep, so a C kernel's range reaches a worker in well under a microsecond and runs with no Python between
(`run_native`); a Python range still goes through the worker's Python loop, as before.
"""
from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Any, Callable, Hashable

MIN_PARALLEL = 1 << 18  # elements (1 MB of float32): below, a hand-off to the pool costs more than it saves
# the same for a C kernel's split through the C pool, whose hand-off to a spinning worker is ~1 µs, not ~40: a
# 0.4 ns/element kernel on 2^15 elements takes ~13 µs
MIN_PARALLEL_NATIVE = 1 << 15
LEAD = 0.15  # the caller's range is this much longer than a worker's: a worker starts later (woken by the OS)
_num_threads = max(1, min(os.cpu_count() or 1, 4))
SPIN_S = 0.002  # a worker in the C pool spins this long after its last task, then sleeps (as libgomp's do by default)
_pool: Any = None  # the C pool's functions (use_native_pool), or None: the workers wait on Python locks


class _Worker:
    """One daemon thread that runs fn(lo, hi) each time a task is posted to it, and the C pool's ranges where there
    is one (then it waits in C, in `_pool.pool_wait`, and comes back to Python only for a Python task)."""

    def __init__(self, index: int) -> None:
        self.index, self.pool = index, _pool
        self.go = threading.Lock()
        self.done = threading.Lock()
        self.go.acquire()
        self.done.acquire()
        self.task: tuple[Callable[[int, int], None], int, int] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name=f"tinytensor-{index}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        pool, spin_first = self.pool, 1
        while True:
            if pool is None:
                self.go.acquire()
            elif not pool.pool_wait(self.index, SPIN_S, spin_first):
                return
            spin_first = 0  # after a Python range (a product split over the pool) it sleeps at once: a spinning
            # worker would share its core with BLAS's threads, should the next product take them; after C ranges
            # it spins
            task, self.task = self.task, None
            if task is None:  # the pool was resized or reset: this thread ends
                return
            try:
                task[0](task[1], task[2])
            except BaseException as e:  # handed to the caller, which re-raises it
                self.error = e
            if pool is not None:
                pool.pool_finish(self.index)
            self.done.release()

    def start(self, task: tuple[Callable[[int, int], None], int, int]) -> None:
        self.task = task
        if self.pool is None:
            self.go.release()
        else:
            self.pool.pool_post(self.index, 0)

    def join(self) -> None:
        # on the lock, asleep, even with the C pool: a caller spinning through a product's other half took 15% off
        # the small model's products (the two vCPUs share a core's resources; threads of one core, it seems)
        self.done.acquire()

    def stop(self) -> None:
        self.task = None
        if self.pool is None:
            self.go.release()
        else:
            self.pool.pool_post(self.index, 1)
            self.thread.join(1.0)  # its slot is reused by the next worker of this index: it must be gone first


_workers: list[_Worker] = []
_busy = threading.Lock()  # one caller at a time uses the workers; a concurrent (or nested) caller runs inline


def _drop_workers() -> None:
    """Forget the workers (a fork's child has none of them running; a resize starts new ones)."""
    global _workers, _busy
    _workers = []
    _busy = threading.Lock()


def _after_fork() -> None:
    _drop_workers()
    if _pool is not None:
        _pool.pool_reset()  # the parent's slots (and perhaps a held lock) came along; no worker thread did


os.register_at_fork(after_in_child=_after_fork)


def use_native_pool(lib: ctypes.CDLL | None) -> None:
    """Let the workers wait in the C library's pool (kernels/native.py calls this when the library loads), or on
    Python locks again (None). Running workers are stopped; the next split starts new ones."""
    global _pool
    with _busy:
        for w in _workers:
            w.stop()
        _drop_workers()
    if lib is not None:
        for name, args, res in (("pool_reset", [], None), ("pool_max", [], ctypes.c_int),
                                ("pool_wait", [ctypes.c_int, ctypes.c_double, ctypes.c_int], ctypes.c_int),
                                ("pool_finish", [ctypes.c_int], None),
                                ("pool_post", [ctypes.c_int, ctypes.c_int], None),
                                ("pool_join", [ctypes.c_int], None), ("pool_asleep", [ctypes.c_int], ctypes.c_int),
                                ("pool_park", [], None),
                                ("pool_run", [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                              ctypes.c_int], ctypes.c_int)):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
        lib.pool_reset()
    _pool = lib


def set_num_threads(n: int) -> None:
    """Use n threads for the chunked kernels (1: no pool at all)."""
    global _num_threads
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    if _pool is not None and n - 1 > _pool.pool_max():
        raise ValueError(f"at most {_pool.pool_max() + 1} threads, got {n}")
    if n != _num_threads:
        with _busy:
            for w in _workers:
                w.stop()
            _drop_workers()
    _num_threads = int(n)


def get_num_threads() -> int:
    """How many threads the chunked kernels use."""
    return _num_threads


def run_chunks(fn: Callable[[int, int], None], n: int, size: int, align: int = 1) -> None:
    """Call fn(lo, hi) on contiguous ranges that cover [0, n), in parallel when `size` (elements) is large.

    Chunk borders are multiples of `align` (e.g. a row length) and depend only on n, align and the thread count, so
    results repeat bit for bit. fn must write only its own range.
    """
    k = _num_threads if size >= MIN_PARALLEL else 1
    busy = _busy  # this lock, even if an interrupted join replaces the pool meanwhile
    if k == 1 or n < 2 * align or not busy.acquire(blocking=False):
        fn(0, n)
        return
    try:
        while len(_workers) < k - 1:
            _workers.append(_Worker(len(_workers)))
        _run(fn, _bounds(n, k, align))
    finally:
        busy.release()


def park() -> None:
    """Send the C pool's spinning workers to sleep now (before BLAS's own threads take the cores)."""
    if _pool is not None and _workers:
        _pool.pool_park()


WAKE_INLINE = 1 << 17  # work (elements, as run_chunks' size) below which a call that finds a worker asleep runs inline


def run_native(fn: int, a: Any, d: Any, n: int, size: int, align: int = 1) -> int | None:
    """Run the C range function at address fn over [0, n) split across the C pool (k contiguous ranges on multiples
    of align, the caller's first), and return the OR of the ranges' statuses; None where the pool did not take it
    (no C pool, one thread, too little work, the pool busy with another caller, or a worker asleep and the work,
    `size` elements, below WAKE_INLINE: waking it costs ~30-50 µs, more than splitting such a call saves): the
    caller then runs it. a and d are the kernel's argument arrays (int64 and double words)."""
    k = _num_threads
    busy = _busy
    if _pool is None or k == 1 or n < 2 * align or not busy.acquire(blocking=False):
        return None
    try:
        while len(_workers) < k - 1:
            _workers.append(_Worker(len(_workers)))
        asleep = [_pool.pool_asleep(w.index) for w in _workers[:k - 1]]
        if any(asleep) and size < WAKE_INLINE:
            return None
        # equal ranges while the workers spin; a sleeping one starts late, so the caller then takes LEAD more
        bounds = _bounds(n, k, align, LEAD if any(asleep) else 0.0)
        cuts = (ctypes.c_int64 * (len(bounds) + 1))(*[lo for lo, _ in bounds], bounds[-1][1])
        return _pool.pool_run(fn, a, d, cuts, len(bounds))
    finally:
        busy.release()


EXPLORE = 64  # a WayTimer re-times its slower way once per EXPLORE x (that way's slowdown) calls of a size class
STALE_S = 1.0  # ... and once per STALE_S seconds where that costs under 1% of them (see WayTimer)


class WayTimer:
    """The faster of two ways to run a kernel (way 0 and way 1: the pool and BLAS's threads for a product, one
    thread and the pool for a C kernel), per size class, from the calls' own timings: each way alternately until it
    has two timings, then the faster, with the slower re-timed once per max(EXPLORE, 100·(slowdown − 1)) calls (at
    most 64·EXPLORE): each re-timing costs (slowdown − 1) calls' worth, so exploring costs ~1% of the class's time,
    and a change in the machine (other load, a slower wake-up of idle cores) is noticed within that many calls.
    The slower way is also re-timed once its last timing is STALE_S old, where one such call costs under 1% of
    STALE_S more than the faster way: a passing disturbance (another library's threads spinning on the second core
    while the timings were taken) then costs a size class one second of the wrong way, not its next thousands of
    calls, while a class of large calls (the cross-entropy's, once per step) keeps to the count rule."""

    def __init__(self) -> None:
        # size class -> [way-0 s/unit, way-1 s/unit, calls, way-0 timings, way-1 timings, way-0 last, way-1 last,
        # units of the last call]
        self.stats: dict[Hashable, list] = {}

    def choose(self, size_class: Hashable) -> int:
        """0 or 1: which way the next call of this size class takes."""
        st = self.stats.setdefault(size_class, [0.0, 0.0, 0, 0, 0, 0.0, 0.0, 1])
        st[2] += 1
        if st[3] < 2 or st[4] < 2:
            return 0 if st[3] <= st[4] else 1
        best = 0 if st[0] <= st[1] else 1
        now = time.monotonic()
        if now - st[6 - best] > STALE_S and (st[1 - best] - st[best]) * st[7] < 0.01 * STALE_S:
            st[6 - best] = now  # one re-timing, not one per call until its timing comes back
            return 1 - best
        interval = min(64 * EXPLORE, max(EXPLORE, int(100 * (st[1 - best] / st[best] - 1))))
        return 1 - best if st[2] % interval == 0 else best

    def record(self, size_class: Hashable, way: int, seconds_per_unit: float, units: int = 1) -> None:
        """Average a timing of a call of `units` units into its way's estimate; each way's first timing (thread
        start-up, cold caches) is dropped."""
        st = self.stats[size_class]
        st[3 + way] += 1
        st[5 + way], st[7] = time.monotonic(), units
        if st[3 + way] > 1:
            st[way] = seconds_per_unit if not st[way] else 0.75 * st[way] + 0.25 * seconds_per_unit


def _bounds(n: int, k: int, align: int, lead: float = LEAD) -> list[tuple[int, int]]:
    """k contiguous ranges over [0, n) on multiples of align; the caller's (the first) is `lead` larger than the
    rest."""
    units = -(-n // align)
    first = min(units, max(1, round(units * (1 + lead) / (k + lead))))
    rest = units - first
    step = -(-rest // (k - 1)) if rest else 0
    cuts = [0, first] + [min(first + i * step, units) for i in range(1, k)]
    cuts = sorted(set(min(c * align, n) for c in cuts))
    return [(lo, hi) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]


def _run(fn: Callable[[int, int], None], bounds: list[tuple[int, int]]) -> None:
    """The calling thread takes the first range, the workers the others; every worker is joined before returning."""
    started = []
    for w, (lo, hi) in zip(_workers, bounds[1:]):
        w.start((fn, lo, hi))
        started.append(w)
    try:
        fn(*bounds[0])
    finally:
        try:
            for w in started:
                w.join()
        except BaseException:  # interrupted while a worker may still write: never hand these workers out again
            _drop_workers()
            raise
    for w in started:
        if w.error is not None:
            err, w.error = w.error, None
            raise err
