"""One GPT training step (forward, cross-entropy, backward, AdamW) per backend and model size, against PyTorch.

The step is the book's ch. 5 inner loop: `optimizer.zero_grad(); loss = cross_entropy(model(x).flatten(0, 1),
y.flatten()); loss.backward(); optimizer.step()`, float32, dropout 0.1, AdamW(lr=4e-4, weight_decay=0.1), on
random token ids. Configs:
  tiny   vocab 512,   context 64,  d 64,  4 heads, 2 layers,  batch 16 x 64
  small  vocab 50257, context 128, d 256, 4 heads, 4 layers,  batch 8 x 128
  124M   GPT-2 124M with context 256,                         batch 2 x 256
Every backend x config runs in a fresh subprocess, so its peak RSS (getrusage ru_maxrss) is its own. Each reports
the median seconds of `--repeats` steps after one warm-up step, tokens/s, the time ratio to torch on the same
device, and peak RSS. Prints a markdown table and writes benchmarks/results/train_step.json.

    python -m benchmarks.train_step [--configs tiny,small,124M] [--backends numpy,torch] [--repeats 5] [--quick]

This machine sets OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE), which select a slower float32 matmul kernel; the
subprocesses run without them unless --no-clean-env (DESIGN.md §5), and the BLAS they used is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.common import BLAS_VARS as _BLAS_VARS
from benchmarks.common import TRAIN_CONFIGS as CONFIGS
from benchmarks.common import blas_description

RESULTS = Path(__file__).resolve().parent / "results" / "train_step.json"


def _has_cuda_cupy() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device: all mean "skip the GPU cases"
        return False


def default_backends() -> list[str]:
    """numpy and torch on the CPU; with CuPy and a GPU also cupy and torch on CUDA (its reference)."""
    return ["numpy", "torch"] + (["cupy", "torch:cuda"] if _has_cuda_cupy() else [])


# ---- the worker: one backend x config, in its own process ----

def make_step(B: Any, config: str, fused: bool = False) -> tuple[Callable[[], float], Any]:
    """(step, model): the book's training step for `config` on backend B (seed 123, a fixed random batch);
    `fused` asks for torch's fused AdamW. step() runs one step, waits for the device and returns the loss."""
    from gpt.model import GPTModel

    spec = CONFIGS[config]
    cfg = {**spec["model"], "drop_rate": 0.1, "qkv_bias": False}
    b, t = spec["batch"]
    model = GPTModel(cfg, backend=B, seed=123)
    model.train()
    optimizer = B.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1, fused=fused)
    B.manual_seed(123)
    rng = np.random.default_rng(0)
    x = B.tensor(rng.integers(0, cfg["vocab_size"], size=(b, t)))
    y = B.tensor(rng.integers(0, cfg["vocab_size"], size=(b, t)))

    def step() -> float:
        optimizer.zero_grad()
        loss = B.F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        optimizer.step()
        B.synchronize()
        return float(B.to_numpy(loss))

    return step, model


def measure(backend: str, config: str, repeats: int, warmup: int = 1) -> dict[str, Any]:
    """Time `repeats` training steps of `config` on `backend` ('numpy', 'torch', 'cupy', 'torch:cuda')."""
    import backends

    name, _, device = backend.partition(":")
    B = backends.get_backend(name, dtype="float32", device=device or None)
    b, t = CONFIGS[config]["batch"]
    t0 = time.perf_counter()
    step, model = make_step(B, config)
    build_s = time.perf_counter() - t0  # model, optimizer state and the batch

    losses = [step() for _ in range(warmup)]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    out = {"backend": backend, "config": config, "batch": b, "seq": t, "params": model.num_parameters(),
           "repeats": repeats, "median_s": median, "min_s": min(times), "times_s": times,
           "tokens_per_s": b * t / median, "build_s": build_s, "losses": losses,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "blas": blas_description()}
    if name == "torch":
        out["torch_threads"] = B.torch.get_num_threads()
        if B.device.startswith("cuda"):
            out["peak_device_mib"] = B.torch.cuda.max_memory_allocated() / 2**20
    return out


