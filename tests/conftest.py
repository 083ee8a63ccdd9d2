"""Shared test fixtures: where the shared data lives, and how a missing file is reported; `kernels`, which runs a
test once on tinytensor's C kernels and once on its NumPy ones.

Data files are found through TINYGPT_DATA_DIR, then ../shared/data beside the project root. On a user's
machine a missing file skips the test with a reason; under CI (CI=true) it fails, so a green CI never hides
a check that did not run.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path | None:
    """The shared data folder, or None when neither TINYGPT_DATA_DIR nor ../shared/data exists."""
    env = os.environ.get("TINYGPT_DATA_DIR")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


def require_data(relpath: str) -> Path:
    """Path of a shared data file; skip the test without it, or fail under CI."""
    d = data_dir()
    path = d / relpath if d else None
    if path is None or not path.exists():
        msg = f"data file {relpath!r} not found (set TINYGPT_DATA_DIR or put it in ../shared/data)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Run `tinygpt ARGV` in-process: (exit status, stdout, stderr)."""
    from gpt.cli import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    """tiktoken's "gpt2" encoding, read offline from the shared tiktoken-cache folder."""
    tiktoken = pytest.importorskip("tiktoken")
    cache = require_data("tiktoken-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        return tiktoken.get_encoding("gpt2")


@pytest.fixture
def shared_data():
    """Fixture form of require_data: `shared_data("the-verdict.txt")`."""
    return require_data


def _has_cuda() -> bool:
    try:
        import cupy  # noqa: F401

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    """Under pytest-xdist each worker gets one BLAS/torch thread: two workers with two threads each on a 2-core
    machine oversubscribe it, and small ops then slow down tens of times (seen here)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture
def fake_cupy(monkeypatch):
    """The strict CuPy stand-in (tests/fakecupy) installed as `cupy`/`cupyx` for one test; returns its transfer log
    (`.d2h`, `.h2d`, `.where()`). Removed after the test, so `gpu` tests only ever see a real CuPy."""
    import fakecupy

    return fakecupy.install(monkeypatch)


@pytest.fixture(params=["native", "numpy"])
def kernels(request):
    """The kernel set under test: "native" (tinytensor/csrc/native.c) or "numpy" (the reference kernels)."""
    from tinytensor.kernels import native

    if request.param == "native" and not native.available():
        pytest.skip(f"native kernels unavailable: {native.UNAVAILABLE}")  # test_native.py fails under CI instead
    before = native.native_kernels()
    native.set_native_kernels(request.param == "native")
    yield request.param
    native.set_native_kernels(before)


@pytest.fixture
def numpy_kernels():
    """The NumPy kernels only, for tests of their own paths (the C kernels are switched back on afterwards)."""
    from tinytensor.kernels import native

    before = native.native_kernels()
    native.set_native_kernels(False)
    yield
    native.set_native_kernels(before)
