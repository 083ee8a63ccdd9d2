"""Throughput and latency of `tinygpt serve`: batched decoding against one request at a time.

A random GPT (bytes tokenizer, vocab 257, context 256, d 256, 4 heads, 4 layers; numpy float32, eval mode) is
served on 127.0.0.1 by uvicorn in this process, once with `--max-batch 16` (requests that arrive together are
decoded together, gpt/serve/engine.py) and once with `--max-batch 1`. At 1, 4 and 16 concurrent clients, each
client sends `--requests` streaming completions back to back (a 24-byte prompt, `--max-tokens` new tokens, greedy,
end of text disabled so every request yields exactly max_tokens). Reported: requests/s and generated tokens/s
over the wall time of the whole round, and the p50/p95 time to first token (request sent -> first text chunk).
Prints a markdown table and writes benchmarks/results/serve.json.

    python -m benchmarks.serve [--requests 4] [--max-tokens 32] [--clients 1,4,16]

Other processes may share the CPU: the load average is printed with the table.
"""
from __future__ import annotations

import argparse
import http.client
import json
import platform
import socket
import statistics
import threading
import time
from typing import Any

from benchmarks.common import blas_description, load_avg, write_json

MODEL = {"vocab_size": 257, "context_length": 256, "emb_dim": 256, "n_heads": 4, "n_layers": 4, "drop_rate": 0.0}
PROMPT = "The quick brown fox jumps"[:24]


def _served(max_batch: int) -> Any:
    import backends
    from gpt import GPTModel
    from gpt.training.corpus import bytes_tokenizer
    from gpt.serve.app import ServedModel
    from gpt.serve.engine import Engine

    model = GPTModel(MODEL, backend=backends.get_backend("numpy", dtype="float32"), seed=0)
    model.eval()
    # eos_id None: every request generates exactly max_tokens, so both modes do the same work
    return ServedModel(Engine(model, max_batch=max_batch, max_queue=256), bytes_tokenizer(), "bench", eos_id=None)


class _Server:
    """uvicorn serving `served` on a free loopback port, in a thread."""

    def __init__(self, served: Any):
        import uvicorn

        from gpt.serve.app import create_app

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(create_app(served), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        for _ in range(1000):   # bounded: 20 s
            if self.server.started:
                return
            time.sleep(0.02)
        raise RuntimeError("uvicorn did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()


def _one_request(port: int, max_tokens: int) -> tuple[float, int]:
    """Send one streaming completion; (seconds to the first text chunk, completion tokens)."""
    body = {"model": "bench", "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    ttft, tokens = None, 0
    for line in r:
        if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
            continue
        chunk = json.loads(line[6:])
        if ttft is None and chunk["choices"] and chunk["choices"][0]["text"]:
            ttft = time.perf_counter() - t0
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    conn.close()
    return (ttft if ttft is not None else time.perf_counter() - t0), tokens


def _round(port: int, clients: int, requests: int, max_tokens: int) -> dict[str, float]:
    """`clients` threads each sending `requests` requests back to back; the round's rates and TTFT percentiles."""
    results: list[tuple[float, int]] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(requests):
            out = _one_request(port, max_tokens)
            with lock:
                results.append(out)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ttfts = sorted(r[0] for r in results)
    return {"requests": len(results), "wall_s": wall, "req_per_s": len(results) / wall,
            "tokens_per_s": sum(r[1] for r in results) / wall, "ttft_p50_ms": 1e3 * statistics.median(ttfts),
            "ttft_p95_ms": 1e3 * ttfts[min(len(ttfts) - 1, int(round(0.95 * (len(ttfts) - 1))))]}


def run(clients: list[int], requests: int, max_tokens: int) -> list[dict[str, Any]]:
    """Every (mode, clients) round; one server per mode, warmed up by one request."""
    rows = []
    for mode, max_batch in (("batched", 16), ("one at a time", 1)):
        server = _Server(_served(max_batch))
        try:
            _one_request(server.port, 4)
            for c in clients:
                rows.append({"mode": mode, "clients": c, **_round(server.port, c, requests, max_tokens)})
        finally:
            server.stop()
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table, with batched tokens/s over one-at-a-time tokens/s at the same client count."""
    solo = {r["clients"]: r["tokens_per_s"] for r in rows if r["mode"] == "one at a time"}
    lines = ["| mode | clients | requests | req/s | tokens/s | TTFT p50 (ms) | TTFT p95 (ms) | tokens/s vs one at a time |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['clients']} | {r['requests']} | {r['req_per_s']:.2f} | "
                     f"{r['tokens_per_s']:.1f} | {r['ttft_p50_ms']:.0f} | {r['ttft_p95_ms']:.0f} | "
                     f"{r['tokens_per_s'] / solo[r['clients']]:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=4, help="requests per client per round (default 4)")
    p.add_argument("--max-tokens", type=int, default=32, help="new tokens per request (default 32)")
    p.add_argument("--clients", default="1,4,16", help="comma-separated client counts (default 1,4,16)")
    args = p.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]
    rows = run(clients, args.requests, args.max_tokens)
    print(f"model {MODEL}, numpy float32; {args.requests} requests per client, {args.max_tokens} tokens each")
    print(table(rows))
    blas = blas_description()
    print(f"BLAS: {'; '.join(blas)}; load average {load_avg()}; {platform.processor() or platform.machine()}")
    path = write_json("serve", {"model": MODEL, "requests_per_client": args.requests, "max_tokens": args.max_tokens,
                                "rows": rows, "blas": blas, "load_avg": load_avg()})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
