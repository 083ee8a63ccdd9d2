"""`tinygpt inspect --checkpoint DIR --prompt TEXT --out DIR2`: one forward and backward pass of the prompt's
next-token loss, measured (gpt/inspect/measure.py) and drawn (gpt/inspect/render.py): report.json, attention maps per
layer, gradient norms, activation statistics, the autograd graph of one block (graph.svg) and index.html.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from gpt.cli.common import DEFAULT_RUN_DIR, add_common_args, make_backend, say, warn


def add_inspect_command(sub: argparse._SubParsersAction) -> None:
    """Register `tinygpt inspect`."""
    p = sub.add_parser("inspect", help="attention maps, gradient flow and the autograd graph of one prompt",
                       description="One forward and backward pass of the prompt's next-token loss (targets: the "
                                   "prompt shifted by one), written to --out as report.json, one PNG of attention "
                                   "maps per layer, gradient_norms.png, graph.svg and index.html.")
    p.add_argument("--checkpoint", metavar="DIR", default=DEFAULT_RUN_DIR,
                   help="a `train --out` directory, a checkpoint, or a Hugging Face GPT-2 directory")
    p.add_argument("--prompt", required=True, metavar="TEXT", help="at least two tokens, at most context + 1")
    p.add_argument("--out", required=True, metavar="DIR2", help="folder for the report (created)")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the torch float64 gradient check (the report's rel_err_vs_torch are then null)")
    add_common_args(p)
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    """Run the inspection and write the report; user errors are ValueErrors (exit 2 in gpt.cli.main)."""
    from gpt.inspect import inspect_model, prompt_ids, write_report
    from gpt.training.checkpoint import load_model

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory for the report")
    B = make_backend(args)
    model, tok, _ = load_model(args.checkpoint, B)
    ids = prompt_ids(tok, args.prompt, model.cfg.context_length)
    report = inspect_model(model, ids, tokenizer=tok, reference=not args.no_reference)
    files, notes = write_report(report, out)
    for note in notes:
        warn(f"note: {note}")
    errs = [g["rel_err_vs_torch"] for g in report.gradients.values() if g["rel_err_vs_torch"] is not None]
    worst = f"; worst gradient rel. error vs torch float64 {max(errs):.2e}" if errs else ""
    say(f"inspected {len(report.tokens)} tokens through {len(report.attention)} layers: loss "
             f"{report.loss:.4f}{worst}; open {files['index']}")
    return 0


__all__ = ["add_inspect_command", "cmd_inspect"]
