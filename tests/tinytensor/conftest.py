"""Fixtures shared by the tinytensor tests: `kernels` runs a test once on the C kernels and once on the NumPy ones."""
from __future__ import annotations

import pytest

from tinytensor.kernels import native


@pytest.fixture(params=["native", "numpy"])
def kernels(request):
    """The kernel set under test: "native" (tinytensor/csrc/native.c) or "numpy" (the reference kernels)."""
    if request.param == "native" and not native.available():
        pytest.skip(f"native kernels unavailable: {native.UNAVAILABLE}")  # test_native.py fails under CI instead
    before = native.native_kernels()
    native.set_native_kernels(request.param == "native")
    yield request.param
    native.set_native_kernels(before)


@pytest.fixture
def numpy_kernels():
    """The NumPy kernels only, for tests of their own paths (the C kernels are switched back on afterwards)."""
    before = native.native_kernels()
    native.set_native_kernels(False)
    yield
    native.set_native_kernels(before)
