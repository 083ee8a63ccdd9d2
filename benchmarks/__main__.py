"""The whole benchmark suite: tinygpt's numpy backend against PyTorch eager on the CPU, float32, one command.

    python -m benchmarks            # full: GPT-2 124M shapes, ~10 minutes on 2 shared cores
    python -m benchmarks --quick    # small shapes, ~1-2 minutes
    python -m benchmarks --sections ops,train   # a subset (ops, train, generate, tokenizer)

Sections (every row: ours, the reference, ours/reference):
- ops: forward+backward of each fused op at GPT-2 shapes (batch 2 x 256, d 768), in-process, interleaved.
- train: one training step (forward, cross-entropy, backward, AdamW) for tiny/small/124M; numpy against torch eager
  with its default AdamW (foreach) and with AdamW(fused=True). Each variant runs in fresh subprocesses (no thread
  pool of one library spinning while the other runs), in --rounds interleaved rounds, which also give its own
  peak RSS (VmHWM).
- generate: greedy tokens/s, 124M, with the KV cache (100 tokens) and without (10 tokens), interleaved.
- tokenizer: GPT-2 encoding MB/s (tiktoken, HF tokenizers) and BPE training time (HF tokenizers' BpeTrainer).
- recipe (only when asked: `--recipe shakespeare [--text FILE]`): nanoGPT's shakespeare-char CPU recipe end to end
  through our Trainer, numpy backend vs torch backend, each in a fresh process (benchmarks/recipe.py).
The process re-executes itself without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (benchmarks/common.py) and prints the
BLAS core that ran. Markdown goes to stdout and benchmarks/results/latest.md (quick.md with --quick), JSON beside it.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import (RESULTS_DIR, TRAIN_CONFIGS, blas_description, clean_env_reexec, interleaved_medians, load_avg,
                     ratio, write_json)
from .recipe import recipe_markdown, worker_recipe

ROOT = Path(__file__).resolve().parent.parent
GEN_CONFIGS: dict[str, dict[str, Any]] = {
    "124M": {"model": {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768, "n_heads": 12, "n_layers": 12},
             "prompt": 10, "cache_tokens": 100, "no_cache_tokens": 10},
    "quick": {"model": {"vocab_size": 50257, "context_length": 128, "emb_dim": 256, "n_heads": 4, "n_layers": 4},
              "prompt": 10, "cache_tokens": 30, "no_cache_tokens": 10},
}
VARIANTS = ("numpy", "torch", "torch-fused")  # torch eager with the default (foreach) AdamW, and AdamW(fused=True)


# ---------------------------------------------------------------- ops (in this process)
def bench_ops(quick: bool, repeats: int) -> dict[str, Any]:
    """Forward+backward ms of every fused op, ours and torch interleaved."""
    import numpy as np
    import torch

    import tinytensor as tt
    from tinytensor.malloc import tune_malloc

    from .ops import _cases

    tune_malloc()  # as the numpy backend does for every model: freed activations stay in the heap
    b, t = (1, 128) if quick else (2, 256)
    rows = []
    for name, shape, arrays, ours, ref in _cases(np.random.default_rng(0), b, t):
        floats = [a.dtype.kind == "f" for a in arrays]
        t_ins = [torch.tensor(a.astype(np.float32) if f else a, requires_grad=f) for a, f in zip(arrays, floats)]
        o_ins = [tt.Tensor(a.astype(np.float32) if f else a, requires_grad=f) for a, f in zip(arrays, floats)]
        with torch.no_grad():
            out_shape = tuple(ref(*t_ins).shape)
        dout = np.random.default_rng(1).standard_normal(out_shape).astype(np.float32)
        t_dout, o_dout = torch.tensor(dout), tt.Tensor(dout)

        def run(ins, fn, d):
            for a in ins:
                a.grad = None
            fn(*ins).backward(d)

        res = interleaved_medians({"ours": lambda: run(o_ins, ours, o_dout), "torch": lambda: run(t_ins, ref, t_dout)},
                                  repeats, warmup=1, settle=True)
        rows.append({"op": name, "shape": shape, "ours_ms": 1e3 * res["ours"]["median_s"],
                     "torch_ms": 1e3 * res["torch"]["median_s"], "load_avg": load_avg()})
        print(f"  ops {name}: {rows[-1]['ours_ms']:.2f} ms vs {rows[-1]['torch_ms']:.2f} ms", file=sys.stderr,
              flush=True)
    return {"rows": rows}


def ops_markdown(res: dict[str, Any]) -> str:
    out = ["| op | shape | numpy fwd+bwd ms | torch fwd+bwd ms | numpy / torch |", "|---|---|---:|---:|---:|"]
    for r in res["rows"]:
        out.append(f"| {r['op']} | {r['shape']} | {r['ours_ms']:.2f} | {r['torch_ms']:.2f} | "
                   f"{ratio(r['ours_ms'], r['torch_ms'])} |")
    return "\n".join(out)


# ---------------------------------------------------------------- train step (workers in subprocesses)
def _train_setup(variant: str, config: str):
    """(step function, model) for one variant: model, optimizer and a fixed random batch (train_step.make_step)."""
    import backends

    from .train_step import make_step

    B = backends.get_backend("numpy" if variant == "numpy" else "torch", dtype="float32")
    return make_step(B, config, fused=variant == "torch-fused")


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM, MiB): unlike ru_maxrss it is not inherited from the parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: an upper bound


def worker_train(variant: str, config: str, repeats: int) -> dict[str, Any]:
    """Seconds per step (median of `repeats` after one warm-up step) and peak RSS of one variant, in this process."""
    step, model = _train_setup(variant, config)
    res = interleaved_medians({variant: step}, repeats, warmup=1)[variant]
    b, t = TRAIN_CONFIGS[config]["batch"]
    return {"variant": variant, "config": config, "batch": [b, t], "params": model.num_parameters(), **res,
            "peak_rss_mib": peak_rss_mib(), "load_avg": load_avg(), "blas": blas_description()}


def _subprocess(args: list[str], timeout: float, flags: list[str] | None = None) -> dict[str, Any]:
    """Run `python -m benchmarks [flags] --worker ...` and return the JSON of its last stdout line (or the error)."""
    cmd = [sys.executable, "-m", "benchmarks", *(flags or []), "--worker", *args]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: " + ((proc.stderr.strip().splitlines() or ["?"])[-1])}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _train_rounds(config: str, repeats: int, rounds: int) -> dict[str, Any]:
    """Every variant in `rounds` rounds (numpy, torch, fused, numpy, ...) of fresh processes, each timing about
    repeats/rounds steps: a change in outside load then hits all variants alike. Times are pooled; RSS is the max."""
    per = max(1, -(-repeats // rounds))
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for v in VARIANTS:
            runs[v].append(_subprocess(["train", v, config, "--repeats", str(per)], 1800))
    out: dict[str, Any] = {}
    for v, rs in runs.items():
        errors = [r["error"] for r in rs if "error" in r]
        if errors:
            out[v] = {"error": errors[0]}
            continue
        times = [t for r in rs for t in r["times_s"]]
        out[v] = {**rs[0], "times_s": times, "median_s": statistics.median(times), "min_s": min(times),
                  "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
                  "load_avg": [round(statistics.mean(r["load_avg"][i] for r in rs), 2) for i in range(3)],
                  "rounds": rounds}
    return out


def train_markdown(res: dict[str, Any]) -> str:
    out = ["| config | batch | numpy s/step | torch s/step | torch fused s/step | numpy / torch | "
           "numpy / torch fused | load avg (numpy, torch, fused) |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for config, r in res.items():
        errors = [f"{v}: {r[v]['error']}" for v in VARIANTS if "error" in r[v]]
        if errors:
            out.append(f"| {config} | | error: {'; '.join(errors)} | | | | | |")
            continue
        v = {k: r[k]["median_s"] for k in VARIANTS}
        b, t = r["numpy"]["batch"]
        loads = ", ".join(str(r[k]["load_avg"][0]) for k in VARIANTS)
        out.append(f"| {config} | {b}x{t} | {v['numpy']:.4f} | {v['torch']:.4f} | {v['torch-fused']:.4f} | "
                   f"{ratio(v['numpy'], v['torch'])} | {ratio(v['numpy'], v['torch-fused'])} | {loads} |")
    return "\n".join(out)


def matmul_peaks(repeats: int, n: int = 2048) -> dict[str, float]:
    """Float32 GFLOP/s of one n x n x n matrix product (2n³ FLOPs, median of `repeats`), NumPy's np.matmul (its own
    BLAS threads) and torch's: the ceiling the training step's efficiency is measured against. The suite runs it in
    a fresh worker process, as the training steps (a main process that has run the op benchmarks measured half)."""
    import numpy as np
    import torch

    a, b = (np.random.default_rng(i).standard_normal((n, n)).astype(np.float32) for i in (0, 1))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    times = interleaved_medians({"numpy": lambda: np.matmul(a, b), "torch": lambda: torch.matmul(ta, tb)},
                                max(3, repeats), warmup=1, settle=True)
    return {k: 2.0 * n ** 3 / r["median_s"] / 1e9 for k, r in times.items()}


def step_gflop(config: str) -> float:
    """Model FLOPs of one training step of a TRAIN_CONFIGS config: 6·N·tokens + 12·L·T·d per token
    (gpt/training/flops.py; N without the embedding tables, the vocabulary head counted)."""
    from gpt.model import GPTConfig
    from gpt.training.flops import flops_per_token

    spec = TRAIN_CONFIGS[config]
    b, t = spec["batch"]
    cfg = GPTConfig.from_dict({**spec["model"], "qkv_bias": False})
    return flops_per_token(cfg, t) * b * t / 1e9


def efficiency_markdown(res: dict[str, Any], peaks: dict[str, Any]) -> str:
    if "error" in peaks:
        return f"matmul peak not measured: {peaks['error']}"
    out = [f"NumPy's float32 matmul peak in this run (2048³): {peaks['numpy']:.0f} GFLOP/s; torch's: "
           f"{peaks['torch']:.0f} GFLOP/s.", "",
           "| config | GFLOP per step | numpy GFLOP/s | numpy / NumPy peak | torch GFLOP/s | torch / torch peak |",
           "|---|---:|---:|---:|---:|---:|"]
    for config, r in res.items():
        if any("error" in r[v] for v in ("numpy", "torch")):
            continue
        g = step_gflop(config)
        rn, rt = g / r["numpy"]["median_s"], g / r["torch"]["median_s"]
        out.append(f"| {config} | {g:.1f} | {rn:.0f} | {rn / peaks['numpy']:.2f} | {rt:.0f} | "
                   f"{rt / peaks['torch']:.2f} |")
    return "\n".join(out)


def rss_markdown(res: dict[str, Any]) -> str:
    out = ["| config | numpy MiB | torch MiB | torch fused MiB | numpy / torch |", "|---|---:|---:|---:|---:|"]
    for config, r in res.items():
        mib = {v: r[v].get("peak_rss_mib") for v in VARIANTS}
        if None in mib.values():
            continue
        out.append(f"| {config} | {mib['numpy']:,.0f} | {mib['torch']:,.0f} | {mib['torch-fused']:,.0f} | "
                   f"{ratio(mib['numpy'], mib['torch'])} |")
    return "\n".join(out)


# ---------------------------------------------------------------- generation (worker in a subprocess)
def worker_generate(config: str, repeats: int) -> dict[str, Any]:
    """Greedy tokens/s of numpy and torch, with and without the KV cache, interleaved in one process."""
    import numpy as np

    import backends
    from gpt.generate import generate
    from gpt.model import GPTModel

    spec = GEN_CONFIGS[config]
    cfg = {**spec["model"], "drop_rate": 0.0, "qkv_bias": False}
    models = {name: GPTModel(cfg, backend=backends.get_backend(name, dtype="float32"), seed=123).eval()
              for name in ("numpy", "torch")}
    prompt = np.random.default_rng(0).integers(0, cfg["vocab_size"], size=(1, spec["prompt"]))
    out: dict[str, Any] = {"config": config, "load_avg_start": load_avg()}
    tokens: dict[tuple[str, str], list[int]] = {}

    def run(model: Any, mode: str, n: int) -> None:
        ids = generate(model, prompt, n, cfg["context_length"], use_cache=mode == "cache")
        tokens[(model.B.name, mode)] = ids[0, spec["prompt"]:].tolist()

    for mode, n, reps in (("cache", spec["cache_tokens"], repeats),
                          ("no_cache", spec["no_cache_tokens"], max(2, repeats // 2))):
        fns = {name: functools.partial(run, m, mode, n) for name, m in models.items()}
        res = interleaved_medians(fns, reps, warmup=1)
        out[mode] = {name: {**r, "new_tokens": n, "tokens_per_s": n / r["median_s"]} for name, r in res.items()}
    out["same_tokens"] = tokens[("numpy", "cache")][:20] == tokens[("torch", "cache")][:20]
    out["load_avg"] = load_avg()
    out["blas"] = blas_description()
    return out


def generate_markdown(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"error: {r['error']}"
    out = ["| model | mode | new tokens | numpy tokens/s | torch tokens/s | numpy / torch speed |",
           "|---|---|---:|---:|---:|---:|"]
    for mode in ("cache", "no_cache"):
        n, t = r[mode]["numpy"], r[mode]["torch"]
        out.append(f"| {r['config']} | {mode.replace('_', ' ')} | {n['new_tokens']} | {n['tokens_per_s']:.1f} | "
                   f"{t['tokens_per_s']:.1f} | {ratio(n['tokens_per_s'], t['tokens_per_s'])} |")
    return "\n".join(out) + f"\n\nsame greedy tokens on both backends (first 20): {r['same_tokens']}"


# ---------------------------------------------------------------- tokenizer (in this process)
def bench_tokenizer(quick: bool, repeats: int) -> dict[str, Any]:
    """GPT-2 encode MB/s against tiktoken/HF, and BPE training seconds against HF tokenizers' trainer."""
    import pydoc_data.topics

    from .tokenizer import bench_encode

    from .tokenizer import _shared_data

    data = _shared_data()
    if data is not None:  # our GPT-2 files and tiktoken's cache, offline
        os.environ.setdefault("TINYGPT_DATA_DIR", str(data))
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(data / "tiktoken-cache"))
    os.environ.setdefault("RAYON_NUM_THREADS", "1")  # single thread for HF tokenizers, as for ours
    text = "\n".join(pydoc_data.topics.topics.values())
    big = text if quick else text * 4
    res: dict[str, Any] = {"encode": bench_encode(big, 3 if quick else repeats), "train": []}
    from tokenizer import BPETokenizer

    for vocab_size in ([512] if quick else [512, 1024]):
        row: dict[str, Any] = {"vocab_size": vocab_size}
        fns = {"ours": lambda: BPETokenizer.train(text, vocab_size)}
        try:
            from tokenizers import Tokenizer, models, pre_tokenizers, trainers

            def hf_train() -> None:
                tok = Tokenizer(models.BPE())
                tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
                tok.train_from_iterator([text], trainers.BpeTrainer(
                    vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))

            fns["hf"] = hf_train
        except ImportError:
            row["hf"] = "not installed"
        times = interleaved_medians(fns, 3, warmup=0)
        row.update({k: v["median_s"] for k, v in times.items()})
        res["train"].append(row)
    res["load_avg"] = load_avg()
    return res


