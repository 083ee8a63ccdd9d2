"""Causal attention's two NumPy paths against each other (issue 20): the whole-attention C kernel
(tinytensor/csrc/native.c, "fused attention": one call forward, one backward) and the batched products around the
C softmax (tinytensor/kernels/attention.py). Forward + backward on heads strided as the model's (views of its
(b, t, 3, h, e) projection), float32, in one process, the two paths alternating round by round; min and median ms
per call, and the largest difference between their outputs and gradients. The table behind native.ATTENTION_MIN_T
and ATTENTION_MAX_T (where the kernel is used).

    python -m benchmarks.attention_paths [--shapes 12,64,4,32 2,256,12,64] [--rounds 7] [--calls 20] [--dropout 0.1]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

# (batch, keys, heads, head dim): below, around and above the floor of 33 keys; the tiny, shakespeare-char, small
# and 124M configs' heads; a 1,024-key context
DEFAULT_SHAPES = [(16, 16, 4, 16), (1, 32, 12, 64), (1, 48, 12, 64), (16, 64, 4, 16), (12, 64, 4, 32),
                  (8, 128, 4, 64), (2, 256, 12, 64), (1, 1024, 12, 64)]


def model_heads(b: int, t: int, h: int, e: int, rng: np.random.Generator) -> list[np.ndarray]:
    """q, k, v (b, h, t, e) as the model makes them: transposed views of one (b, t, 3, h, e) projection."""
    x = rng.standard_normal((b, t, 3, h, e)).astype(np.float32)
    return [x[:, :, i].transpose(0, 2, 1, 3) for i in range(3)]


def _run(q, k, v, dout, keep, p: float) -> tuple[Any, ...]:
    from tinytensor.kernels import attention as katt

    out, saved = katt.attention_forward(q, k, v, is_causal=True, dropout_keep=keep, dropout_p=p)
    return (out,) + katt.attention_backward(dout, saved) + (bool(saved.get("whole")),)


def time_paths(shape: tuple[int, int, int, int], rounds: int, calls: int, dropout: float = 0.0,
               seed: int = 0) -> dict[str, Any]:
    """{path: {min_ms, median_ms}} for "products" and "whole" at one shape, and max_rel_diff between their results;
    the native module's limits are restored afterwards."""
    from tinytensor.kernels import native

    b, t, h, e = shape
    rng = np.random.default_rng(seed)
    q, k, v = model_heads(b, t, h, e, rng)
    dout = rng.standard_normal(q.shape).astype(np.float32)
    keep = rng.random((b, h, t, t)) >= dropout if dropout > 0 else None
    limits = {"products": (1, 0), "whole": (1, 1 << 30)}  # (ATTENTION_MIN_T, ATTENTION_MAX_T)
    before = native.ATTENTION_MIN_T, native.ATTENTION_MAX_T
    times: dict[str, list[float]] = {name: [] for name in limits}
    results = {}
    try:
        for _ in range(rounds + 1):  # the first round warms both paths up, untimed
            for name, (lo, hi) in limits.items():
                native.ATTENTION_MIN_T, native.ATTENTION_MAX_T = lo, hi
                t0 = time.perf_counter()
                for _ in range(calls):
                    results[name] = _run(q, k, v, dout, keep, dropout)
                times[name].append((time.perf_counter() - t0) / calls * 1e3)
    finally:
        native.ATTENTION_MIN_T, native.ATTENTION_MAX_T = before
    assert not results["products"][-1] and (results["whole"][-1] or not native.available()), "a path was not taken"
    diff = max(float(np.abs(a - c).max() / max(np.abs(c).max(), 1e-30))
               for a, c in zip(results["whole"][:-1], results["products"][:-1]))
    out: dict[str, Any] = {name: {"min_ms": min(ts[1:]), "median_ms": statistics.median(ts[1:])}
                           for name, ts in times.items()}
    out["max_rel_diff"] = diff
    return out


def markdown(rows: list[tuple[tuple[int, ...], dict[str, Any]]]) -> str:
    lines = ["| b, t, h, e | products ms (min / median) | whole ms (min / median) | whole / products (min) | "
             "max rel diff |", "|---|---:|---:|---:|---:|"]
    for shape, r in rows:
        pr, wh = r["products"], r["whole"]
        lines.append(f"| {', '.join(map(str, shape))} | {pr['min_ms']:.3f} / {pr['median_ms']:.3f} | "
                     f"{wh['min_ms']:.3f} / {wh['median_ms']:.3f} | {wh['min_ms'] / pr['min_ms']:.2f}x | "
                     f"{r['max_rel_diff']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=None, help="b,t,h,e per shape (default: a spread of eight)")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds per path (alternating)")
    p.add_argument("--calls", type=int, default=20, help="forward+backward calls per round")
    p.add_argument("--dropout", type=float, default=0.0, help="attention dropout's p (a keep-mask in both paths)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.calls < 1 or not 0 <= args.dropout < 1:
        p.error("--rounds and --calls must be at least 1, --dropout in [0, 1)")
    try:
        shapes = [tuple(int(x) for x in s.split(",")) for s in args.shapes] if args.shapes else DEFAULT_SHAPES
    except ValueError:
        p.error(f"--shapes takes b,t,h,e integers, got {args.shapes}")
    if any(len(s) != 4 or min(s) < 1 for s in shapes):
        p.error(f"--shapes takes four positive integers b,t,h,e each, got {args.shapes}")
    rows = [(s, time_paths(s, args.rounds, args.calls, args.dropout)) for s in shapes]
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
