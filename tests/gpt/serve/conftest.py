"""Fixtures for the serve tests: a tiny checkpoint and one live server shared by a module (live_server.py)."""
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from live_server import make_tiny_checkpoint, start_server  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def live(tiny_checkpoint):
    s = start_server(tiny_checkpoint, "--max-batch", "8", "--max-queue", "16", "--max-body-bytes", "4096")
    yield s
    s.stop()


