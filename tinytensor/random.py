"""The engine's random numbers: one seeded generator for dropout masks (torch.manual_seed's counterpart).

NumPy arrays draw from a `numpy.random.Generator` (PCG64); CuPy arrays from CuPy's own generator seeded with the
same seed. The two streams differ, so a seed gives reproducible masks per array library, not identical masks
across NumPy and CuPy (nor identical to torch's).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

_seed = 0
_generator = np.random.default_rng(_seed)
_cupy_generator = None  # created on first use, so that importing tinytensor never imports cupy


def manual_seed(seed: int) -> None:
    """Reseed the NumPy generator and (lazily) the CuPy one."""
    global _seed, _generator, _cupy_generator
    _seed, _generator, _cupy_generator = int(seed), np.random.default_rng(int(seed)), None


def generator() -> np.random.Generator:
    """The seeded NumPy generator that dropout draws from (seed 0 until `manual_seed` is called)."""
    return _generator


MASK_BITS = 16      # random bits per mask element on NumPy where p allows (drop_threshold)
MASK_REL_ERR = 1e-3  # the largest relative error of P(drop) the 16-bit draws may make, else float32 draws


def drop_threshold(p: float) -> int | None:
    """The 16-bit draw below which an element is dropped, so that P(drop) = threshold / 2¹⁶ is within
    MASK_REL_ERR of p (p = 0.1 gives 0.1000061); None where no such threshold exists (tiny p, p near 1)."""
    t = round(p * (1 << MASK_BITS))
    ok = 0 < t < (1 << MASK_BITS) and abs(t - p * (1 << MASK_BITS)) <= MASK_REL_ERR * p * (1 << MASK_BITS)
    return t if ok else None


def keep_mask(shape: tuple[int, ...], p: float, xp: Any = np) -> Any:
    """A boolean array of `shape` on xp's device, True with probability 1 − p (the elements dropout keeps).

    On NumPy each element compares 16 raw bits of the PCG64 stream (four per 64-bit draw) with p·2¹⁶: a third of
    the cost of a float32 draw per element (the generator dominates a small model's dropout), p quantised to 2⁻¹⁶
    where that moves P(drop) by at most MASK_REL_ERR relative; other p take one float32 draw per element.
    """
    global _cupy_generator
    if xp is np:
        n, t = math.prod(shape), drop_threshold(p)
        if t is None:
            return _generator.random(shape, dtype=np.float32) >= p
        raw = _generator.bit_generator.random_raw(-(-n // 4))  # four 16-bit draws per 64-bit output
        return (raw.view(np.uint16)[:n] >= np.uint16(t)).reshape(shape)
    if _cupy_generator is None:
        _cupy_generator = xp.random.RandomState(_seed)
    return _cupy_generator.random_sample(shape, dtype=np.float32) >= p


def get_state() -> dict[str, Any]:
    """The generator's state (seed and PCG64 state), for checkpoints that must resume bit for bit."""
    return {"seed": _seed, "numpy": _generator.bit_generator.state}


def set_state(state: dict[str, Any]) -> None:
    """Restore a state from get_state (the CuPy generator restarts from the seed)."""
    manual_seed(state["seed"])
    _generator.bit_generator.state = state["numpy"]
