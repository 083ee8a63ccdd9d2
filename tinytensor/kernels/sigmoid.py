"""Log-sigmoid, forward and hand-derived backward (the DPO loss of Rafailov et al. 2023, eq. 7, is −logσ).

With σ(x) = 1 / (1 + e^(−x)):
    logσ(x) = −log(1 + e^(−x)) = min(x, 0) − log1p(e^(−|x|))      (stable: the exponent is never positive)
    d logσ(x)/dx = 1 − σ(x) = σ(−x) = e^(−max(x, 0)) / (1 + e^(−|x|))
The split on the sign of x keeps both e^(−|x|) ≤ 1 and log1p exact for tiny arguments, so logσ(40) = −4.2e−18
comes out with full relative precision (a plain log(1 + e^(−x)) rounds it to 0).
"""
from __future__ import annotations

from ..tensor import get_array_module


def log_sigmoid_forward(x) -> tuple:
    """(logσ(x), e^(−|x|)); the second is kept for backward."""
    xp = get_array_module(x)
    e = xp.exp(-xp.abs(x))                       # e^(−|x|) in (0, 1]: no overflow for any x
    out = xp.minimum(x, 0) - xp.log1p(e)
    return out, e


def log_sigmoid_backward(dout, x, e):
    """dx = dout · σ(−x), σ(−x) = 1 / (1 + e^(−|x|)) for x < 0 and e^(−|x|) / (1 + e^(−|x|)) for x ≥ 0."""
    xp = get_array_module(x)
    sig_neg = xp.where(x < 0, 1.0, e) / (1.0 + e)
    return dout * sig_neg.astype(x.dtype, copy=False)
