"""Live `tinygpt serve` servers on 127.0.0.1 for the API and page tests: a tiny checkpoint, uvicorn in a thread on a
port the test binds itself (no race for it), a slowed or gated model to hold requests in flight, and the reference
answer of one request decoded alone. The fixtures `tiny_checkpoint` and `live` are imported by the test modules
(a conftest.py here would shadow tests/conftest.py for `from conftest import ...`)."""
import codecs
import socket
import threading
import time

import numpy as np
import pytest
import uvicorn

import backends
from gpt import GPTModel
from gpt.training.checkpoint import save_checkpoint
from gpt.cli import build_parser

TINY_CFG = {"vocab_size": 257, "context_length": 512, "emb_dim": 32, "n_heads": 2, "n_layers": 2, "drop_rate": 0.0,
            "qkv_bias": False}


def make_tiny_checkpoint(out):
    """A random tiny GPT with the bytes tokenizer, saved as `tinygpt train` saves (float64 weights)."""
    model = GPTModel(TINY_CFG, backend=backends.get_backend("numpy", dtype="float64"), seed=3)
    save_checkpoint(out, model, None, {"step": 0, "model_config": model.cfg.to_dict(), "tokenizer": {"kind": "bytes"}})
    return out


class Slow:
    """A model whose every forward first waits `delay` seconds (and reports that it has started), so a test can
    hold requests in flight; everything else is the wrapped model's."""

    def __init__(self, model, delay=0.0):
        self.model, self.delay, self.gate = model, delay, None
        self.entered = threading.Event()

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *args, **kw):
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(60), "the test never opened the gate"
        time.sleep(self.delay)
        return self.model(*args, **kw)


class LiveServer:
    def __init__(self, served, app):
        self.served = served
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        for _ in range(500):   # bounded: 10 s
            if self.server.started:
                break
            time.sleep(0.02)
        assert self.server.started, "uvicorn did not start"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def start_server(checkpoint, *flags, delay=0.0):
    """A LiveServer for `tinygpt serve --checkpoint ... --dtype float64 --model-name tiny FLAGS`."""
    from gpt.serve.app import create_app
    from gpt.cli.serve import load_served_model

    args = build_parser().parse_args(["serve", "--checkpoint", str(checkpoint), "--dtype", "float64",
                                      "--model-name", "tiny", *flags])
    served = load_served_model(args)
    if delay:
        served.engine.model = Slow(served.engine.model, delay)
    return LiveServer(served, create_app(served))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def live(tiny_checkpoint):
    s = start_server(tiny_checkpoint, "--max-batch", "8", "--max-queue", "16", "--max-body-bytes", "4096")
    yield s
    s.stop()


def reference_text(checkpoint, prompt_ids, max_tokens, stop_at_eos=True):
    """What one request alone gets: gpt.generate's greedy tokens, decoded as `tinygpt generate` writes them."""
    from gpt.training.checkpoint import load_model
    from gpt.generate import generate_stream

    model, tok, _ = load_model(checkpoint, backends.get_backend("numpy", dtype="float64"))
    ids = list(generate_stream(model, np.asarray([prompt_ids]), max_tokens, TINY_CFG["context_length"],
                               eos_id=256 if stop_at_eos else None))
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return "".join(dec.decode(tok.decode_bytes([t])) for t in ids) + dec.decode(b"", final=True), ids
