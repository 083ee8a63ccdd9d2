"""`tinygpt fill-mask`: the top-k tokens a masked-LM encoder (BERT, gpt/bert.py) predicts at each [MASK] of a text,
with their probabilities (Devlin et al. 2019, §3.1: the masked-LM task at inference)."""
from __future__ import annotations

import argparse
import json

from gpt.cli.common import add_common_args, make_backend, positive, say


def add_fill_mask_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fill-mask", help="top-k predictions for each [MASK] of a text, from a BERT",
                       description="Print the top-k candidates, with probabilities, for every [MASK] in --text, "
                                   "from a `tinygpt train --arch bert` run or a Hugging Face BERT directory.")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a `train --arch bert` --out directory or "
                                                                      "checkpoint, or a Hugging Face BERT directory")
    p.add_argument("--text", required=True, metavar="TEXT", help='e.g. "The capital of France is [MASK]."')
    p.add_argument("--top-k", type=positive(int), default=5, metavar="K", help="candidates per [MASK]")
    add_common_args(p, seed=False)
    p.set_defaults(func=cmd_fill_mask)


def cmd_fill_mask(args: argparse.Namespace) -> int:
    from gpt.mlm import fill_mask
    from gpt.training.encoder import load_masked_lm

    if "[MASK]" not in args.text:
        raise ValueError(f"--text has no [MASK] to fill: put [MASK] where a word should be predicted, e.g. "
                         f"\"The capital of France is [MASK].\"")
    model, tok, special, _ = load_masked_lm(args.checkpoint, make_backend(args))
    results = fill_mask(model, tok, args.text, special, top_k=args.top_k)
    for n, candidates in enumerate(results, 1):
        say(f"[MASK] {n} of {len(results)}:")
        for _, token, p in candidates:
            say(f"  {p:.4f}  {json.dumps(token, ensure_ascii=False)}")
    return 0


__all__ = ["add_fill_mask_command", "cmd_fill_mask"]
