"""The native CPU kernels (tinytensor/csrc/native.c): LayerNorm, GELU and softmax as one C loop per pass; causal
attention whole (its products too) as one call per direction.

NumPy runs one call per arithmetic step, each a pass over the whole array, so a LayerNorm forward and backward is ~15
passes and GELU's ~25; the C twins make one or two, over a row that stays in L1 (measured at GPT-2 124M shapes,
2026-12-02, one thread: LayerNorm forward+backward 0.20 ms against NumPy's 1.0, GELU tanh 1.5 against 3.1). The
library is compiled when the package is installed (setup.py, optional: without a C compiler the install goes on and
the NumPy kernels run), loaded here with ctypes. Each kernel is called through a range call f(args, lo, hi), so the
same call runs inline or split across the cores, where a kernel's own timings say the split is faster (`_call`):
through the library's own pool (POSIX builds: workers waiting in C, a hand-off of ~1 µs, `threads.run_native`) or,
without it, through `threads.py`'s Python pool (the calls release the GIL; a hand-off of ~30-50 µs).

The NumPy kernels stay the reference: `set_native_kernels(False)` (or env TINYTENSOR_NATIVE=0) runs them, and the
tests check the C kernels against them, against torch in float64 and against finite differences. Results repeat bit
for bit at any thread count (rows and elements are independent; LayerNorm's dw and db are summed over fixed blocks
of rows). They differ from the NumPy kernels' bits (other summation orders; float32 exp by its own polynomial).
"""
from __future__ import annotations

import ctypes
import math
import importlib.machinery
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import threads
from .threads import WayTimer, run_chunks

_LIB_NAME = "_native"
LN_BLOCK = 32  # rows per partial sum of LayerNorm's dw and db: fixed, so the bits do not depend on the threads
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
# One thread's float32 cost per element (ns, 2-core SkylakeX VM, 2026-12-02), so that a kernel goes to the pool
# only where its work outweighs the hand-off: a split is tried from MIN_PARALLEL (2^18) elements of a 0.4 ns/element
# kernel through the Python pool (~40-60 µs a hand-off; measured crossovers: LayerNorm forward ~2^18.5 elements,
# backward ~2^18, GELU forward ~2^18.5, backward ~2^17.5, softmax forward 2^17) and from MIN_PARALLEL_NATIVE (2^15)
# through the C pool; `_work` scales each kernel's size to that, and the timings (`_call`) decide above it.
_NS = {"layer_norm_fwd": 0.26, "layer_norm_bwd": 0.3, "softmax_fwd": 0.5, "softmax_bwd": 0.16, "cross_entropy_rows": 0.5,
       "causal_softmax_fwd": 0.55, "causal_softmax_bwd": 0.2, "gelu_tanh_fwd": 0.42, "gelu_tanh_bwd": 0.62,
       "gelu_erf_fwd": 0.55, "gelu_erf_bwd": 0.15, "adamw": 0.3, "exp": 0.3,
       "causal_attention_fwd": 0.07, "causal_attention_bwd": 0.11}  # attention: per score x head dim (12-03, Zen 4)


def _work(name: str, n: int) -> int:
    """n elements of kernel `name` as the element count of a 0.4 ns/element kernel (run_chunks' size)."""
    return int(n * _NS[name] / 0.4)


ADAPTIVE = True  # False: split wherever run_chunks would (the tests set it, to run the split paths at every size)
_TIMER = WayTimer()  # per (kernel, size class): way 0 one thread, way 1 the pool


def _run(fn: Callable, a: Any, d: Any, n: int, size: int, align: int) -> int | None:
    """fn over [0, n) split: across the C pool where there is one (threads.run_native; None where it did not take
    the call), else across the Python pool, each range a call of fn."""
    if threads._pool is not None:
        return threads.run_native(ctypes.cast(fn, ctypes.c_void_p).value, a, d, n, size, align)
    results = []
    run_chunks(lambda lo, hi: results.append(fn(a, d, lo, hi)), n, threads.MIN_PARALLEL, align)
    return int(any(results))


def _min_parallel() -> int:
    """The work (elements of a 0.4 ns/element kernel) below which a kernel runs inline: lower through the C pool."""
    return threads.MIN_PARALLEL if threads._pool is None else min(threads.MIN_PARALLEL, threads.MIN_PARALLEL_NATIVE)


