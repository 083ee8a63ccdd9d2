"""GPT-2 124M training speed on one GPU: eager vs torch.compile vs compile + bfloat16, as ms/iter, tokens/s and MFU.

The chapter-5 speed ladder of the book and nanoGPT's reference run (GPT-2 124M, context 1024, ~135 ms/iter class on
an A100 for 12 x 1024 tokens per micro-step in bf16 + compile). Each variant builds the same seeded model, trains
`--steps` optimizer steps through gpt.training.trainer.Trainer on shards from `tinygpt prepare` (or random ids with
`--random-data`), drops the first `--warmup` steps (compilation) and reports the median step time. MFU uses
gpt/training/flops.py: 6N + 12·L·H·Q·T FLOPs per token over the device's dense peak (PEAK_FLOPS or --peak-flops).

    python -m gpt prepare --data big.txt --out shards
    python benchmarks/gpu_train.py --data shards --steps 300            # on a GPU
    python benchmarks/gpu_train.py --dry-run                            # tiny model, CPU, 3 steps: checks wiring
Prints a markdown table and writes benchmarks/results/gpu_train.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

VARIANTS = {                       # name -> TrainConfig overrides
    "eager (fp32, tf32)": {"tf32": True},
    "compile (fp32, tf32)": {"tf32": True, "compile": True},
    "compile + bf16": {"tf32": True, "compile": True, "autocast": "bfloat16"},
}
DRY_MODEL = {"vocab_size": 50257, "context_length": 64, "emb_dim": 64, "n_heads": 4, "n_layers": 2,
             "drop_rate": 0.0, "qkv_bias": False}


def run_variant(name: str, overrides: dict, args: argparse.Namespace, model_cfg: dict, train, val) -> dict:
    """Train one variant for args.steps steps; the median step time after args.warmup steps."""
    import backends
    from gpt.model import GPTModel
    from gpt.training.trainer import TrainConfig, pretrainer

    B = backends.get_backend("torch", dtype="float32", device=args.device)
    model = GPTModel(model_cfg, backend=B, seed=1337)
    cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=6e-4,
                      min_lr=6e-5, warmup_steps=min(100, args.steps // 10), beta2=0.95, eval_iters=1,
                      sample_tokens=0, plot=False, fused_adamw=B.device.startswith("cuda"),
                      peak_flops=args.peak_flops, **overrides)
    trainer = pretrainer(model, train, val, cfg)
    times, losses = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        losses.append(trainer.train_step())
        B.synchronize()
        times.append(time.perf_counter() - t0)
    steady = times[args.warmup:] or times
    step_s = statistics.median(steady)
    tok_s = trainer.tokens_per_step / step_s
    mfu = trainer.mfu(tok_s)
    return {"variant": name, "ms_per_iter": 1e3 * step_s, "tokens_per_s": tok_s, "mfu": mfu,
            "first_step_s": times[0], "final_loss": losses[-1], "notes": trainer.notes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="a `tinygpt prepare` directory (GPT-2 tokenizer)")
    p.add_argument("--random-data", action="store_true", help="random token ids instead of --data")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=10, help="steps left out of the median (compilation)")
    p.add_argument("--batch-size", type=int, default=12, help="micro-batch (nanoGPT: 12)")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--device", default="cuda")
    p.add_argument("--peak-flops", type=float, default=None)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--dry-run", action="store_true", help="tiny model on the CPU for 3 steps (wiring check)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_train.json"))
    args = p.parse_args()

    from gpt.model import GPT_CONFIG_124M

    model_cfg = {**GPT_CONFIG_124M, "drop_rate": 0.0, "tie_weights": True, "pad_vocab_multiple": 64}
    if args.dry_run:
        model_cfg = {**DRY_MODEL, "tie_weights": True, "pad_vocab_multiple": 64}
        args.device, args.steps, args.warmup, args.batch_size, args.random_data = "cpu", 3, 1, 2, True
        args.out = str(Path(args.out).with_name("gpu_train_dryrun.json"))   # never overwrite a GPU result
    if args.random_data or not args.data:
        ids = np.random.default_rng(0).integers(0, 50257, size=200_000 if args.dry_run else 5_000_000)
        train, val = ids[: int(len(ids) * 0.9)], ids[int(len(ids) * 0.9):]
    else:
        from gpt.training.shards import ShardDataset

        train = ShardDataset(args.data, "train", model_cfg["context_length"])
        val = ShardDataset(args.data, "val", model_cfg["context_length"])
    rows = [run_variant(name, VARIANTS[name], args, model_cfg, train, val) for name in args.variants]
    import torch

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"GPT-2 {'dry-run tiny' if args.dry_run else '124M'} on {device}, torch {torch.__version__}, "
          f"micro-batch {args.batch_size} x {model_cfg['context_length']} tokens, grad_accum {args.grad_accum}, "
          f"median of steps {args.warmup + 1}..{args.steps}")
    print("| variant | ms/iter | tokens/s | MFU | first step (s) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"| {r['variant']} | {r['ms_per_iter']:.1f} | {r['tokens_per_s']:,.0f} | {mfu} | "
              f"{r['first_step_s']:.1f} |")
    notes = sorted({n for r in rows for n in r["notes"]})
    for n in notes:
        print(f"note: {n}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": device, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
