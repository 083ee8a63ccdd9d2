"""Helpers every benchmark shares: a clean BLAS environment, what BLAS ran, interleaved medians, results files.

This machine sets OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE), which select a slower float32 matmul kernel. A benchmark
may re-execute itself once without them before NumPy is imported (`clean_env_reexec`) and must then say which
BLAS core actually ran (`blas_description`, via threadpoolctl). Tests and CI never do this (DESIGN.md §5).
The machine has 2 cores shared with other work, so timings take medians of interleaved repeats and record the
load average (`os.getloadavg()`) next to every result.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
REEXEC_MARK = "TINYGPT_BENCH_REMOVED_ENV"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# the training-step configs of issue 3, shared by train_step.py and the suite (batch = (sequences, tokens))
TRAIN_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"model": {"vocab_size": 512, "context_length": 64, "emb_dim": 64, "n_heads": 4, "n_layers": 2},
             "batch": (16, 64)},
    # nanoGPT's shakespeare-char CPU recipe (issue 20): 65 characters, 4 layers, 4 heads, d 128, context 64, batch 12
    "shakespeare": {"model": {"vocab_size": 65, "context_length": 64, "emb_dim": 128, "n_heads": 4, "n_layers": 4},
                    "batch": (12, 64)},
    "small": {"model": {"vocab_size": 50257, "context_length": 128, "emb_dim": 256, "n_heads": 4, "n_layers": 4},
              "batch": (8, 128)},
    "124M": {"model": {"vocab_size": 50257, "context_length": 256, "emb_dim": 768, "n_heads": 12, "n_layers": 12},
             "batch": (2, 256)},
}
# Llama-style rows (issue 14): "small" with RMSNorm, RoPE, a SwiGLU MLP of width 704 and 2 key/value heads
LLAMA_SWITCHES: dict[str, Any] = {"arch": "llama", "norm": "rmsnorm", "positions": "rope", "mlp": "swiglu",
                                  "n_kv_heads": 2, "hidden_dim": 704, "out_bias": False, "mlp_bias": False,
                                  "norm_eps": 1e-5, "rope_theta": 10000.0}
TRAIN_CONFIGS["small-llama"] = {"model": {**TRAIN_CONFIGS["small"]["model"], **LLAMA_SWITCHES}, "batch": (8, 128)}


def clean_env() -> dict[str, str]:
    """os.environ without the OpenBLAS overrides (for benchmark subprocesses)."""
    return {k: v for k, v in os.environ.items() if k not in BLAS_VARS}


def clean_env_reexec(module: str, enabled: bool = True) -> str:
    """Re-run `python -m module` with the same arguments but without the OpenBLAS overrides (once).

    Call it before anything imports NumPy. Returns a line saying what was removed (or kept).
    """
    if REEXEC_MARK in os.environ:
        return os.environ[REEXEC_MARK]
    present = [v for v in BLAS_VARS if v in os.environ]
    if not enabled or not present:
        kept = ", ".join(f"{v}={os.environ[v]}" for v in present) or "none set"
        return f"environment unchanged (OpenBLAS overrides: {kept})"
    env = clean_env()
    env[REEXEC_MARK] = "re-executed without " + ", ".join(f"{v}={os.environ[v]}" for v in present)
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)
    raise AssertionError("execve returned")  # pragma: no cover


def blas_description() -> list[str]:
    """The BLAS libraries loaded in this process with their run-time core and threads (threadpoolctl)."""
    import numpy as np

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return [f"{cfg.get('name')} {cfg.get('version')} (threadpoolctl not installed: run-time core unknown)"]
    return [f"{i.get('internal_api')} {i.get('version')} core={i.get('architecture')} "
            f"threads={i.get('num_threads')} ({Path(i.get('filepath', '')).name})"
            for i in threadpool_info() if i.get("user_api") == "blas"]


def load_avg() -> list[float]:
    """The 1/5/15-minute load averages, rounded (other processes share the 2 cores)."""
    return [round(x, 2) for x in os.getloadavg()]


SETTLE_S = 0.15  # OpenBLAS's idle threads spin ~0.1 s (2^28 cycles) after their last product before they sleep


def interleaved_medians(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, settle: bool = False,
                        ) -> dict[str, dict[str, Any]]:
    """Time each fn `repeats` times, round-robin (A B C A B C ...) after `warmup` rounds; per name the median
    seconds, the min and every time. Interleaving spreads a burst of outside load over all contenders.

    settle: a pause of SETTLE_S and one untimed call before each timed one, so the other library's idle threads
    (which spin for a while after their last task, taking a core from this one: torch's causal attention forward
    measured 6.4 ms instead of 2.5 right after our products had used OpenBLAS's threads) have gone quiet."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if settle:
                time.sleep(SETTLE_S)
                fn()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: {"median_s": statistics.median(ts), "min_s": min(ts), "times_s": ts} for name, ts in times.items()}


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write `payload` to benchmarks/results/<name>.json (git-ignored) and return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def ratio(ours: float, ref: float) -> str:
    """ours/ref formatted as a ratio column ('n/a' without a reference)."""
    return f"{ours / ref:.2f}x" if ref else "n/a"
