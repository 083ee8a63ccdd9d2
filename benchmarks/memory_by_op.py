"""What each op keeps for backward in one GPT training step, by op kind, next to its share of the step's time.

The step is train_step.py's (book ch. 5: forward, cross-entropy, backward, AdamW(lr=4e-4, weight_decay=0.1),
float32, dropout 0.1, random token ids) on the numpy backend. Memory: `tinytensor.graph(loss)` taken before
backward; each buffer an op's Function saved is counted once, at the first op that keeps it, and buffers owned by
leaves (parameters, inputs) are left out: they live whether or not backward runs (Korthikanti et al. 2022 §4 count
the same terms by hand). Time: every Function subclass's forward and backward wrapped with a clock for the timed
steps (this script only; the library is untouched), the median over `--repeats` steps of each op kind's seconds;
"AdamW" is optimizer.step(); "other" is the rest of the step (Python, graph bookkeeping, accumulation).

    python -m benchmarks.memory_by_op [--config tiny|small|124M] [--repeats 3]

Prints a markdown table and writes benchmarks/results/memory_by_op.json. Re-executes itself without the
machine's OpenBLAS overrides (benchmarks/common.py) and prints the BLAS core that ran.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections import defaultdict
from typing import Any, Iterator


def _all_functions() -> list[type]:
    """Every Function subclass defined so far (the ops a GPT step can record)."""
    from tinytensor import Function

    out, stack = [], list(Function.__subclasses__())
    while stack:
        cls = stack.pop()
        out.append(cls)
        stack.extend(cls.__subclasses__())
    return out


@contextlib.contextmanager
def op_clock(seconds: dict[str, float], calls: dict[str, int]) -> Iterator[None]:
    """While active, add each op's forward and backward wall time to seconds[op name] (and count forwards)."""
    saved = []
    for cls in _all_functions():
        for meth in ("forward", "backward"):
            if meth in vars(cls):
                orig = vars(cls)[meth]
                saved.append((cls, meth, orig))

                def timed(self, *a, _orig=orig, _name=cls.__name__, _fwd=meth == "forward", **k):
                    t0 = time.perf_counter()
                    try:
                        return _orig(self, *a, **k)
                    finally:
                        seconds[_name] += time.perf_counter() - t0
                        calls[_name] += _fwd
                setattr(cls, meth, timed)
    try:
        yield
    finally:
        for cls, meth, orig in saved:
            setattr(cls, meth, orig)


def measure(config: str, repeats: int) -> dict[str, Any]:
    """Bytes kept per op kind (one step's graph) and per-op-kind median seconds over `repeats` timed steps."""
    import numpy as np

    import backends
    import tinytensor
    from benchmarks.common import TRAIN_CONFIGS
    from gpt import GPTModel

    spec = TRAIN_CONFIGS[config]
    B = backends.get_backend("numpy", dtype="float32")
    model = GPTModel({**spec["model"], "drop_rate": 0.1, "qkv_bias": False}, backend=B, seed=0)
    opt = B.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
    rng = np.random.default_rng(0)
    b, t = spec["batch"]
    x, y = (rng.integers(0, spec["model"]["vocab_size"], (b, t)) for _ in range(2))
    kept: dict[str, int] = {}
    per_op: dict[str, list[float]] = defaultdict(list)
    totals, calls = [], {}
    for i in range(repeats + 1):                        # step 0 warms up (and supplies the graph)
        seconds: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        t0 = time.perf_counter()
        with op_clock(seconds, counts):
            opt.zero_grad()
            loss = B.F.cross_entropy(model(x).flatten(0, 1), B.tensor(y).flatten())
            if i == 0:
                t_graph = time.perf_counter()
                kept = tinytensor.graph(loss).kept_bytes_by_op()
                t0 += time.perf_counter() - t_graph     # the walk is not part of the step
            loss.backward()
            t_opt = time.perf_counter()
            opt.step()
            seconds["AdamW"] = time.perf_counter() - t_opt
        total = time.perf_counter() - t0
        if i == 0:
            continue
        totals.append(total)
        seconds["other"] = total - sum(seconds.values())
        for name in set(seconds) | set(per_op):
            per_op[name].append(seconds.get(name, 0.0))
        calls = dict(counts)
    return {"config": config, "batch": spec["batch"], "model": spec["model"], "kept_bytes": kept,
            "median_s": {k: statistics.median(v) for k, v in per_op.items()}, "calls": calls,
            "step_median_s": statistics.median(totals), "parameters": model.num_parameters()}


def table(r: dict[str, Any]) -> str:
    """The markdown table: op, calls, MiB kept, share of kept memory, ms per step, share of the step's time."""
    kept, secs = r["kept_bytes"], r["median_s"]
    total_kept, total_s = sum(kept.values()), sum(secs.values())
    names = sorted(set(kept) | set(secs), key=lambda n: (-kept.get(n, 0), -secs.get(n, 0.0)))
    lines = ["| op | calls/step | kept for backward (MiB) | share of kept | time/step (ms) | share of step time |",
             "|---|---:|---:|---:|---:|---:|"]
    for n in names:
        k, s = kept.get(n, 0), secs.get(n, 0.0)
        lines.append(f"| {n} | {r['calls'].get(n, '')} | {k / 2**20:.2f} | {k / total_kept:.1%} | {s * 1e3:.1f} "
                     f"| {s / total_s:.1%} |")
    lines.append(f"| **total** | | **{total_kept / 2**20:.2f}** | 100% | **{total_s * 1e3:.1f}** | 100% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import clean_env_reexec

    note = clean_env_reexec("benchmarks.memory_by_op")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="small", choices=("tiny", "small", "124M"))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    from benchmarks.common import blas_description, load_avg, write_json

    r = measure(args.config, args.repeats)
    r.update(env=note, blas=blas_description(), load_avg=load_avg())
    b, t = r["batch"]
    print(f"# memory kept for backward and time by op: {args.config} ({r['parameters']:,} parameters), batch "
          f"{b} x {t}, numpy float32, dropout 0.1, median of {args.repeats} steps "
          f"({r['step_median_s'] * 1e3:.0f} ms/step)\n")
    print(table(r))
    print(f"\n{note}; BLAS: {'; '.join(r['blas'])}; load average {r['load_avg']} (the machine is shared)")
    print(f"wrote {write_json('memory_by_op', r)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