def tokenizer_markdown(r: dict[str, Any]) -> str:
    enc = {row["name"]: row for row in r["encode"]}
    ours = enc.get("tinygpt", {})
    out = ["| task | tinygpt | reference | reference value | tinygpt / reference speed |", "|---|---:|---|---:|---:|"]
    for ref in ("tiktoken", "HF tokenizers"):
        other = enc.get(ref, {})
        if "mb_per_s" in ours and "mb_per_s" in other:
            out.append(f"| GPT-2 encode (MB/s) | {ours['mb_per_s']:.2f} | {ref} | {other['mb_per_s']:.2f} | "
                       f"{ratio(ours['mb_per_s'], other['mb_per_s'])} |")
        else:
            out.append(f"| GPT-2 encode (MB/s) | {ours.get('mb_per_s', 'n/a')} | {ref} | "
                       f"{other.get('skipped', 'n/a')} | n/a |")
    for row in r["train"]:
        hf = row.get("hf")
        if isinstance(hf, float):
            out.append(f"| BPE train to {row['vocab_size']} (s) | {row['ours']:.2f} | HF tokenizers | {hf:.2f} | "
                       f"{ratio(hf, row['ours'])} |")
        else:
            out.append(f"| BPE train to {row['vocab_size']} (s) | {row['ours']:.2f} | HF tokenizers | {hf} | n/a |")
    return "\n".join(out)