def run_case(backend: str, config: str, repeats: int, clean_env: bool, timeout: float,
             threads: int | None = None) -> dict[str, Any]:
    """Run `measure` in a fresh interpreter and return its JSON result (or the error it died with)."""
    env = {k: v for k, v in os.environ.items() if not (clean_env and k in _BLAS_VARS)}
    if threads:  # OpenBLAS, MKL and torch's OpenMP pool all read these at start-up
        env.update({v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    cmd = [sys.executable, "-m", "benchmarks.train_step", "--worker", backend, config, "--repeats", str(repeats)]
    root = Path(__file__).resolve().parent.parent
    try:
        proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"backend": backend, "config": config, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"backend": backend, "config": config, "error": f"exit {proc.returncode}: {last}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _reference(backend: str) -> str:
    return "torch:cuda" if backend in ("cupy", "torch:cuda") else "torch"


def markdown(results: list[dict[str, Any]]) -> str:
    """The results as a markdown table; 'vs torch' is this backend's step time over torch's on the same device."""
    by_key = {(r["config"], r["backend"]): r for r in results}
    rows = ["| config | backend | params | batch | median s/step | min s/step | tokens/s | time vs torch "
            "| peak RSS MiB | repeats |", "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['config']} | {r['backend']} | | | error: {r['error']} | | | | | |")
            continue
        ref = by_key.get((r["config"], _reference(r["backend"])), {})
        ratio = f"{r['median_s'] / ref['median_s']:.2f}x" if "median_s" in ref else "n/a"
        rows.append(f"| {r['config']} | {r['backend']} | {r['params'] / 1e6:.2f}M | {r['batch']}x{r['seq']} | "
                    f"{r['median_s']:.4f} | {r['min_s']:.4f} | {r['tokens_per_s']:,.0f} | {ratio} | "
                    f"{r['peak_rss_mib']:,.0f} | "
                    f"{r['repeats']} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every backend x config in its own process, print the table, write the JSON."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__.split("\n")[0])
    p.add_argument("--configs", default=None, help="comma-separated subset of " + ",".join(CONFIGS))
    p.add_argument("--backends", default=None, help="comma-separated: numpy, torch, cupy, torch:cuda "
                                                    "(default: numpy,torch, plus the GPU pair when available)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps after one warm-up (default 5; 2 with "
                                                              "--quick); fewer than 5 only makes sense for 124M")
    p.add_argument("--quick", action="store_true", help="2 timed steps per case, configs tiny,small by default")
    p.add_argument("--no-clean-env", dest="clean_env", action="store_false",
                   help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the subprocesses")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS/OpenMP threads per case (default: the libraries' own choice); 1 steadies timings on "
                        "a machine shared with other work")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per case")
    p.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    p.add_argument("--worker", nargs=2, metavar=("BACKEND", "CONFIG"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    repeats = args.repeats or (2 if args.quick else 5)
    if repeats < 1:
        p.error(f"--repeats must be at least 1, got {repeats}")
    if args.worker:
        print(json.dumps(measure(args.worker[0], args.worker[1], repeats)))
        return 0

    configs = (args.configs or ("tiny,small" if args.quick else ",".join(CONFIGS))).split(",")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    backend_list = args.backends.split(",") if args.backends else default_backends()
    removed = [f"{v}={os.environ[v]}" for v in _BLAS_VARS if v in os.environ] if args.clean_env else []
    print(f"# train step: {', '.join(configs)} on {', '.join(backend_list)}; {repeats} timed steps after 1 warm-up;"
          f" subprocess env: {'removed ' + ', '.join(removed) if removed else 'unchanged'}", flush=True)

    try:
        import torch  # only for the record: the version the ratios were measured against

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(),
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "load_avg_at_start": os.getloadavg(),
            "numpy": np.__version__, "torch": torch_version, "env_removed": removed, "repeats": repeats,
            "warmup": 1, "threads": args.threads, "dtype": "float32", "drop_rate": 0.1,
            "configs": {c: CONFIGS[c] for c in configs}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for config in configs:
        for backend in backend_list:
            r = run_case(backend, config, repeats, args.clean_env, args.timeout, args.threads)
            results.append(r)
            summary = r.get("error") or f"{r['median_s']:.4f} s/step, {r['tokens_per_s']:,.0f} tokens/s"
            print(f"  {config:>5} {backend:<10} {summary}", file=sys.stderr, flush=True)
            meta["blas"] = sorted({line for r in results for line in r.get("blas", [])})
            # rewritten after every case, so an interrupted run keeps what it measured
            args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")

    print("BLAS in use: " + ("; ".join(meta["blas"]) or "unknown"))
    threads = sorted({r["torch_threads"] for r in results if "torch_threads" in r})
    if threads:
        print(f"torch intra-op threads: {threads}")
    print(f"load average at start (other processes share these CPUs): {meta['load_avg_at_start']}")
    print()
    print(markdown(results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
