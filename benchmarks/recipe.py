"""nanoGPT's shakespeare-char CPU recipe end to end (training, evaluations, checkpoints) through our one Trainer,
on the numpy backend and on the torch backend with the same settings (issue 20).

The recipe (nanoGPT README, "I only have a macbook": config/train_shakespeare_char.py with the CPU overrides):
4 layers, 4 heads, d 128, context 64, batch 12, 2000 iterations, lr 1e-3 cosine to 1e-4 over 2000 iterations after
100 warmup iterations, AdamW beta2 0.99, weight decay 0.1, grad clip 1.0, no dropout, evaluation every 250
iterations over 20 batches. Ours differs where our trainer does: bytes tokenizer (257 ids) instead of nanoGPT's
65-character vocabulary, non-overlapping windows shuffled per epoch instead of random offsets, a checkpoint at every
evaluation, no samples. The text: any UTF-8 file (`--text FILE`, e.g. Karpathy's tinyshakespeare), or the embedded
corpus (gpt.training.corpus.default_corpus). Each backend runs in a fresh process (benchmarks/__main__.py).
"""
from __future__ import annotations

import tempfile
import time
from typing import Any

RECIPE: dict[str, Any] = {"max_steps": 2000, "batch_size": 12, "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 100,
                          "weight_decay": 0.1, "beta2": 0.99, "grad_clip": 1.0, "eval_interval": 250,
                          "eval_iters": 20, "sample_tokens": 0, "plot": False, "seed": 1337}
QUICK: dict[str, Any] = {"max_steps": 12, "eval_interval": 6, "eval_iters": 2, "warmup_steps": 2}
MODEL = {"context_length": 64, "emb_dim": 128, "n_heads": 4, "n_layers": 4, "drop_rate": 0.0, "qkv_bias": False}
QUICK_TEXT_BYTES = 60_000  # a slice of the text is enough for a dozen steps and two evaluations
# nanoGPT's own run of the recipe on this 2-core machine (issue 20, 2026-12-02), printed beside ours
NANOGPT_REFERENCE = "nanoGPT itself (PyTorch eager, CPU, 65-character vocabulary): 106-111 s, val loss 1.886"


def worker_recipe(backend: str, text_path: str, quick: bool) -> dict[str, Any]:
    """Run the recipe on `backend` ('numpy' or 'torch', float32) in this process; wall time, step times, losses."""
    import backends
    from gpt.model import GPTModel
    from gpt.training.config import TrainConfig
    from gpt.training.corpus import Corpus, bytes_tokenizer, default_corpus, read_text, split_train_val, tokenize
    from gpt.training.trainer import pretrainer

    text = default_corpus() if text_path == "default" else read_text(text_path)
    if quick:
        text = text[:QUICK_TEXT_BYTES]
    tok = bytes_tokenizer()
    t0 = time.perf_counter()
    train_ids, val_ids = split_train_val(tokenize(Corpus(text_path, text=text), tok), 0.1)
    B = backends.get_backend(backend, dtype="float32")
    model = GPTModel({**MODEL, "vocab_size": tok.n_vocab}, backend=B, seed=1337)
    cfg = TrainConfig(**{**RECIPE, **(QUICK if quick else {})})
    with tempfile.TemporaryDirectory(prefix="tinygpt-recipe-") as out:
        trainer = pretrainer(model, train_ids, val_ids, cfg, tokenizer=tok, out_dir=out)
        result = trainer.run()
    wall = time.perf_counter() - t0
    evals = [r for r in result.evals if "val_loss" in r]
    return {"backend": backend, "steps": result.step, "wall_s": wall, "train_s": result.seconds,
            "s_per_step": result.seconds / max(result.step, 1), "val_loss": evals[-1]["val_loss"],
            "val_losses": [r["val_loss"] for r in evals], "text_bytes": len(text.encode()),
            "params": model.num_parameters(), "quick": quick}


def recipe_markdown(rows: dict[str, dict[str, Any]]) -> str:
    """Wall time, s/step, final val loss per backend and the numpy/torch ratio, with nanoGPT's figures beside."""
    out = ["| backend | steps | wall s | s/step (training loop / steps) | val loss | numpy / torch wall |",
           "|---|---:|---:|---:|---:|---:|"]
    torch_wall = rows.get("torch", {}).get("wall_s")
    for name, r in rows.items():
        if "error" in r:
            out.append(f"| {name} | | error: {r['error']} | | | |")
            continue
        ratio = f"{r['wall_s'] / torch_wall:.2f}x" if name == "numpy" and torch_wall else ""
        out.append(f"| {name} | {r['steps']} | {r['wall_s']:.1f} | {r['s_per_step']:.4f} | {r['val_loss']:.4f} | "
                   f"{ratio} |")
    first = next((r for r in rows.values() if "error" not in r), None)
    if first is not None:
        out.append("")
        out.append(f"{first['params']:,} parameters, {first['text_bytes']:,} bytes of text"
                   f"{' (quick: a slice, 12 steps)' if first['quick'] else ''}; wall includes tokenizing, the "
                   f"evaluations and the checkpoints. Reference, {NANOGPT_REFERENCE}; `tinygpt train --backend "
                   f"numpy` before issue 20: 192-196 s, val loss 1.834.")
    return "\n".join(out)


__all__ = ["RECIPE", "QUICK", "MODEL", "worker_recipe", "recipe_markdown"]
