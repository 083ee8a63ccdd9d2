"""The error function erf and its complement erfc, vectorised over NumPy/CuPy arrays, to float64 rounding.

W. J. Cody, "Rational Chebyshev approximations for the error function", Math. Comp. 23 (1969) 631-637, gives
near-minimax rational approximations in three ranges of a = |x| (the coefficients below are his, as his FORTRAN
routine CALERF prints them, good to about 1e-18 relative):

    a <= 0.5:      erf(a)  = a · P₄(a²) / Q₄(a²)
    0.5 < a <= 4:  erfc(a) = e^(−a²) · P₈(a) / Q₈(a)
    a > 4:         erfc(a) = e^(−a²) / a · (1/√π + a⁻² · P₅(a⁻²) / Q₅(a⁻²))

and erf(−x) = −erf(x), erfc(−x) = 2 − erfc(x), erf = 1 − erfc. Each polynomial is evaluated by Horner's rule in
place, one array pass per step. e^(−a²) is computed as e^(−s²) · e^(−(a − s)(a + s)) with s = a rounded down to a
multiple of 1/16 (s² is exact), Cody's device for keeping the rounding error of a² out of the exponent: without it
erfc(5) would lose ~25 ulp. Python's `math.erf` (the C library's) is the reference in the tests.
"""
from __future__ import annotations

import math

import numpy as np

from ..tensor import get_array_module

# erf(a) = a·P(a²)/Q(a²) on [0, 0.5]; P's leading coefficient last (Cody's A(5)), Q monic
A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02, 3.20937758913846947e03,
      1.85777706184603153e-1)
B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03)
# erfc(a) = e^(−a²)·P(a)/Q(a) on (0.5, 4]
C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01, 2.98635138197400131e02,
      8.81952221241769090e02, 1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03,
      2.15311535474403846e-8)
D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02, 1.62138957456669019e03,
      3.29079923573345963e03, 4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03)
# erfc(a) = e^(−a²)/a·(1/√π + a⁻²·P(a⁻²)/Q(a⁻²)) for a > 4
P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1, 1.60837851487422766e-2,
      6.58749161529837803e-4, 1.63153871373020978e-2)
Q = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1, 6.05183413124413191e-2,
      2.33520497626869185e-3)
INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
SMALL, LARGE = 0.5, 4.0  # Cody's range boundaries
HUGE = 30.0             # erfc(30) < 1e-392: 0 in float64 (the smallest subnormal is 4.9e-324)


def ratio(y, num: tuple, den: tuple):
    """P(y)/Q(y) by Horner's rule, Cody's arrangement: P = num[-1]·yⁿ + ... + num[n-1], Q monic with den."""
    n = len(den)
    xnum = y * y.dtype.type(num[-1])
    xden = y.copy()
    for i in range(n - 1):
        xnum += num[i]
        xnum *= y
        xden += den[i]
        xden *= y
    xnum += num[n - 1]
    xden += den[n - 1]
    xnum /= xden
    return xnum


def erf_small(a):
    """erf(a) for |a| <= 0.5 (odd: the sign of a is kept), Cody's first range."""
    r = ratio(a * a, A, B)
    r *= a
    return r


def _exp_neg_square(a, xp):
    """e^(−a²) with a² split as s² + (a − s)(a + s), s = ⌊16a⌋/16, so the large exponent is exact (Cody)."""
    s = xp.floor(a * 16.0)
    s *= 1.0 / 16.0
    d = (a - s) * (a + s)
    s *= s
    xp.negative(s, out=s)
    xp.exp(s, out=s)
    xp.negative(d, out=d)
    xp.exp(d, out=d)
    s *= d
    return s


def erfc_large(a):
    """erfc(a) for a > 0.5 (Cody's second and third ranges chosen per element; a must be > 0.5)."""
    xp = get_array_module(a)
    a = xp.minimum(a, HUGE)  # erfc underflows to 0 long before; keeps a² and a⁻² finite for a up to inf
    out = ratio(xp.minimum(a, LARGE), C, D)
    far = a > LARGE
    if far.any():
        af = a[far]
        z = 1.0 / (af * af)
        tail = ratio(z, P, Q)
        tail *= z
        tail = (INV_SQRT_PI - tail) / af  # Cody's sign convention: his P holds the correction with a minus
        out[far] = tail
    out *= _exp_neg_square(a, xp)
    return out


def _split(x):
    """(|x|, mask of the elements in the small range)."""
    xp = get_array_module(x)
    a = xp.abs(x)
    return a, a <= SMALL


def erf(x):
    """erf(x) elementwise for a float array, to within a few ulp of the correctly rounded value."""
    xp = get_array_module(x)
    a, small = _split(x)
    out = xp.empty_like(x)
    if small.any():
        out[small] = erf_small(x[small])
    big = ~small
    if big.any():
        r = 1.0 - erfc_large(a[big])
        out[big] = xp.where(x[big] < 0, -r, r)
    return out


def erfc(x):
    """erfc(x) = 1 − erf(x) elementwise, with full relative accuracy where it is tiny (large positive x)."""
    xp = get_array_module(x)
    a, small = _split(x)
    out = xp.empty_like(x)
    if small.any():
        out[small] = 1.0 - erf_small(x[small])
    big = ~small
    if big.any():
        r = erfc_large(a[big])
        out[big] = xp.where(x[big] < 0, 2.0 - r, r)
    return out


def normal_cdf(x):
    """Φ(x) = ½·erfc(−x/√2), the standard normal CDF, accurate in relative terms also far in the lower tail
    (½·(1 + erf(x/√2)) loses every digit there to cancellation)."""
    return 0.5 * erfc(x * (-1.0 / math.sqrt(2.0)))


__all__ = ["erf", "erfc", "normal_cdf", "erf_small", "erfc_large", "ratio", "SMALL", "LARGE", "HUGE"]