def _call(name: str, dtype: Any, n: int, size: int, ints: tuple, floats: tuple = (), align: int = 1) -> int:
    """Kernel `name` over n units, its arguments ints (pointers as integers, None as 0) and floats: inline, or split
    where its work (size, _work's element count) passes MIN_PARALLEL and, unless ADAPTIVE is off, where the
    kernel's own timings say the split is faster (threads.WayTimer) for this size. The crossovers in _NS were
    measured on an idle machine; when the VM's cores wake slowly (stolen time) a split can cost more than it saves.
    Rows and elements are independent and LayerNorm's dw, db are summed over fixed blocks, so both ways give the
    same bits. Returns the kernel's status (0, or 1 where it failed)."""
    fn = _FNS[f"{name}_{_SUFFIX[np.dtype(dtype)]}"]
    a = (ctypes.c_int64 * len(ints))(*[0 if v is None else v for v in ints])
    d = (ctypes.c_double * max(1, len(floats)))(*floats)
    if n == 0:
        return 0
    if size < _min_parallel() or threads.get_num_threads() == 1:
        return fn(a, d, 0, n)
    if not ADAPTIVE:
        status = _run(fn, a, d, n, size, align)
        return fn(a, d, 0, n) if status is None else status
    key = (name, size.bit_length())
    way = _TIMER.choose(key)
    t0 = time.perf_counter()
    status = _run(fn, a, d, n, size, align) if way else None
    if status is None:  # one thread chosen, or the pool did not take it: a timing of the inline way
        way, status = 0, fn(a, d, 0, n)
    _TIMER.record(key, way, (time.perf_counter() - t0) / n, n)
    return status


def _find_library() -> Path | None:
    """The compiled library beside the tinytensor package (setup.py builds it as the extension tinytensor._native)."""
    here = Path(__file__).resolve().parent.parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        p = here / (_LIB_NAME + suffix)
        if p.is_file():
            return p
    return None


_NAMES = ("layer_norm_fwd", "layer_norm_bwd", "softmax_fwd", "softmax_bwd", "cross_entropy_rows", "causal_softmax_fwd",
          "causal_softmax_bwd", "adamw", "gelu_tanh_fwd", "gelu_tanh_bwd", "gelu_erf_fwd", "gelu_erf_bwd",
          "causal_attention_fwd", "causal_attention_bwd")
_RANGE_ARGS = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]


def _load() -> tuple[dict[str, Callable], str | None, ctypes.CDLL | None]:
    """({name_suffix: the kernel's range call f(a, d, lo, hi)}, None, the library), or ({}, why not, None).

    Each kernel is called through its range call (native.c, "range calls"): its arguments as arrays of 64-bit
    words, so that the same call runs inline or, through the C pool, split across the workers."""
    path = _find_library()
    if path is None:
        return {}, "the native library was not built (no C compiler when the package was installed?)", None
    try:
        lib = ctypes.CDLL(str(path))
        fns = {}
        for name in _NAMES + ("exp",):
            for suffix in (_SUFFIX.values() if name != "exp" else ("f32",)):
                fn = getattr(lib, f"{name}_range_{suffix}")
                fn.argtypes, fn.restype = _RANGE_ARGS, ctypes.c_int
                fns[f"{name}_{suffix}"] = fn
        lib.simd_level.argtypes, lib.simd_level.restype = [], ctypes.c_int
        if lib.simd_level() == 0:
            return {}, ("this CPU has no fused multiply-add instruction (x86 before Haswell): the C kernels would "
                        "call a slow library fmaf, so the NumPy kernels run"), None
        return fns, None, lib
    except (OSError, AttributeError) as e:  # a stale or foreign build: say so, run the NumPy kernels
        return {}, f"the native library {path} could not be loaded ({e}); reinstall the package to rebuild it", None


_FNS, UNAVAILABLE, _LIB = _load()
_enabled = bool(_FNS)
if _LIB is not None and hasattr(_LIB, "pool_run"):  # POSIX builds: the workers wait in C (threads.py)
    try:
        threads.use_native_pool(_LIB)
    except AttributeError as e:  # a stale build with part of the pool: the Python pool serves
        warnings.warn(f"the native library's thread pool is incomplete ({e}); reinstall the package to rebuild it",
                      stacklevel=2)


def available() -> bool:
    """Whether the compiled kernels were built, load and suit this CPU (`UNAVAILABLE` says why not)."""
    return bool(_FNS)


