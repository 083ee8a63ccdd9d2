"""GELU activation (Hendrycks & Gimpel 2016), both forms torch offers, each with its hand-derived backward.

tanh approximation (the book's ch. 4 `GELU`, torch's approximate="tanh"), with c = √(2/π), k = 0.044715:
    out = ½·x·(1 + tanh u),  u = c·(x + k·x³)
    dout/dx = ½·(1 + tanh u) + ½·x·(1 − tanh² u)·c·(1 + 3k·x²)

exact (torch's approximate="none"), with Φ the standard normal CDF and φ its density:
    out = x·Φ(x) = ½·x·(1 + erf(x/√2)),   dout/dx = Φ(x) + x·φ(x),  φ(x) = e^(−x²/2)/√(2π)

`gelu_tanh_forward_inplace` / `gelu_tanh_backward_inplace` are the fast NumPy pair the engine uses: the same
formulas with no temporaries beyond one or two arrays, tanh u saved instead of recomputed, split across threads.
`gelu_erf_forward_inplace` / `gelu_erf_backward_inplace` are the exact form's pair: Φ from W. J. Cody's rational
approximations (kernels/erf.py) over in-cache chunks, and the derivative Φ(x) + x·φ(x) computed in the same pass
(φ shares e^(−x²/2) with Φ's erfc), so backward is a single multiply.
In float32 the pair takes a cheaper route of ~25 passes instead of ~60 (`_gelu_erf32_chunk`): Φ = ½(1 + tanh g(x))
with g = artanh(erf(x/√2)) fitted by an odd polynomial, good to 3e-8 absolute, below float32's rounding at ½.
"""
from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from ..tensor import get_array_module
from . import erf as _erf_kernels
from .threads import run_chunks

_C = math.sqrt(2.0 / math.pi)  # kept as a Python float so float32 inputs stay float32
_K = 0.044715


def gelu_tanh_forward(x):
    """½·x·(1 + tanh(√(2/π)(x + 0.044715x³)))."""
    xp = get_array_module(x)
    t = xp.tanh(_C * (x + _K * x * x * x))
    t += 1.0
    t *= 0.5 * x
    return t


def gelu_tanh_backward(dout, x):
    """dx for gelu_tanh_forward (x is the forward input; tanh u is recomputed)."""
    xp = get_array_module(x)
    t = xp.tanh(_C * (x + _K * x * x * x))
    # term 1: d/dx of ½x with (1 + tanh u) held fixed;  term 2: ½x · sech²u · du/dx
    dx = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * (_C * (1.0 + 3.0 * _K * x * x))
    dx *= dout
    return dx


def gelu_tanh_forward_inplace(x) -> tuple:
    """gelu_tanh_forward with one temporary, split across the thread pool; returns (out, tanh u) for backward.

    Same formula, regrouped as u = x·(c + c·k·x²) so every step is an in-place pass over one array.
    """
    x = np.ascontiguousarray(x)  # flat views below need C order
    out = np.empty(x.shape, dtype=x.dtype)
    th = np.empty(x.shape, dtype=x.dtype)
    xf, of, tf = x.reshape(-1), out.reshape(-1), th.reshape(-1)

    def work(lo: int, hi: int) -> None:
        xs, t, o = xf[lo:hi], tf[lo:hi], of[lo:hi]
        np.multiply(xs, xs, out=t)
        t *= _C * _K
        t += _C
        t *= xs                 # u = c·(x + k·x³)
        np.tanh(t, out=t)       # tanh u, kept for backward
        np.add(t, 1.0, out=o)
        o *= xs
        o *= 0.5                # ½·x·(1 + tanh u)

    run_chunks(work, xf.shape[0], xf.shape[0], align=4096)
    return out, th


