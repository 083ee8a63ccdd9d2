"""The `tinygpt` command (also `python -m gpt`): one module per command group, each adding its subcommands with an
`add_*_command(subparsers)` function listed in COMMANDS (`register` appends a later one).

The only place in the package that prints, reads sys.argv or picks a backend (DESIGN.md §3, §6). Exit status: 0
success; 2 a user error (one line on stderr, `tinygpt: error: ...`, no traceback: bad flags, missing files, an
unavailable backend, a checkpoint of another shape); 1 training diverged (NaN or infinite loss; the last good
checkpoint is kept and named); 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from gpt.cli.common import DEFAULT_RUN_DIR, PROG, Parser, add_common_args, make_backend, positive, write_tokens
from gpt.cli.convert import add_convert_command, add_download_command
from gpt.cli.fill_mask import add_fill_mask_command
from gpt.cli.finetune import add_finetune_command
from gpt.cli.generate import add_chat_command, add_classify_command, add_generate_command
from gpt.cli.inspect import add_inspect_command
from gpt.cli.serve import add_serve_command
from gpt.cli.sweep import add_sweep_command
from gpt.cli.tokenizer import add_tokenizer_command
from gpt.cli.train import add_eval_command, add_prepare_command, add_train_command

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_train_command, add_generate_command, add_eval_command, add_convert_command, add_download_command,
    add_tokenizer_command, add_finetune_command, add_chat_command, add_classify_command, add_prepare_command,
    add_fill_mask_command,
    add_inspect_command,
    add_serve_command,
    add_sweep_command,
]


def register(add_command: Callable[[argparse._SubParsersAction], None]) -> None:
    """Add a subcommand family: `add_command(subparsers)` adds parsers whose `func(args) -> int` runs them."""
    if add_command not in COMMANDS:
        COMMANDS.append(add_command)


def version() -> str:
    """The installed tinygpt version (the source tree's pyproject when not installed)."""
    from importlib import metadata

    try:
        return metadata.version("tinygpt")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The `tinygpt` parser with every registered subcommand."""
    parser = Parser(prog=PROG, description="tinygpt: a GPT-2 built from first principles (train, generate, ...)")
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `tinygpt` with `argv` (default sys.argv[1:]); returns the exit status."""
    from gpt.training.trainer import TrainingDiverged

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:   # --help (0) or a usage error (2), already printed
        return int(e.code or 0)
    try:
        return int(args.func(args) or 0)
    except TrainingDiverged as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the same command with --resume (and the same --out) continues from the last "
              f"checkpoint", file=sys.stderr)
        return 130
    except (ValueError, TypeError, KeyError, ImportError, OSError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2


__all__ = ["main", "build_parser", "register", "COMMANDS", "PROG", "DEFAULT_RUN_DIR", "add_common_args",
           "make_backend", "positive", "write_tokens"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
