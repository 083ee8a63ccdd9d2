"""The engine's random numbers: one seeded generator for dropout masks (torch.manual_seed's counterpart).

NumPy arrays draw from a `numpy.random.Generator` (PCG64); CuPy arrays from CuPy's own generator seeded with the
same seed. The two streams differ, so a seed gives reproducible masks per array library, not identical masks
across NumPy and CuPy (nor identical to torch's).
"""
from __future__ import annotations

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


def keep_mask(shape: tuple[int, ...], p: float, xp: Any = np) -> Any:
    """A boolean array of `shape` on xp's device, True with probability 1 − p (the elements dropout keeps)."""
    global _cupy_generator
    if xp is np:
        return _generator.random(shape, dtype=np.float32) >= p
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