# ---------------------------------------------------------------- recipe (workers in subprocesses)
def run_recipe(text: str | None, quick: bool) -> dict[str, Any]:
    """The shakespeare-char recipe on torch, then numpy, each in a fresh process; their results by backend."""
    path = str(Path(text).resolve()) if text else "default"
    flags = ["--quick"] if quick else []
    out = {}
    for backend in ("torch", "numpy"):
        out[backend] = _subprocess(["recipe", backend, path], 3600, flags)
        print(f"  recipe {backend}: {out[backend].get('wall_s', out[backend].get('error'))}", file=sys.stderr,
              flush=True)
    return out


# ---------------------------------------------------------------- driver
def _kernels_way() -> str:
    """Which elementwise kernels this run's numpy backend uses (tinytensor/kernels/native.py)."""
    from tinytensor.kernels import native

    if native.native_kernels():
        return "native (C, tinytensor/csrc/native.c)"
    return f"NumPy ({'switched off' if native.available() else native.UNAVAILABLE})"


def _matmul_way() -> str:
    """The engine's way of threading matrix products, in words, as the subprocesses will see it (TINYTENSOR_MATMUL)."""
    way = os.environ.get("TINYTENSOR_MATMUL", "auto")
    return {"auto": "auto (the faster of BLAS's threads and its own pool, where both give the same bits)",
            "pool": "pool (single-threaded BLAS split over its own pool)",
            "blas": "blas (OpenBLAS's own threads)"}.get(way, way)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections, print markdown, write results/<out>.json and results/<out>.md."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small shapes and configs: ~1-2 minutes")
    p.add_argument("--sections", default="ops,train,generate,tokenizer", help="comma-separated subset")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median reported)")
    p.add_argument("--rounds", type=int, default=2, help="training: rounds of fresh processes per variant, "
                                                          "interleaved (the repeats are shared among them)")
    p.add_argument("--configs", default=None, help="training configs (default tiny,small,124M; quick: tiny,small)")
    p.add_argument("--out", default=None, help="results/<OUT>.json and results/<OUT>.md (default: latest, or "
                                                 "quick with --quick, so a quick run keeps the full table)")
    p.add_argument("--no-clean-env", dest="clean_env", action="store_false",
                   help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE")
    p.add_argument("--recipe", choices=("shakespeare",), default=None,
                   help="also run nanoGPT's shakespeare-char CPU recipe end to end, numpy vs torch (~2 x 2-3 min; "
                        "seconds with --quick); give --sections recipe to run only it")
    p.add_argument("--text", default=None, metavar="FILE",
                   help="the recipe's training text (UTF-8; default: the embedded corpus)")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        fn = {"train": lambda v, c: worker_train(v, c, args.repeats), "peak": lambda: matmul_peaks(args.repeats),
              "generate": lambda c: worker_generate(c, args.repeats),
              "recipe": lambda b, text: worker_recipe(b, text, args.quick)}[kind]
        print(json.dumps(fn(*rest)))
        return 0
    env_note = clean_env_reexec("benchmarks", args.clean_env)
    args.out = args.out or ("quick" if args.quick else "latest")

    import numpy as np
    import torch

    from tinytensor.kernels.threads import get_num_threads

    sections = args.sections.split(",")
    if args.recipe and "recipe" not in sections:
        sections.append("recipe")
    if "recipe" in sections and not args.recipe:
        args.recipe = "shakespeare"
    if args.text is not None and not Path(args.text).is_file():
        p.error(f"--text {args.text!r} is not a file; give a UTF-8 text file or leave --text out")
    configs = (args.configs or ("tiny,small" if args.quick else "tiny,small,124M")).split(",")
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick, "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "env": env_note, "blas": blas_description(), "repeats": args.repeats,
            "load_avg_start": load_avg()}
    header = [f"# tinygpt numpy backend vs PyTorch {torch.__version__} eager (CPU, float32)", "",
              f"- {meta['date']}, {'quick' if args.quick else 'full'} run, medians of {args.repeats} interleaved "
              f"repeats after warm-up; load average at start {meta['load_avg_start']} on {meta['cpus']} CPUs",
              f"- NumPy {np.__version__}; BLAS: {'; '.join(meta['blas'])}; {env_note}",
              f"- torch intra-op threads: {meta['torch_threads']}; tinytensor's matrix products: "
              f"{_matmul_way()} (tinytensor/kernels/matmul.py), elementwise kernels {_kernels_way()} on its "
              f"pool of {get_num_threads()} threads", ""]
    print("\n".join(header), flush=True)
    results: dict[str, Any] = {"meta": meta}
    parts = list(header)

    def emit(title: str, table: str) -> None:
        parts.extend([f"## {title}", "", table, ""])
        print(f"## {title}\n\n{table}\n", flush=True)

    if "ops" in sections:
        results["ops"] = bench_ops(args.quick, args.repeats)
        b, t = (1, 128) if args.quick else (2, 256)
        emit(f"Fused ops, forward + backward (batch {b} x {t}, d 768)", ops_markdown(results["ops"]))
    if "train" in sections:
        results["train"] = {}
        for c in configs:
            results["train"][c] = _train_rounds(c, args.repeats, args.rounds)
            times = {v: round(r.get("median_s", float("nan")), 4) for v, r in results["train"][c].items()}
            print(f"  train {c}: {times}", file=sys.stderr, flush=True)
        emit("Training step (forward, cross-entropy, backward, AdamW), seconds", train_markdown(results["train"]))
        emit("Peak RSS of the training step (VmHWM, each variant in a fresh process)",
             rss_markdown(results["train"]))
        results["matmul_peak_gflops"] = _subprocess(["peak", "--repeats", str(args.repeats)], 600)
        emit("Matmul efficiency of the training step (model FLOPs / step time, against the float32 matmul peak)",
             efficiency_markdown(results["train"], results["matmul_peak_gflops"]))
    if "generate" in sections:
        gen = "quick" if args.quick else "124M"
        results["generate"] = _subprocess(["generate", gen, "--repeats", str(args.repeats)], 1800)
        emit("Greedy generation", generate_markdown(results["generate"]))
    if "tokenizer" in sections:
        results["tokenizer"] = bench_tokenizer(args.quick, args.repeats)
        emit("Tokenizer", tokenizer_markdown(results["tokenizer"]))
    if "recipe" in sections:
        results["recipe"] = run_recipe(args.text, args.quick)
        emit(f"Recipe: nanoGPT shakespeare-char on the CPU, end to end ({'quick' if args.quick else 'full'})",
             recipe_markdown(results["recipe"]))
    meta["load_avg_end"] = load_avg()
    parts.append(f"load average at end: {meta['load_avg_end']}")
    path = write_json(args.out, results)
    (RESULTS_DIR / f"{args.out}.md").write_text("\n".join(parts) + "\n")
    print(f"load average at end: {meta['load_avg_end']}\nwrote {path} and {RESULTS_DIR / (args.out + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
