"""The transfer log of the fake CuPy: every device-to-host (d2h) and host-to-device (h2d) copy, with its call site.

A test resets it, runs a step, and reads `transfers.d2h`; on a failed count, `transfers.where("d2h")` names the lines
of the project that asked for each copy (the first stack frame outside the fake, NumPy and the standard library).
"""
from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass, field

_HERE = os.path.dirname(os.path.abspath(__file__))
_SKIP = (_HERE, os.path.dirname(os.__file__), os.path.dirname(__import__("numpy").__file__))


@dataclass
class TransferLog:
    """Counts and call sites of the copies between the (fake) device and the host since the last reset()."""

    d2h: int = 0
    h2d: int = 0
    sites: list[tuple[str, str, str]] = field(default_factory=list)   # (kind, what, "file:line in function")

    def reset(self) -> None:
        self.d2h = self.h2d = 0
        self.sites.clear()

    def where(self, kind: str = "d2h") -> Counter:
        """How many copies of `kind` each call site made."""
        return Counter(site for k, _, site in self.sites if k == kind)


transfers = TransferLog()


def _caller() -> str:
    f = sys._getframe(2)
    while f is not None and f.f_code.co_filename.startswith(_SKIP):
        f = f.f_back
    if f is None:
        return "?"
    return f"{os.path.relpath(f.f_code.co_filename)}:{f.f_lineno} in {f.f_code.co_name}"


def record(kind: str, what: str) -> None:
    """Count one copy of `kind` ("d2h" or "h2d") and remember where the project asked for it."""
    setattr(transfers, kind, getattr(transfers, kind) + 1)
    transfers.sites.append((kind, what, _caller()))
