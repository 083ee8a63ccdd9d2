"""Greedy generation speed per backend, with and without the KV cache, against PyTorch.

GPT-2 124M (random init, float32, dropout off, eval mode) generates 100 greedy tokens after a 10-token prompt with
`gpt.generate.generate(..., use_cache=True|False)`. Without the cache every step re-reads the whole sequence
(the book's ch. 4 loop); with it a step computes one token's projections (gpt/kv_cache.py). Each backend runs in a
fresh subprocess; it reports the median of `--repeats` timed generations after one short warm-up, tokens/s, and
the time ratio to torch on the same device. Prints a markdown table and writes benchmarks/results/generate.json.

    python -m benchmarks.generate [--backends numpy,torch] [--repeats 3] [--quick]

--quick: a small model (vocab 50257, context 128, d 256, 4 heads, 4 layers) and 30 new tokens, written to
benchmarks/results/generate_quick.json. --config quick-llama | 124M-llama: the same sizes Llama-style (RoPE,
SwiGLU, grouped-query attention, whose KV cache holds only the key/value heads), written to
generate_<config>.json. The full run takes ~5-12 minutes on 2 shared CPU cores (the uncached
numpy path dominates).
This machine sets OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE), which select a slower float32 matmul kernel; the
subprocesses run without them unless --no-clean-env (DESIGN.md §5), and the BLAS they used is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import BLAS_VARS as _BLAS_VARS
from benchmarks.common import LLAMA_SWITCHES, blas_description

CONFIGS: dict[str, dict[str, Any]] = {
    "124M": {"model": {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768, "n_heads": 12, "n_layers": 12},
             "prompt": 10, "new_tokens": 100},
    "quick": {"model": {"vocab_size": 50257, "context_length": 128, "emb_dim": 256, "n_heads": 4, "n_layers": 4},
              "prompt": 10, "new_tokens": 30},
}
# grouped-query attention (issue 14): the same sizes as Llama-style models (2 key/value heads, RoPE, SwiGLU)
CONFIGS["quick-llama"] = {**CONFIGS["quick"], "model": {**CONFIGS["quick"]["model"], **LLAMA_SWITCHES}}
CONFIGS["124M-llama"] = {**CONFIGS["124M"], "model": {**CONFIGS["124M"]["model"], **LLAMA_SWITCHES,
                                                       "n_kv_heads": 4, "hidden_dim": 2048}}
RESULTS = Path(__file__).resolve().parent / "results" / "generate.json"


def _has_cuda_cupy() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device: all mean "skip the GPU cases"
        return False


def default_backends() -> list[str]:
    """numpy and torch on the CPU; with CuPy and a GPU also cupy and torch on CUDA (its reference)."""
    return ["numpy", "torch"] + (["cupy", "torch:cuda"] if _has_cuda_cupy() else [])


def measure(backend: str, config: str, repeats: int) -> dict[str, Any]:
    """Time greedy generation on `backend` ('numpy', 'torch', 'cupy', 'torch:cuda'), with and without the cache."""
    import backends
    from gpt.generate import generate
    from gpt.model import GPTModel

    name, _, device = backend.partition(":")
    B = backends.get_backend(name, dtype="float32", device=device or None)
    spec = CONFIGS[config]
    cfg = {**spec["model"], "drop_rate": 0.0, "qkv_bias": False}
    t0 = time.perf_counter()
    model = GPTModel(cfg, backend=B, seed=123).eval()
    build_s = time.perf_counter() - t0
    prompt = np.random.default_rng(0).integers(0, cfg["vocab_size"], size=(1, spec["prompt"]))
    n = spec["new_tokens"]
    out: dict[str, Any] = {"backend": backend, "config": config, "params": model.num_parameters(),
                           "prompt": spec["prompt"], "new_tokens": n, "repeats": repeats, "build_s": build_s}
    tokens = {}
    for use_cache in (True, False):
        key = "cache" if use_cache else "no_cache"
        generate(model, prompt, 2, cfg["context_length"], use_cache=use_cache)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ids = generate(model, prompt, n, cfg["context_length"], use_cache=use_cache)
            B.synchronize()
            times.append(time.perf_counter() - t0)
        tokens[key] = ids[0, spec["prompt"]:].tolist()
        median = statistics.median(times)
        out[key] = {"median_s": median, "times_s": times, "tokens_per_s": n / median}
    out["same_tokens"] = tokens["cache"] == tokens["no_cache"]
    out["tokens_head"] = tokens["cache"][:10]
    out["blas"] = blas_description()
    if name == "torch":
        out["torch_threads"] = B.torch.get_num_threads()
    return out


def run_case(backend: str, config: str, repeats: int, clean_env: bool, timeout: float) -> dict[str, Any]:
    """Run `measure` in a fresh interpreter and return its JSON result (or the error it died with)."""
    env = {k: v for k, v in os.environ.items() if not (clean_env and k in _BLAS_VARS)}
    cmd = [sys.executable, "-m", "benchmarks.generate", "--worker", backend, config, "--repeats", str(repeats)]
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
    """A markdown table; 'vs torch' is torch's tokens/s over this backend's (time ratio) for the same mode."""
    by_backend = {r["backend"]: r for r in results}
    rows = ["| config | backend | mode | tokens/s | median s | time vs torch | cache speed-up | same tokens |",
            "|---|---|---|---:|---:|---:|---:|---|"]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['config']} | {r['backend']} | | error: {r['error']} | | | | |")
            continue
        ref = by_backend.get(_reference(r["backend"]), {})
        for mode in ("cache", "no_cache"):
            m = r[mode]
            ratio = f"{m['median_s'] / ref[mode]['median_s']:.2f}x" if mode in ref else "n/a"
            speedup = f"{r['no_cache']['median_s'] / r['cache']['median_s']:.1f}x" if mode == "cache" else ""
            rows.append(f"| {r['config']} | {r['backend']} | {mode.replace('_', ' ')} | {m['tokens_per_s']:,.1f} | "
                        f"{m['median_s']:.3f} | {ratio} | {speedup} | {r['same_tokens']} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every backend in its own process, print the table, write the JSON."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.generate", description=__doc__.split("\n")[0])
    p.add_argument("--backends", default=None, help="comma-separated: numpy, torch, cupy, torch:cuda "
                                                    "(default: numpy,torch, plus the GPU pair when available)")
    p.add_argument("--repeats", type=int, default=3, help="timed generations per mode (median reported)")
    p.add_argument("--quick", action="store_true", help="a small model and 30 new tokens instead of 124M and 100")
    p.add_argument("--config", choices=list(CONFIGS), default=None, help="a model of CONFIGS by name (quick-llama, "
                                                                         "124M-llama: grouped-query attention)")
    p.add_argument("--no-clean-env", dest="clean_env", action="store_false",
                   help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the subprocesses")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per backend")
    p.add_argument("--out", type=Path, default=None, help="where to write the JSON (default "
                                                         "benchmarks/results/generate.json, or generate_quick.json "
                                                         "with --quick, so a quick run keeps the full results)")
    p.add_argument("--worker", nargs=2, metavar=("BACKEND", "CONFIG"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.worker:
        print(json.dumps(measure(args.worker[0], args.worker[1], args.repeats)))
        return 0

    config = args.config or ("quick" if args.quick else "124M")
    name = "generate" if config == "124M" else f"generate_{config.replace('-', '_')}"
    out_path = args.out or RESULTS.with_name(f"{name}.json")
    spec = CONFIGS[config]
    backend_list = args.backends.split(",") if args.backends else default_backends()
    removed = [f"{v}={os.environ[v]}" for v in _BLAS_VARS if v in os.environ] if args.clean_env else []
    print(f"# greedy generation: {config} model, prompt {spec['prompt']} + {spec['new_tokens']} new tokens, float32, "
          f"on {', '.join(backend_list)}; median of {args.repeats}; subprocess env: "
          f"{'removed ' + ', '.join(removed) if removed else 'unchanged'}", flush=True)
    results = []
    for backend in backend_list:
        r = run_case(backend, config, args.repeats, args.clean_env, args.timeout)
        results.append(r)
        summary = r.get("error") or (f"cache {r['cache']['tokens_per_s']:,.1f} tok/s, "
                                     f"no cache {r['no_cache']['tokens_per_s']:,.1f} tok/s")
        print(f"  {backend:<10} {summary}", file=sys.stderr, flush=True)

    blas = sorted({line for r in results for line in r.get("blas", [])})
    print("BLAS in use: " + ("; ".join(blas) or "unknown"))
    threads = sorted({r["torch_threads"] for r in results if "torch_threads" in r})
    if threads:
        print(f"torch intra-op threads: {threads}")
    print()
    print(markdown(results))

    import torch  # only for the record: the version the ratios were measured against

    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(),
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "numpy": np.__version__,
            "torch": torch.__version__, "blas": blas, "env_removed": removed, "repeats": args.repeats,
            "dtype": "float32", "config": {config: spec},
            "load_average": os.getloadavg()}  # other work on the machine slows torch's threads most
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
