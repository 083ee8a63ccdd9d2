"""Forward and forward+backward time of each fused tinytensor op (NumPy engine) against PyTorch (CPU), float32.

Shapes are GPT-2 124M's at batch 2, sequence 256: d = 768, 12 heads of 64, MLP hidden 4·768, vocabulary 50257.
Each measurement is the median of `--repeats` runs after `--warmup` runs, both libraries in the same process.
Prints a markdown table with the ours/torch ratio and writes JSON to benchmarks/results/ops.json.

    python -m benchmarks.ops [--repeats 7] [--warmup 2] [--no-clean-env]

This machine sets OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE), which pick a slower float32 matmul kernel; by default
(--clean-env) the script re-executes itself once without them, and prints which were removed and the BLAS core
that actually ran (DESIGN §5). Tests never do this.
"""
from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.common import SETTLE_S, clean_env_reexec



def _maybe_reexec(clean_env: bool) -> str:
    """Re-run this script without the OpenBLAS overrides (once), via the suite's shared helper."""
    return clean_env_reexec("benchmarks.ops", clean_env)


def blas_info() -> dict[str, Any]:
    """NumPy's BLAS (from its build config) and, for its bundled OpenBLAS, the core kernel chosen at run time."""
    info: dict[str, Any] = {}
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        info.update(name=blas.get("name"), version=blas.get("version"))
    except Exception as e:  # noqa: BLE001 - the report goes on without it
        info["config_error"] = repr(e)
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs", "*openblas*"))
    for lib in libs:
        try:
            so = ctypes.CDLL(lib)
            for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "")):
                fn = getattr(so, f"{prefix}_get_corename{suffix}", None)
                if fn is not None:
                    fn.restype = ctypes.c_char_p
                    info["openblas_core"] = fn().decode()
                    threads = getattr(so, f"{prefix}_get_num_threads{suffix}")
                    info["openblas_threads"] = int(threads())
                    break
        except OSError:
            continue
    return info


def _median_ms(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _cases(rng: np.random.Generator, b: int = 2, t: int = 256):
    """(name, shape text, inputs as float32/int arrays, ours(*tensors), torch(*tensors)) at batch b x t."""
    import torch.nn.functional as TF

    import tinytensor.functional as F

    d, nh, v = 768, 12, 50257
    x = rng.standard_normal((b, t, d)).astype(np.float32)
    qkv = [rng.standard_normal((b, nh, t, d // nh)).astype(np.float32) for _ in range(3)]
    return [
        ("linear", f"({b},{t},{d}) @ ({4 * d},{d})ᵀ + b", [x, 0.02 * rng.standard_normal((4 * d, d)),
                                                         np.zeros(4 * d)], F.linear, TF.linear),
        ("layer_norm", f"({b},{t},{d})", [x, np.ones(d), np.zeros(d)],
         lambda a, w, bb: F.layer_norm(a, (d,), w, bb), lambda a, w, bb: TF.layer_norm(a, (d,), w, bb)),
        ("gelu tanh", f"({b},{t},{4 * d})", [rng.standard_normal((b, t, 4 * d))],
         lambda a: F.gelu(a, approximate="tanh"), lambda a: TF.gelu(a, approximate="tanh")),
        ("gelu erf", f"({b},{t},{4 * d})", [rng.standard_normal((b, t, 4 * d))], F.gelu, TF.gelu),
        ("softmax", f"({b},{nh},{t},{t}) dim=-1", [rng.standard_normal((b, nh, t, t))],
         lambda a: F.softmax(a, -1), lambda a: TF.softmax(a, -1)),
        ("cross_entropy", f"({b * t},{v})", [rng.standard_normal((b * t, v)), rng.integers(0, v, b * t)],
         F.cross_entropy, TF.cross_entropy),
        ("attention causal", f"q,k,v ({b},{nh},{t},{d // nh})", qkv,
         lambda q, k, vv: F.scaled_dot_product_attention(q, k, vv, is_causal=True),
         lambda q, k, vv: TF.scaled_dot_product_attention(q, k, vv, is_causal=True)),
        ("embedding", f"ids ({b},{t}) in ({v},{d})", [rng.integers(0, v, (b, t)), 0.02 * rng.standard_normal((v, d))],
         F.embedding, TF.embedding),
    ]


def _timings(arrays, fn, lib: str, repeats: int, warmup: int) -> tuple[float, float]:
    """(forward ms, forward+backward ms) of fn on fresh leaves built from arrays, upstream gradient random."""
    import torch

    import tinytensor as tt

    floats = [a.dtype.kind == "f" for a in arrays]
    if lib == "torch":
        ins = [torch.tensor(a.astype(np.float32) if f else a, requires_grad=f) for a, f in zip(arrays, floats)]
        no_grad, wrap = torch.no_grad, torch.tensor
    else:
        ins = [tt.Tensor(a.astype(np.float32) if f else a, requires_grad=f) for a, f in zip(arrays, floats)]
        no_grad, wrap = tt.no_grad, tt.Tensor
    with no_grad():
        out_shape = tuple(fn(*ins).shape)
    dout = wrap(np.random.default_rng(0).standard_normal(out_shape).astype(np.float32))

    def forward():
        with no_grad():
            fn(*ins)

    def forward_backward():
        for a in ins:
            a.grad = None
        fn(*ins).backward(dout)

    return _median_ms(forward, repeats, warmup), _median_ms(forward_backward, repeats, warmup)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per measurement (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs before timing")
    ap.add_argument("--clean-env", action=argparse.BooleanOptionalAction, default=True,
                    help="re-execute without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (default on)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ops.json"), help="JSON output path")
    args = ap.parse_args(argv)
    env_note = _maybe_reexec(args.clean_env)

    import torch

    from tinytensor.malloc import tune_malloc

    tuned = tune_malloc()  # as the numpy backend does for every model (tinytensor/malloc.py); torch keeps its own
    blas = blas_info()
    print(f"# tinytensor fused ops vs PyTorch {torch.__version__} (CPU, float32, median of {args.repeats})\n")
    print(f"- NumPy {np.__version__}, BLAS: {blas}")
    print(f"- {env_note}")
    print(f"- torch threads: {torch.get_num_threads()}, CPUs: {os.cpu_count()}; glibc malloc tuned for ours: {tuned}\n")
    print("| op | shape | ours fwd ms | torch fwd ms | fwd ratio | ours fwd+bwd ms | torch fwd+bwd ms | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name, shape, arrays, ours, ref in _cases(np.random.default_rng(0)):
        time.sleep(SETTLE_S)  # the other library's idle threads stop spinning first (benchmarks/common.py)
        of, ofb = _timings(arrays, ours, "ours", args.repeats, args.warmup)
        time.sleep(SETTLE_S)
        tf, tfb = _timings(arrays, ref, "torch", args.repeats, args.warmup)
        rows.append(dict(op=name, shape=shape, ours_fwd_ms=of, torch_fwd_ms=tf, ours_fwd_bwd_ms=ofb,
                         torch_fwd_bwd_ms=tfb, ratio_fwd=of / tf, ratio_fwd_bwd=ofb / tfb))
        print(f"| {name} | {shape} | {of:.2f} | {tf:.2f} | {of / tf:.2f} | {ofb:.2f} | {tfb:.2f} | {ofb / tfb:.2f} |",
              flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(numpy=np.__version__, torch=torch.__version__, blas=blas, env=env_note,
                                   repeats=args.repeats, warmup=args.warmup, dtype="float32", results=rows), indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