def gelu_tanh_backward_inplace(dout, x, th):
    """gelu_tanh_backward from the saved tanh u (no recomputation), two temporaries, across the thread pool."""
    x = np.ascontiguousarray(x)
    dx = np.empty(x.shape, dtype=x.dtype)
    tmp = np.empty(x.shape, dtype=x.dtype)
    xf, tf, df, of, mf = x.reshape(-1), th.reshape(-1), dx.reshape(-1), np.ascontiguousarray(dout).reshape(-1), \
        tmp.reshape(-1)

    def work(lo: int, hi: int) -> None:
        xs, t, d, g, m = xf[lo:hi], tf[lo:hi], df[lo:hi], of[lo:hi], mf[lo:hi]
        np.multiply(xs, xs, out=m)
        m *= 3.0 * _C * _K
        m += _C                 # du/dx = c·(1 + 3k·x²)
        np.multiply(t, t, out=d)
        np.subtract(1.0, d, out=d)
        d *= m
        d *= xs
        d *= 0.5                # term 2: ½x · sech²u · du/dx
        np.multiply(t, 0.5, out=m)
        d += m
        d += 0.5                # term 1: ½·(1 + tanh u)
        d *= g

    run_chunks(work, xf.shape[0], xf.shape[0], align=4096)
    return dx


def _erf(x):
    """erf elementwise, to float64 rounding: CuPy's native kernel on the GPU, else Cody's rational approximations
    (kernels/erf.py), vectorised."""
    xp = get_array_module(x)
    if xp is not np:
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x)
    return _erf_kernels.erf(x)


def gelu_erf_forward(x):
    """x·Φ(x) = ½·x·(1 + erf(x/√2))."""
    out = _erf(x * (1.0 / math.sqrt(2.0)))
    out += 1.0
    out *= 0.5 * x
    return out


def gelu_erf_backward(dout, x):
    """dx for gelu_erf_forward: dout · (Φ(x) + x·φ(x))."""
    xp = get_array_module(x)
    cdf = 0.5 * (1.0 + _erf(x * (1.0 / math.sqrt(2.0))))  # term 1: Φ(x)
    pdf = xp.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))  # term 2: x·φ(x), from d/dx Φ(x) = φ(x)
    dx = cdf + x * pdf
    dx *= dout
    return dx


_CHUNK = 1 << 15  # elements per in-cache pass (256 KB of float64): the ~60 passes over it stay in L2


def _mask(cond_out, x, threshold: float, op) -> Any:
    """op(x, threshold) as 0.0/1.0 in x's dtype (a float mask blends by arithmetic: boolean selects are ~10x slower)."""
    return op(x, threshold, out=cond_out, casting="unsafe")


def _gelu_erf_chunk(xs, o, d) -> None:
    """o = x·Φ(x) and d = Φ(x) + x·φ(x) for one chunk, with Φ(x) = ½·erfc(−x/√2) from Cody's ranges, a = |x|/√2:
    both the small and the middle range are evaluated on every element (a clipped into each) and blended with a
    0/1 mask; the far tail (a > 4, |x| > 5.66) is fixed up only where a chunk has one."""
    dt = xs.dtype.type
    a = np.abs(xs)
    a *= dt(1.0 / math.sqrt(2.0))
    e = np.multiply(a, a)
    np.negative(e, out=e)
    np.exp(e, out=e)  # e^(−a²) = e^(−x²/2) = √(2π)·φ(x), reused below for the derivative
    r = _erf_kernels.ratio(np.clip(a, dt(_erf_kernels.SMALL), dt(_erf_kernels.LARGE)), _erf_kernels.C,
                           _erf_kernels.D)
    r *= e  # erfc(a) for ½ < a <= 4
    far = a > _erf_kernels.LARGE
    if far.any():
        r[far] = _erf_kernels.erfc_large(a[far])  # the far tail's own formula (rare in activations)
    w = _mask(np.empty_like(a), a, _erf_kernels.SMALL, np.less_equal)
    if w.any():
        rs = _erf_kernels.erf_small(np.clip(a, dt(0.0), dt(_erf_kernels.SMALL)))
        np.subtract(1.0, rs, out=rs)  # erfc(a) = 1 − erf(a) for a <= ½
        rs -= r
        rs *= w
        r += rs
    r *= 0.5  # ½·erfc(a) = Φ(−|x|)
    s = _mask(w, xs, 0.0, np.greater_equal)
    np.multiply(r, -2.0, out=o)
    o += 1.0
    o *= s
    o += r  # Φ(x): Φ(−|x|) below 0, 1 − Φ(−|x|) at and above 0
    e *= dt(1.0 / math.sqrt(2.0 * math.pi))
    e *= xs
    np.add(o, e, out=d)  # Φ(x) + x·φ(x)
    o *= xs


