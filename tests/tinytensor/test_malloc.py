"""tinytensor.malloc: after tune_malloc() the pages of freed activation-sized arrays are reused, not faulted in
again. Counts minor page faults (getrusage) of a step-like allocation pattern in fresh interpreters, not time."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")

# a step in miniature: a few MiB-sized activations alive together, then all freed, ten times
PATTERN = """
import resource, sys
import numpy as np
from tinytensor.malloc import tune_malloc
applied = tune_malloc() if sys.argv[1] == "tuned" else None
def step():
    arrays = [np.empty(1 << 20, dtype=np.float32) for _ in range(6)]   # 6 x 4 MiB
    for a in arrays:
        a.fill(1.0)                                                     # touch every page
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PATTERN, mode], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@glibc
def test_tuned_malloc_reuses_freed_pages():
    pages = 10 * 6 * 1024  # pages the ten steps touch
    applied, tuned = _faults("tuned")
    assert applied == "True"
    _, default = _faults("default")
    assert default > pages // 4, f"glibc's defaults faulted only {default} times: the pattern shows nothing"
    assert tuned < pages // 20, f"{tuned} page faults with tune_malloc() for {pages} pages touched"


@glibc
def test_numpy_backend_applies_it():
    import backends
    import tinytensor.malloc as m

    backends.get_backend("numpy")
    assert m._applied is True and m.tune_malloc() is True
