"""`tinygpt tokenizer train|encode|decode`: tokenizer/cli.py's commands under the tinygpt command, where
`--tokenizer` also takes a `tinygpt train` run directory or checkpoint (its own trained tokenizer)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def load_run_tokenizer(spec: str) -> Any:
    """The tokenizer a run directory or checkpoint was trained with; otherwise gpt2 or a tokenizer file."""
    from tokenizer.cli import load_tokenizer

    if not Path(spec).is_dir():
        return load_tokenizer(spec)
    from gpt.training.checkpoint import find_checkpoint, read_checkpoint
    from gpt.training.corpus import load_tokenizer as load_spec

    try:
        ckpt = read_checkpoint(find_checkpoint(spec), with_optimizer=False)
    except FileNotFoundError:
        raise ValueError(f"--tokenizer {spec!r} is a directory without a tinygpt checkpoint; give a `tinygpt "
                         f"train --out` directory, a checkpoint, gpt2 or a tokenizer file") from None
    return load_spec(ckpt.state.get("tokenizer") or {"kind": "gpt2"}, ckpt.path)


def add_tokenizer_command(sub: argparse._SubParsersAction) -> None:
    from tokenizer.cli import add_tokenizer_commands

    parser = add_tokenizer_commands(sub)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for nested in action.choices.values():
                nested.set_defaults(load_tokenizer=load_run_tokenizer)