def set_native_kernels(on: bool) -> None:
    """Use the C kernels (True, the default where they were built) or the NumPy ones (False) on NumPy arrays."""
    global _enabled
    if on and not _FNS:
        raise RuntimeError(f"native kernels requested but unavailable: {UNAVAILABLE}")
    _enabled = bool(on)


def native_kernels() -> bool:
    """Whether NumPy float arrays go to the C kernels now."""
    return _enabled


def usable(*arrays: Any) -> bool:
    """True when the C kernels are on and every array is a NumPy float32/float64 array of one dtype."""
    if not _enabled:
        return False
    a0 = arrays[0]
    if not isinstance(a0, np.ndarray) or a0.dtype not in _SUFFIX:
        return False
    return all(a is None or (isinstance(a, np.ndarray) and a.dtype == a0.dtype) for a in arrays[1:])


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


def _c(a: Any, dtype: Any = None) -> np.ndarray | None:
    """a as a C-contiguous array (of dtype, where given: an upstream gradient must match the saved arrays')."""
    return None if a is None else np.ascontiguousarray(a, dtype=dtype)


# ---------------------------------------------------------------------------------------------- layer norm
def layer_norm_forward(x, w=None, b=None, eps: float = 1e-5) -> tuple[Any, Any, Any]:
    """kernels.layer_norm.layer_norm_forward in C: (out, mean, rstd), mean and rstd (..., 1)."""
    x, w, b = _c(x), _c(w), _c(b)
    c = x.shape[-1]
    rows = x.size // c if c else 0
    out = np.empty_like(x)
    mean = np.empty(x.shape[:-1] + (1,), dtype=x.dtype)
    rstd = np.empty_like(mean)
    _call("layer_norm_fwd", x.dtype, rows, _work("layer_norm_fwd", x.size),
          (_ptr(x), _ptr(w), _ptr(b), _ptr(out), _ptr(mean), _ptr(rstd), c), (eps,))
    return out, mean, rstd


