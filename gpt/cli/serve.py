"""`tinygpt serve`: the OpenAI-compatible HTTP server and chat page of gpt/serve/ (issue 17) as a command.

Loads what `tinygpt generate` and `tinygpt chat` load (gpt.training.finetune.load_finetuned: a `train`/`finetune`
run, a checkpoint, a Hugging Face GPT-2 directory), starts the batched engine and serves it with uvicorn. SIGTERM or Ctrl-C stop taking new
connections, let the requests in flight finish, and exit 0. Needs `pip install "tinygpt[serve]"`.
"""
from __future__ import annotations

import argparse
import signal
import socket
from pathlib import Path
from typing import Any

from gpt.cli.common import DEFAULT_RUN_DIR, PROG, add_common_args, make_backend, positive, say


def add_serve_command(sub: argparse._SubParsersAction) -> None:
    """Register `tinygpt serve` on the `tinygpt` subparsers."""
    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP API and a chat page for a model",
                       description="Serve a model over HTTP: GET /v1/models, POST /v1/completions and "
                                   "/v1/chat/completions (OpenAI's API, streaming included), GET /health, and a "
                                   "chat page at GET /. Requests that arrive together are generated together.")
    p.add_argument("--checkpoint", metavar="DIR", default=DEFAULT_RUN_DIR,
                   help="a `train`/`finetune` run directory, a checkpoint, or a Hugging Face GPT-2 directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=positive(int, allow_zero=True), default=8000,
                   help="TCP port (default 8000; 0: any free port, printed at start)")
    p.add_argument("--model-name", metavar="NAME", help="the model id clients send (default: the directory name)")
    p.add_argument("--max-batch", type=positive(int), default=16, metavar="N",
                   help="requests decoded together (default 16; 1: one at a time)")
    p.add_argument("--max-queue", type=positive(int, allow_zero=True), default=64, metavar="N",
                   help="requests that may wait for a batch row; more get 503 (default 64)")
    p.add_argument("--max-body-bytes", type=positive(int), default=1 << 20, metavar="N",
                   help="largest request body; larger get 413 (default 1 MiB)")
    add_common_args(p)
    p.set_defaults(func=cmd_serve)


def load_served_model(args: argparse.Namespace) -> Any:
    """The ServedModel the flags describe: the model, its tokenizer, its chat format and a (not started) engine."""
    from gpt.classify import end_of_text_id
    from gpt.serve.app import ServedModel
    from gpt.serve.engine import Engine
    from gpt.serve.prompts import chat_format
    from gpt.training.finetune import load_finetuned

    model, tok, state = load_finetuned(args.checkpoint, make_backend(args), merge=True)
    if (state.get("finetune") or {}).get("task") == "classify":
        raise ValueError(f"{args.checkpoint} is a spam classifier (`finetune classify`), not a text generator; use "
                         f"`{PROG} classify --checkpoint {args.checkpoint} --text TEXT`")
    try:
        eos = end_of_text_id(tok)
    except ValueError:
        eos = None
    name = args.model_name or Path(args.checkpoint).resolve().name
    return ServedModel(Engine(model, max_batch=args.max_batch, max_queue=args.max_queue), tok, name, eos_id=eos,
                       chat_format=chat_format(state), max_body_bytes=args.max_body_bytes)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the model until SIGTERM or Ctrl-C; 0 once the requests in flight have finished."""
    try:
        import uvicorn

        from gpt.serve.app import create_app
    except ImportError as e:
        raise ImportError(f"tinygpt serve needs FastAPI and uvicorn ({e}); pip install \"tinygpt[serve]\"") from None
    served = load_served_model(args)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)   # from here on connections wait in the backlog until uvicorn accepts them
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(create_app(served), log_level="warning", timeout_graceful_shutdown=None))
    say(f"serving {served.name} on http://{host}:{port}/ (OpenAI API at /v1; Ctrl-C or SIGTERM stops)")
    # uvicorn re-raises the signal that stopped it once it has shut down; with these handlers in place (it
    # restores them) SIGTERM or Ctrl-C end the process with status 0 after the in-flight requests have finished
    previous = {sig: signal.signal(sig, lambda signum, frame: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    return 0


__all__ = ["add_serve_command", "cmd_serve", "load_served_model"]
