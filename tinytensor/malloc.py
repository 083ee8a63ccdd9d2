"""Keep freed array memory inside the process (glibc malloc tuning), so a small training step stops page-faulting.

A training step allocates and frees the same few hundred activation and gradient arrays every iteration. With
glibc's defaults an array above the mmap threshold (dynamic, from 128 KiB) is a fresh mmap and its release an
munmap, and free memory at the top of the heap beyond the trim threshold goes back to the kernel: the next step
touches every page again. Measured on the 2-core machine (issue 20, benchmarks/NOTES.md): ~6,000 minor page faults
per step of the tiny config and ~13,000 of the shakespeare-char one, a third of their step time. Setting both
thresholds (mallopt(3), M_MMAP_THRESHOLD and M_TRIM_THRESHOLD; the glibc manual's "Memory Allocation Tunables")
serves those arrays from the heap and keeps the freed pages for reuse. Arrays above 32 MiB (the 124M model's
logits, the optimizer's flat buffers) are still mapped and unmapped on their own, so the peak stays the same.
The trim threshold stays at 64 MiB although a larger one would keep more: the activations a forward pass saves
are freed by its backward, and the 124M model at batch 2x256 gives ~300 MB back and faults it in again on the next
forward (78,000 faults per step); at 1 GiB that went under 100, but the process's peak (VmHWM) grew by 40-55 MB
(the retained heap fragments), and a larger peak is the cost this module must not add (benchmarks/NOTES.md).
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc <malloc.h> parameter numbers
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20   # glibc's own ceiling for its dynamic threshold (4 · 1024 · 1024 · sizeof(long))
TRIM_THRESHOLD = 64 << 20   # twice the mmap threshold, the ratio glibc's dynamic rule keeps

_applied: bool | None = None


def tune_malloc(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds for this process (once); False where the C library has no mallopt
    (musl, macOS, Windows), where nothing changes."""
    global _applied
    if _applied is not None:
        return _applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        _applied = False
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                       int(trim_threshold)))
    return _applied


__all__ = ["tune_malloc", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]