def layer_norm_backward(dout, x, w, mean, rstd) -> tuple[Any, Any | None, Any | None]:
    """kernels.layer_norm.layer_norm_backward in C: (dx, dw, db); dw is None when w is None.

    dw and db are summed per block of LN_BLOCK rows (each block its own row of `part`), then over the blocks in a
    fixed order: the same bits whatever thread ran which block."""
    x = _c(x)
    dout, w, mean, rstd = _c(dout, x.dtype), _c(w), _c(mean), _c(rstd)
    c = x.shape[-1]
    rows = x.size // c if c else 0
    dx = np.empty_like(x)
    blocks = -(-rows // LN_BLOCK)
    part = np.zeros((blocks, 2, c), dtype=x.dtype)  # [block, (dw, db), C]
    _call("layer_norm_bwd", x.dtype, blocks, _work("layer_norm_bwd", x.size),  # units: blocks of rows
          (_ptr(dout), _ptr(x), _ptr(w), _ptr(mean), _ptr(rstd), _ptr(dx), _ptr(part), rows, c, LN_BLOCK))
    sums = part.sum(axis=0)  # (2, C): NumPy's pairwise sum over the blocks, in block order
    return dx, (sums[0] if w is not None else None), sums[1]


# ---------------------------------------------------------------------------------------------- softmax
def softmax_forward(x) -> Any:
    """Softmax over the last axis (torch's semantics: a row of −∞ or with a nan gives nan)."""
    x = _c(x)
    out = np.empty_like(x)
    c = x.shape[-1] if x.ndim else 1
    if x.size:
        _call("softmax_fwd", x.dtype, x.size // c, _work("softmax_fwd", x.size), (_ptr(x), _ptr(out), c))
    return out


def softmax_backward(dout, out) -> Any:
    """dx = p ⊙ (dout − Σ dout ⊙ p) over the last axis, p the forward's output."""
    out = _c(out)
    dout = _c(dout, out.dtype)
    dx = np.empty_like(out)
    c = out.shape[-1] if out.ndim else 1
    if out.size:
        _call("softmax_bwd", out.dtype, out.size // c, _work("softmax_bwd", out.size),
              (_ptr(dout), _ptr(out), _ptr(dx), c))
    return dx


def cross_entropy_rows(logits, targets, probs, losses) -> None:
    """softmax of (N, C) logits into probs and loss_r = log Σ e^(x_r − m) − (x_{r,t_r} − m) into losses (N,), for
    targets (N,) in [0, C) (ignored rows pass 0; their loss is masked by the caller)."""
    logits = _c(logits)
    targets = np.ascontiguousarray(targets, dtype=np.int64)
    n, c = logits.shape
    if targets.size and (targets.min() < 0 or targets.max() >= c):  # C would read outside the row
        raise IndexError(f"cross_entropy targets must lie in [0, {c}), got {targets.min()}..{targets.max()}")
    _call("cross_entropy_rows", logits.dtype, n, _work("cross_entropy_rows", logits.size),
          (_ptr(logits), _ptr(targets), _ptr(probs), _ptr(losses), c))


def causal_softmax_forward(scores, scale: float) -> Any:
    """Causal attention's P = softmax(scale·S + causal mask) over the last axis of contiguous scores (..., tq, tk),
    tq ≤ tk, in place: the masked entries become 0 and are never read (a nan behind the mask stays out)."""
    assert scores.flags.c_contiguous and scores.shape[-2] <= scores.shape[-1], "the caller checks layout and shape"
    tq, tk = scores.shape[-2], scores.shape[-1]
    rows = scores.size // tk if tk else 0
    if _call("causal_softmax_fwd", scores.dtype, rows, _work("causal_softmax_fwd", scores.size),
             (_ptr(scores), _ptr(scores), tq, tk), (scale,)):
        raise MemoryError(f"causal softmax: no memory for a row buffer of {tk} keys")
    return scores


def causal_softmax_backward(dp, probs, factor: float) -> Any:
    """dS = factor·P ⊙ (dP − rowsum(dP ⊙ P)) over the allowed keys, 0 beyond, in place over dp (contiguous)."""
    dp, probs = _c(dp, probs.dtype), _c(probs)
    tq, tk = probs.shape[-2], probs.shape[-1]
    rows = probs.size // tk if tk else 0
    _call("causal_softmax_bwd", probs.dtype, rows, _work("causal_softmax_bwd", probs.size),
          (_ptr(dp), _ptr(probs), _ptr(dp), tq, tk), (factor,))
    return dp


# ---------------------------------------------------------------------------------------------- whole attention
# Head dims up to ATTENTION_MAX_E and ATTENTION_MIN_T to ATTENTION_MAX_T keys take the whole-attention kernel: the
# sizes measured (forward + backward against the batched-product path, float32, 2 threads, 2026-12-03): 0.42x at
# (12, 4, 64, 32), 0.46x at (2, 12, 256, 64), 0.79x at (1, 12, 1024, 64), 0.39x at E 256, 0.54x at (1, 12, 48, 64);
# but 0.96-1.11x at 16 and 32 keys (and the forward alone 1.1-1.3x: generation without a cache), where the Python
# around one C call costs as much as NumPy's few small products. Beyond them the products path runs, and long
# contexts are flash_attention's (the kernel keeps a (tq, tk) buffer per thread, as the path keeps P).
ATTENTION_MAX_E = 256
ATTENTION_MIN_T = 33
ATTENTION_MAX_T = 1024


def _head_strides(a: np.ndarray) -> tuple[int, ...] | None:
    """(batch, head, time) strides of a (b, h, t, e) or (h, t, e) array in elements, or None where its last axis is
    not contiguous (the kernel reads each row as a vector)."""
    item, st = a.itemsize, a.strides
    if st[-1] != item:
        return None
    out = (0, st[0] // item, st[1] // item) if a.ndim == 3 else (st[0] // item, st[1] // item, st[2] // item)
    return out if all(s * item == t for s, t in zip(out[3 - a.ndim + 1:], st)) else None


def whole_attention_fits(q, k, v, keep=None, groups: int = 1) -> bool:
    """Whether causal attention on these heads goes to the whole-attention C kernel: NumPy arrays of one float
    dtype, 3-D or 4-D with equal batch shapes (no broadcast), `groups` query heads per key/value head (1 without
    GQA), tq ≤ tk and ATTENTION_MIN_T ≤ tk ≤ ATTENTION_MAX_T, head dims ≤ ATTENTION_MAX_E, and a keep-mask (if
    any) of the scores' full shape."""
    if not usable(q, k, v) or not (q.ndim == k.ndim == v.ndim and q.ndim in (3, 4)):
        return False
    tq, tk = q.shape[-2], k.shape[-2]
    if q.shape[:-3] != k.shape[:-3] or k.shape[:-1] != v.shape[:-1] or k.shape[-3] * groups != q.shape[-3]:
        return False
    if not (0 < tq <= tk and ATTENTION_MIN_T <= tk <= ATTENTION_MAX_T):
        return False
    e, ev = q.shape[-1], v.shape[-1]
    if e != k.shape[-1] or not (0 < e <= ATTENTION_MAX_E and 0 < ev <= ATTENTION_MAX_E):
        return False
    return keep is None or (keep.dtype == np.bool_ and keep.shape == q.shape[:-2] + (tq, tk))


def _heads_like(lead: tuple, t: int, e: int, dtype: Any) -> np.ndarray:
    """An empty (.., h, t, e) array laid out as (.., t, h, e): the model merges heads by transposing back, so the
    output (and each gradient) is then one contiguous block, and the merge's reshape is free."""
    if len(lead) == 2:
        return np.empty((lead[0], t, lead[1], e), dtype=dtype).transpose(0, 2, 1, 3)
    return np.empty((t, lead[0], e), dtype=dtype).transpose(1, 0, 2)


def _strides_of(*arrays) -> list[int]:
    """The (batch, head, time) strides of each array (rows contiguous: _rows_c's or _heads_like's), in order."""
    out: list[int] = []
    for a in arrays:
        out += _head_strides(a)
    return out


def _rows_c(a: np.ndarray, dtype: Any = None) -> np.ndarray:
    """a with contiguous rows (copied only where its last axis is strided), of dtype where given."""
    a = np.asarray(a, dtype=dtype)
    return a if _head_strides(a) is not None else np.ascontiguousarray(a)


def causal_attention_forward(q, k, v, scale: float, keep=None, c: float = 1.0,
                             groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(O, P) of causal attention in one C call over every head (whole_attention_fits says when): O = P̃ V with P the
    (.., tq, tk) probabilities (kept for backward, 0 above the diagonal) and P̃ = c·P ⊙ D under dropout (keep D,
    c = 1/(1 − p)); query head h reads key/value head h // groups (GQA)."""
    q, k, v = _rows_c(q), _rows_c(k), _rows_c(v)
    lead, tq, tk = q.shape[:-2], q.shape[-2], k.shape[-2]
    units = math.prod(lead)
    out = _heads_like(lead, tq, v.shape[-1], q.dtype)
    probs = np.empty(lead + (tq, tk), dtype=q.dtype)
    keep = None if keep is None else np.ascontiguousarray(keep)
    ints = (_ptr(q), _ptr(k), _ptr(v), _ptr(out), _ptr(probs), _ptr(keep), tq, tk, q.shape[-1], v.shape[-1],
            lead[-1], *_strides_of(q, k, v, out), groups)
    if _call("causal_attention_fwd", q.dtype, units, _work("causal_attention_fwd", units * tq * tk * q.shape[-1]),
             ints, (scale, c)):
        raise MemoryError(f"attention: no memory for a head's buffers ({tk} keys of {q.shape[-1]})")
    return out, probs


def causal_attention_backward(dout, q, k, v, probs, scale: float, keep=None, c: float = 1.0,
                              groups: int = 1) -> tuple[Any, Any, Any]:
    """(dq, dk, dv) for causal_attention_forward, from its saved P, in one C call over every key/value head (each
    one's dK and dV summed over its `groups` query heads in order: the same bits at any thread count)."""
    q, k, v = _rows_c(q), _rows_c(k), _rows_c(v)
    dout = _rows_c(dout, q.dtype)
    lead, tq, tk = q.shape[:-2], q.shape[-2], k.shape[-2]
    units = math.prod(k.shape[:-2])  # key/value heads
    dq = _heads_like(lead, tq, q.shape[-1], q.dtype)
    dk, dv = _heads_like(k.shape[:-2], tk, k.shape[-1], q.dtype), _heads_like(k.shape[:-2], tk, v.shape[-1], q.dtype)
    keep = None if keep is None else np.ascontiguousarray(keep)
    ints = (_ptr(dout), _ptr(q), _ptr(k), _ptr(v), _ptr(probs), _ptr(keep), _ptr(dq), _ptr(dk), _ptr(dv), tq, tk,
            q.shape[-1], v.shape[-1], lead[-1], *_strides_of(dout, q, k, v, dq, dk, dv), groups)
    if _call("causal_attention_bwd", q.dtype, units, _work("causal_attention_bwd", units * tq * tk * q.shape[-1]),
             ints, (scale, c)):
        raise MemoryError(f"attention backward: no memory for a head's buffers ({tq} x {tk} scores)")
    return dq, dk, dv


# ---------------------------------------------------------------------------------------------- AdamW
def adamw_update_flat(p, g, m, v, lr: float, b1: float, b2: float, eps: float, wd: float, t: int) -> None:
    """kernels.adamw.adamw_update in one C pass over flat contiguous buffers (the same bits), across the pool."""
    step_size, bc2_sqrt = lr / (1 - b1 ** t), math.sqrt(1 - b2 ** t)  # as adamw._coefficients
    decay = 1 - lr * wd if wd else 1.0
    _call("adamw", p.dtype, p.shape[0], _work("adamw", p.shape[0]), tuple(_ptr(a) for a in (p, g, m, v)),
          (decay, 1 - b1, b2, 1 - b2, bc2_sqrt, eps, step_size), align=4096)


# ---------------------------------------------------------------------------------------------- GELU
def _elementwise(name: str, dtype: Any, arrays: tuple) -> None:
    """Kernel `name` over the elements of arrays (pointers; None as 0), split 4096-aligned."""
    n = arrays[0].size
    if n:
        _call(name, dtype, n, _work(name, n), tuple(_ptr(a) for a in arrays), align=4096)


def gelu_tanh_forward(x) -> Any:
    """½·x·(1 + tanh u) in C (float32 as x·σ(2u), the same value without the cancellation near tanh u = −1)."""
    x = _c(x)
    out = np.empty_like(x)
    _elementwise("gelu_tanh_fwd", x.dtype, (x, out))
    return out


def gelu_tanh_backward(dout, x) -> Any:
    """dx for gelu_tanh_forward, recomputed from x (nothing but x is kept between the passes)."""
    x = _c(x)
    dout = _c(dout, x.dtype)
    dx = np.empty_like(x)
    _elementwise("gelu_tanh_bwd", x.dtype, (dout, x, dx))
    return dx


def gelu_erf_forward(x, need_grad: bool = True) -> tuple[Any, Any]:
    """x·Φ(x) in C; returns (out, dout/dx = Φ(x) + x·φ(x)), computed in the same pass so backward is a product, or
    (out, None) without need_grad (no gradient will be asked for: the derivative is not computed)."""
    x = _c(x)
    out = np.empty_like(x)
    deriv = np.empty_like(x) if need_grad else None
    _elementwise("gelu_erf_fwd", x.dtype, (x, out, deriv))
    return out, deriv


def gelu_erf_backward(dout, deriv) -> Any:
    """dx = dout ⊙ (Φ(x) + x·φ(x)) from the derivative gelu_erf_forward saved."""
    deriv = _c(deriv)
    dout = _c(dout, deriv.dtype)
    dx = np.empty_like(deriv)
    _elementwise("gelu_erf_bwd", deriv.dtype, (dout, deriv, dx))
    return dx


def exp32(x) -> np.ndarray:
    """e^x of a float32 array by the C kernels' own exponential (what their float32 softmax and GELU use)."""
    x = _c(x, np.float32)
    out = np.empty_like(x)
    _elementwise("exp", np.float32, (x, out))
    return out


def _from_env() -> None:
    value = os.environ.get("TINYTENSOR_NATIVE", "1")
    if value not in ("0", "1"):
        warnings.warn(f"TINYTENSOR_NATIVE={value!r} must be 0 or 1; using 1", stacklevel=3)
    elif value == "0":
        set_native_kernels(False)


_from_env()

__all__ = ["available", "set_native_kernels", "native_kernels", "usable", "UNAVAILABLE", "LN_BLOCK",
           "layer_norm_forward", "layer_norm_backward", "causal_softmax_forward", "causal_softmax_backward",
           "cross_entropy_rows", "adamw_update_flat", "whole_attention_fits", "causal_attention_forward",
           "causal_attention_backward", "softmax_forward", "softmax_backward", "gelu_tanh_forward",
           "gelu_tanh_backward", "gelu_erf_forward", "gelu_erf_backward", "exp32"]
