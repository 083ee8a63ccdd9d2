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
"""
from __future__ import annotations

import os
import threading
from typing import Callable, Hashable

MIN_PARALLEL = 1 << 18  # elements (1 MB of float32): below, a hand-off to the pool costs more than it saves
LEAD = 0.15  # the caller's range is this much longer than a worker's: a worker starts later (woken by the OS)
_num_threads = max(1, min(os.cpu_count() or 1, 4))


class _Worker:
    """One daemon thread that runs fn(lo, hi) each time `go` is released and releases `done` when it is through."""

    def __init__(self, index: int) -> None:
        self.go = threading.Lock()
        self.done = threading.Lock()
        self.go.acquire()
        self.done.acquire()
        self.task: tuple[Callable[[int, int], None], int, int] | None = None
        self.error: BaseException | None = None
        threading.Thread(target=self._loop, name=f"tinytensor-{index}", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self.go.acquire()
            task, self.task = self.task, None
            if task is None:  # the pool was resized or reset: this thread ends
                return
            try:
                task[0](task[1], task[2])
            except BaseException as e:  # handed to the caller, which re-raises it
                self.error = e
            self.done.release()

    def stop(self) -> None:
        self.task = None
        self.go.release()


_workers: list[_Worker] = []
_busy = threading.Lock()  # one caller at a time uses the workers; a concurrent (or nested) caller runs inline


def _drop_workers() -> None:
    """Forget the workers (a fork's child has none of them running; a resize starts new ones)."""
    global _workers, _busy
    _workers = []
    _busy = threading.Lock()


os.register_at_fork(after_in_child=_drop_workers)


def set_num_threads(n: int) -> None:
    """Use n threads for the chunked kernels (1: no pool at all)."""
    global _num_threads
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
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


EXPLORE = 64  # a WayTimer re-times its slower way once per EXPLORE x (that way's slowdown) calls of a size class


class WayTimer:
    """The faster of two ways to run a kernel (way 0 and way 1: the pool and BLAS's threads for a product, one
    thread and the pool for a C kernel), per size class, from the calls' own timings: each way alternately until it
    has two timings, then the faster, with the slower re-timed once per max(EXPLORE, 100·(slowdown − 1)) calls (at
    most 64·EXPLORE): each re-timing costs (slowdown − 1) calls' worth, so exploring costs ~1% of the class's time,
    and a change in the machine (other load, a slower wake-up of idle cores) is noticed within that many calls."""

    def __init__(self) -> None:
        # size class -> [way-0 s/unit, way-1 s/unit, calls, way-0 timings, way-1 timings]
        self.stats: dict[Hashable, list] = {}

    def choose(self, size_class: Hashable) -> int:
        """0 or 1: which way the next call of this size class takes."""
        st = self.stats.setdefault(size_class, [0.0, 0.0, 0, 0, 0])
        st[2] += 1
        if st[3] < 2 or st[4] < 2:
            return 0 if st[3] <= st[4] else 1
        best = 0 if st[0] <= st[1] else 1
        interval = min(64 * EXPLORE, max(EXPLORE, int(100 * (st[1 - best] / st[best] - 1))))
        return 1 - best if st[2] % interval == 0 else best

    def record(self, size_class: Hashable, way: int, seconds_per_unit: float) -> None:
        """Average a timing into its way's estimate; each way's first timing (thread start-up, cold caches) is
        dropped."""
        st = self.stats[size_class]
        st[3 + way] += 1
        if st[3 + way] > 1:
            st[way] = seconds_per_unit if not st[way] else 0.75 * st[way] + 0.25 * seconds_per_unit


def _bounds(n: int, k: int, align: int) -> list[tuple[int, int]]:
    """k contiguous ranges over [0, n) on multiples of align; the caller's (the first) is LEAD larger than the rest."""
    units = -(-n // align)
    first = min(units, max(1, round(units * (1 + LEAD) / (k + LEAD))))
    rest = units - first
    step = -(-rest // (k - 1)) if rest else 0
    cuts = [0, first] + [min(first + i * step, units) for i in range(1, k)]
    cuts = sorted(set(min(c * align, n) for c in cuts))
    return [(lo, hi) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]


def _run(fn: Callable[[int, int], None], bounds: list[tuple[int, int]]) -> None:
    """The calling thread takes the first range, the workers the others; every worker is joined before returning."""
    started = []
    for w, (lo, hi) in zip(_workers, bounds[1:]):
        w.task = (fn, lo, hi)
        w.go.release()
        started.append(w)
    try:
        fn(*bounds[0])
    finally:
        try:
            for w in started:
                w.done.acquire()
        except BaseException:  # interrupted while a worker may still write: never hand these workers out again
            _drop_workers()
            raise
    for w in started:
        if w.error is not None:
            err, w.error = w.error, None
            raise err
