"""The stand-in `cupyx`: `scatter_add` (unbuffered a[slices] += value, cupyx/_scatter.py) and
`cupyx.scipy.special.erf`, on the fake CuPy's device arrays."""
from __future__ import annotations

import types
from typing import Any

import numpy as np

from . import cupy as _cupy


def scatter_add(a: Any, slices: Any, value: Any) -> None:
    """a[slices] += value, adding once per occurrence of a repeated index (numpy.add.at); a must be on the device."""
    if not isinstance(a, _cupy.ndarray):
        raise TypeError(f"Unsupported type {type(a)}")
    np.add.at(a._a, _cupy._wrap_around(_cupy._index(slices), a._a.shape), _cupy._operand(value))


scipy = types.ModuleType("cupyx.scipy")
scipy.special = types.ModuleType("cupyx.scipy.special")
scipy.special.erf = _cupy._erf
