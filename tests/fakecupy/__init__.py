"""A strict CuPy stand-in for the tests: NumPy-backed device arrays with CuPy's host/device rules (test-only).

`install(monkeypatch)` puts the stand-in under the names the project imports (`cupy`, `cupyx`,
`cupyx.scipy.special`) in sys.modules for one test and returns the transfer log; monkeypatch removes it afterwards,
so the `gpu` tests and the "CuPy is missing" test never see it. Never installed for users. See cupy.py for which
CuPy rules it follows and why it is a wrapper class rather than an ndarray subclass.
"""
from __future__ import annotations

import sys
from typing import Any

from . import cupy, cupyx
from .log import TransferLog, transfers

NAMES = {"cupy": cupy, "cupy.cuda": cupy.cuda, "cupy.cuda.runtime": cupy.cuda.runtime, "cupy.random": cupy.random,
         "cupyx": cupyx, "cupyx.scipy": cupyx.scipy, "cupyx.scipy.special": cupyx.scipy.special}


def install(monkeypatch: Any) -> TransferLog:
    """Make `import cupy` / `import cupyx.scipy.special` give the stand-in until the test ends; a fresh log."""
    for name, module in NAMES.items():
        monkeypatch.setitem(sys.modules, name, module)
    from tinytensor import random as tt_random

    monkeypatch.setattr(tt_random, "_cupy_generator", None)   # a generator of a previous (real or fake) cupy
    transfers.reset()
    return transfers


__all__ = ["install", "transfers", "TransferLog", "cupy", "cupyx"]
