"""The book's chapter 5 pretraining run, on any backend: the 124M-architecture GPT (context 256) trained for 10 epochs
on "The Verdict" with the book's settings (AdamW lr 4e-4, weight decay 0.1, batch 2, eval every 5 steps on 5 batches,
90/10 split, seed 123, PyTorch's default weight init as the book's model has), using the book's own function names
from `gpt`.

    python examples/book_ch5_the_verdict.py --backend numpy
The book reports (PyTorch, its figure 5.12 run) a final training loss of about 0.57 and a validation loss of about 6.37.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import backends
import gpt
import tokenizer as tok_pkg
from tokenizer.datafiles import MissingDataFileError, find_data_file


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        epilog="Needs the-verdict.txt (`tinygpt download the-verdict`, or TINYGPT_DATA_DIR pointing at a folder "
               "holding it) and GPT-2's tokenizer files (`tinygpt download gpt2-tokenizer`). About 7 minutes on 2 "
               "CPU cores with the numpy backend.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", default="numpy", choices=backends.BACKENDS, help="the engine")
    p.add_argument("--dtype", default="float32", help="float dtype (float64 for a reference run)")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training text (the book's 10)")
    p.add_argument("--json", type=Path, help="also write the losses and timing here")
    args = p.parse_args(argv)

    try:
        text = find_data_file("the-verdict.txt", fetch_command="tinygpt download the-verdict").read_text(encoding="utf-8")
        enc = tok_pkg.get_encoding("gpt2")
    except MissingDataFileError as e:  # a user's setup problem: one line, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    split = int(0.9 * len(text))                                   # the book splits the characters 90/10
    # the book's model gets PyTorch's default layer init (Embedding N(0, 1), Linear U(±1/√fan_in)); its ch. 5 recipe
    # relies on it (gpt/model.py's docstring has the measurement)
    cfg = {**gpt.GPT_CONFIG_124M, "context_length": 256, "weight_init": "torch"}
    train_loader = gpt.create_dataloader_v1(text[:split], batch_size=2, max_length=256, stride=256, shuffle=True,
                                            drop_last=True, seed=123, tokenizer=enc)
    val_loader = gpt.create_dataloader_v1(text[split:], batch_size=2, max_length=256, stride=256, shuffle=False,
                                          drop_last=False, seed=123, tokenizer=enc)
    B = backends.get_backend(args.backend, dtype=args.dtype)
    B.manual_seed(123)
    model = gpt.GPTModel(cfg, backend=B, seed=123)
    optimizer = B.AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)
    t0 = time.perf_counter()
    train_losses, val_losses, tokens = gpt.train_model_simple(
        model, train_loader, val_loader, optimizer, None, num_epochs=args.epochs, eval_freq=5, eval_iter=5,
        start_context="Every effort moves you", tokenizer=enc, log=lambda s: print(s, flush=True))
    seconds = time.perf_counter() - t0
    final_train, final_val = gpt.evaluate_model(model, train_loader, val_loader, None, eval_iter=None)
    print(f"final (all batches): train loss {final_train:.3f}, val loss {final_val:.3f}; book: 0.57 / 6.37; "
          f"{seconds / 60:.1f} min on {args.backend}")
    if args.json:
        args.json.write_text(json.dumps({"train_losses": train_losses, "val_losses": val_losses, "tokens": tokens,
                                         "final_train": final_train, "final_val": final_val, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
