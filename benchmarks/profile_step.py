"""Where the time of a small training step goes on the numpy backend (issue 20): BLAS, NumPy elementwise passes,
the engine's own Python, the optimizer; plus cProfile's top functions.

The step is train_step.py's (book ch. 5: forward, cross-entropy, backward, AdamW(lr=4e-4, weight_decay=0.1),
float32, dropout 0.1, random token ids). Buckets, per step (medians over `--repeats` instrumented steps):
- BLAS: time inside tinytensor.kernels.matmul.matmul (every matrix product of the engine goes through it);
- elementwise: time inside every Function's forward/backward minus the BLAS time spent there (NumPy ufunc passes,
  reductions, copies, and the few lines of Python each op body runs);
- optimizer: optimizer.step();
- engine Python: the rest (freeing the graph's arrays in backward, Function.apply, Tensor construction, _pair/dtype checks, the topological sort,
  unbroadcast, gradient accumulation, zero_grad, the model's forward Python).
The clock wrappers add a few µs per call; the uninstrumented median step is printed beside them.

    python -m benchmarks.profile_step [--config tiny|shakespeare|small] [--repeats 20] [--cprofile 15] [--products 15]

Re-executes itself without the machine's OpenBLAS overrides (benchmarks/common.py) and prints the BLAS core.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import math
import pstats
import statistics
import sys
import time
from collections import defaultdict
from typing import Any, Iterator


@contextlib.contextmanager
def blas_clock(acc: dict[str, float], by_product: dict[tuple, list[float]] | None = None) -> Iterator[None]:
    """While active, add the wall time of every engine matrix product to acc['blas'] (and, given `by_product`,
    append it to by_product[(a's shape, b's shape, layouts)], a layout being C, T for a transposed C array, or S
    for other strides)."""
    from tinytensor.kernels import matmul as mm

    orig = mm.matmul

    def timed(a: Any, b: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return orig(a, b)
        finally:
            dt = time.perf_counter() - t0
            acc["blas"] += dt
            if by_product is not None:
                layouts = "".join(mm._layout(x) or "S" for x in (a, b))
                by_product[(tuple(a.shape), tuple(b.shape), layouts)].append(dt)

    # ops, functional and kernels.attention call it through their module attribute or their own import
    import tinytensor.kernels.attention as attn
    mods = [mm, attn]
    for m in mods:
        m.matmul = timed
    try:
        yield
    finally:
        for m in mods:
            m.matmul = orig


def breakdown(config: str, repeats: int) -> dict[str, Any]:
    """Median seconds per step of each bucket, and the uninstrumented median step."""
    import backends
    from benchmarks.memory_by_op import op_clock
    from benchmarks.train_step import make_step

    B = backends.get_backend("numpy", dtype="float32")
    step, model = make_step(B, config)
    step()
    plain = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        plain.append(time.perf_counter() - t0)
    import resource

    from tinytensor.optim import AdamW as opt_cls   # the class whose step() the numpy backend's B.AdamW runs

    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buckets: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        ops: dict[str, float] = defaultdict(float)
        acc: dict[str, float] = defaultdict(float)
        orig_step = opt_cls.step

        def timed_step(self: Any, _orig=orig_step) -> None:
            t1 = time.perf_counter()
            _orig(self)
            acc["optimizer"] += time.perf_counter() - t1

        opt_cls.step = timed_step
        try:
            with op_clock(ops, defaultdict(int)), blas_clock(acc):
                t0 = time.perf_counter()
                step()
                total = time.perf_counter() - t0
        finally:
            opt_cls.step = orig_step
        in_ops = sum(ops.values())
        buckets["BLAS"].append(acc["blas"])
        buckets["elementwise (op bodies minus BLAS)"].append(in_ops - acc["blas"])
        buckets["optimizer"].append(acc["optimizer"])
        buckets["engine Python (the rest)"].append(total - in_ops - acc["optimizer"])
        buckets["instrumented step"].append(total)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / repeats
    out = {k: statistics.median(v) for k, v in buckets.items()}
    out["plain step"] = statistics.median(plain)
    return {"config": config, "seconds": out, "params": model.num_parameters(), "step": step,
            "page_faults_per_step": faults}


def product_table(step: Any, n_steps: int) -> list[dict[str, Any]]:
    """Each engine product of `n_steps` steps, by shapes and layouts: calls per step, median µs, GFLOP/s, ms per
    step; slowest total first. Shows which products run far below the 2-D rate (attention's strided heads)."""
    by_product: dict[tuple, list[float]] = defaultdict(list)
    with blas_clock(defaultdict(float), by_product):
        for _ in range(n_steps):
            step()
    rows = []
    for (sa, sb, layouts), times in by_product.items():
        med = statistics.median(times)
        flops = 2 * math.prod(sa) * sb[-1]
        per_step = len(times) / n_steps
        rows.append({"a": sa, "b": sb, "layouts": layouts, "per_step": per_step, "us": med * 1e6,
                     "gflops": flops / med / 1e9, "ms_per_step": med * per_step * 1e3})
    return sorted(rows, key=lambda r: -r["ms_per_step"])


def top_functions(step: Any, n_steps: int, top: int) -> str:
    """cProfile of n_steps steps: the `top` functions by own time."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n_steps):
        step()
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(top)
    return s.getvalue()


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import TRAIN_CONFIGS, clean_env_reexec

    note = clean_env_reexec("benchmarks.profile_step")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="tiny", choices=tuple(TRAIN_CONFIGS))
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--cprofile", type=int, default=15, help="print the top N functions by own time (0: none)")
    p.add_argument("--products", type=int, default=0, help="print the N products with the most time per step, by "
                   "shapes and layouts (0: none)")
    args = p.parse_args(argv)
    from benchmarks.common import blas_description, load_avg

    r = breakdown(args.config, args.repeats)
    s = r["seconds"]
    print(f"# step breakdown: {args.config} ({r['params']:,} parameters), numpy float32, median of "
          f"{args.repeats} steps; {note}; BLAS: {'; '.join(blas_description())}; load average {load_avg()}\n")
    print("| bucket | ms/step | share of instrumented step |\n|---|---:|---:|")
    for k, v in s.items():
        share = f"{v / s['instrumented step']:.0%}" if k not in ("plain step",) else ""
        print(f"| {k} | {v * 1e3:.2f} | {share} |")
    print(f"\nminor page faults per instrumented step: {r['page_faults_per_step']:,.0f}")
    if args.products:
        print("\n| a | b | layouts | per step | µs each | GFLOP/s | ms/step |\n|---|---|---|---:|---:|---:|---:|")
        for row in product_table(r["step"], args.repeats)[:args.products]:
            print(f"| {row['a']} | {row['b']} | {row['layouts']} | {row['per_step']:g} | {row['us']:.0f} | "
                  f"{row['gflops']:.1f} | {row['ms_per_step']:.2f} |")
    if args.cprofile:
        print("\n```\n" + top_functions(r["step"], max(5, args.repeats // 2), args.cprofile).strip() + "\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