# g(x) = artanh(erf(x/√2)) ≈ x·Σ G[k]·x^(2k): an odd polynomial fitted on [0, 5.5] by weighted least squares
# iterated towards minimax (Lawson's algorithm), the weight 1 − erf² (= d erf/dg) so the error is that of Φ. Max
# |Φ error| 2.9e-8 on [0, 30] in exact arithmetic (float32's spacing at ½ is 6e-8). The polynomial is positive
# and increasing beyond 5.5, so tanh saturates to ±1 exactly where float32's Φ is 0 or 1: no clamp is needed.
# tests/tinytensor/test_erf.py checks the error bound and the sign beyond the fitted range.
G = (7.978849414619265e-01, 3.633308456630292e-02, -3.2594966124795176e-05, -5.530619813069531e-05,
     3.96474531288017e-06, -1.3226341755330495e-07, 1.7561730958348676e-09)
_CHUNK32 = 1 << 17  # float32 elements per pass: of 2^14..2^21, the fastest at (2,256,3072) and (12,64,512)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_scratch = threading.local()


def _scratch32(n: int) -> tuple:
    """Three float32 work arrays of n elements owned by the calling thread (reused: no allocation per chunk)."""
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None or bufs[0].shape[0] < n:
        bufs = _scratch.bufs = tuple(np.empty(n, dtype=np.float32) for _ in range(3))
    return tuple(b[:n] for b in bufs)


def _gelu_erf32_chunk(xs, o, d) -> None:
    """float32 o = x·Φ(x), d = Φ(x) + x·φ(x) with Φ = ½(1 + tanh g(x)) (G above) and
    e^(−x²/2) = (1 − h)/(1 + h), h = tanh(x²/4) (tanh is 2x cheaper than exp in NumPy here): both are exact in
    absolute terms to a few float32 ulp of 1, as torch's own float32 ½·x·(1 + erf(x/√2)) is."""
    w, p, h = _scratch32(xs.shape[0])
    np.multiply(xs, xs, out=w)
    np.multiply(w, np.float32(G[-1]), out=p)
    for k in range(len(G) - 2, 0, -1):  # Horner in w = x²
        p += np.float32(G[k])
        p *= w
    p += np.float32(G[0])
    p *= xs
    np.tanh(p, out=p)
    p *= 0.5
    p += 0.5  # Φ(x)
    np.multiply(p, xs, out=o)
    w *= 0.25
    np.tanh(w, out=w)
    np.multiply(w, np.float32(-_INV_SQRT_2PI), out=h)
    h += np.float32(_INV_SQRT_2PI)
    w += 1.0
    h /= w  # φ(x) = e^(−x²/2)/√(2π) = (1 − h)/((1 + h)·√(2π))
    h *= xs
    np.add(p, h, out=d)


def gelu_erf_forward_inplace(x) -> tuple:
    """gelu_erf_forward by in-cache chunks across the thread pool; returns (out, dout/dx) so backward is one pass."""
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape, dtype=x.dtype)
    deriv = np.empty(x.shape, dtype=x.dtype)
    xf, of, df = x.reshape(-1), out.reshape(-1), deriv.reshape(-1)
    chunk, size = (_gelu_erf32_chunk, _CHUNK32) if x.dtype == np.float32 else (_gelu_erf_chunk, _CHUNK)

    def work(lo: int, hi: int) -> None:
        with np.errstate(over="ignore", invalid="ignore"):  # ±inf inputs: inf·0 in the unused branch
            for c in range(lo, hi, size):
                e = min(c + size, hi)
                chunk(xf[c:e], of[c:e], df[c:e])

    run_chunks(work, xf.shape[0], xf.shape[0], align=size)
    return out, deriv


def gelu_erf_backward_inplace(dout, deriv):
    """dx = dout · (Φ(x) + x·φ(x)) from the derivative gelu_erf_forward_inplace saved, across the thread pool."""
    dout = np.ascontiguousarray(dout)
    if dout.shape != deriv.shape:
        return np.multiply(dout, deriv)
    dx = np.empty(deriv.shape, dtype=np.result_type(dout, deriv))
    gf, df, of = dout.reshape(-1), deriv.reshape(-1), dx.reshape(-1)

    def work(lo: int, hi: int) -> None:
        np.multiply(gf[lo:hi], df[lo:hi], out=of[lo:hi])

    run_chunks(work, of.shape[0], of.shape[0], align=4096)
    return dx
