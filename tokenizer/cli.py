"""Command line for the tokenizers: `tokenizer train [--kind bpe|wordpiece] | encode | decode`.

`add_tokenizer_commands(subparsers)` hangs the `tokenizer` command under another CLI (the `tinygpt` command);
`main(argv)` runs the same subcommands on their own (`python -m tokenizer ...`). Each subcommand's handler,
stored as `args.func`, returns an exit status and raises ValueError/OSError for a user error, which the calling
command's main prints as one line on stderr with exit status 2 (DESIGN §3).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .bpe import BPETokenizer, read_text
from .fileformat import render_token
from .gpt2 import get_encoding
from .pretrained import from_pretrained
from .wordpiece_training import BERT_SPECIALS, save_wordpiece, train_wordpiece


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_tokenizer_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `tokenizer train|encode|decode` to another CLI's subparsers; returns the `tokenizer` parser."""
    parser = subparsers.add_parser("tokenizer", help="train a BPE tokenizer, encode or decode text")
    _add_subcommands(parser.add_subparsers(dest="tokenizer_command", required=True, metavar="COMMAND"))
    return parser


def _add_subcommands(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a byte-level BPE or a WordPiece tokenizer on a UTF-8 text file")
    train.add_argument("--data", required=True, metavar="FILE", help="UTF-8 training text")
    train.add_argument("--kind", default="bpe", choices=["bpe", "wordpiece"], help="byte-level BPE or BERT's WordPiece")
    train.add_argument("--vocab-size", required=True, type=int, metavar="N",
                       help="bpe: 256 + merges + special tokens; wordpiece: the lines of vocab.txt")
    train.add_argument("--out", required=True, metavar="PATH",
                       help="bpe: tokenizer file to write (and PATH.vocab); wordpiece: directory for vocab.txt")
    train.add_argument("--pattern", choices=["gpt2", "gpt4", "none"], help="bpe: pre-tokenization split (gpt2)")
    train.add_argument("--special", nargs="*", metavar="TOKEN",
                       help="special tokens (bpe: none by default, e.g. <|endoftext|>; wordpiece: BERT's five)")
    train.add_argument("--cased", action="store_true", help="wordpiece: keep case and accents (default: uncased)")
    train.set_defaults(func=_train)

    for name, what in (("encode", "text to token ids"), ("decode", "token ids to text")):
        p = sub.add_parser(name, help=what)
        p.add_argument("--tokenizer", default="gpt2", metavar="gpt2|PATH",
                       help="gpt2, a file written by train, or a tokenizer.json / model directory")
        p.set_defaults(load_tokenizer=load_tokenizer)
        source = p.add_mutually_exclusive_group(required=True)
        if name == "encode":
            source.add_argument("--text", help="text to encode (special tokens in it become their ids)")
            source.add_argument("--file", metavar="FILE", help="UTF-8 file to encode (- reads standard input)")
            p.add_argument("--show-pieces", action="store_true", help="one line per token: id and its bytes")
            p.set_defaults(func=_encode)
        else:
            source.add_argument("--ids", help="token ids separated by spaces or commas, or a JSON list")
            source.add_argument("--file", metavar="FILE", help="file holding the ids (- reads standard input)")
            p.set_defaults(func=_decode)


def load_tokenizer(spec: str):
    """The tokenizer `--tokenizer` names: gpt2, a file written by `train`, or a tokenizer.json / vocab.txt / model
    directory (a caller such as the tinygpt command may put its own loader, which also reads run directories, in
    args.load_tokenizer)."""
    if spec == "gpt2":
        return get_encoding("gpt2")
    path = Path(spec)
    if path.is_dir() or path.suffix == ".json" or path.name == "vocab.txt":
        return from_pretrained(path)
    if not path.is_file():
        raise ValueError(f"--tokenizer {spec!r} is neither 'gpt2' nor an existing tokenizer file or directory")
    return BPETokenizer.load(spec)


def _read_input(path: str) -> str:
    """A UTF-8 file's text, or standard input's for '-'."""
    if path == "-":
        return sys.stdin.read()
    if not Path(path).is_file():
        raise ValueError(f"--file {path!r} not found; give an existing UTF-8 file, or - for standard input")
    return read_text(path)


def _train(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.kind == "wordpiece":
        return _train_wordpiece(args, start)
    pattern = None if args.pattern == "none" else (args.pattern or "gpt2")
    tok = BPETokenizer.train_from_file(args.data, args.vocab_size, pattern=pattern, special_tokens=args.special or [])
    tok.save(args.out)
    short = f"; the text ran out of pairs before vocab size {args.vocab_size}" if tok.n_vocab < args.vocab_size else ""
    print(
        f"trained {len(tok.merges)} merges (n_vocab {tok.n_vocab}{short}) in {time.perf_counter() - start:.2f} s;"
        f" wrote {args.out} and {args.out}.vocab"
    )
    return 0


def _train_wordpiece(args: argparse.Namespace, start: float) -> int:
    if args.pattern is not None:
        raise ValueError("--pattern applies to --kind bpe; WordPiece splits words as BERT's basic tokenizer does")
    specials = BERT_SPECIALS if args.special is None else args.special
    vocab = train_wordpiece(read_text(args.data), args.vocab_size, do_lower_case=not args.cased, special_tokens=specials)
    path = save_wordpiece(vocab, args.out, do_lower_case=not args.cased)
    short = f"; the text ran out of pairs before vocab size {args.vocab_size}" if len(vocab) < args.vocab_size else ""
    print(f"trained a WordPiece vocabulary of {len(vocab)} tokens{short} in {time.perf_counter() - start:.2f} s;"
          f" wrote {path} and tokenizer_config.json")
    return 0


def _encode(args: argparse.Namespace) -> int:
    tok = args.load_tokenizer(args.tokenizer)
    text = args.text if args.text is not None else _read_input(args.file)
    ids = tok.encode(text, allowed_special="all")
    if args.show_pieces:
        for i in ids:
            print(f"{i}\t[{render_token(tok.decode_bytes([i]))}]")
    else:
        print(" ".join(map(str, ids)))
    return 0


def _decode(args: argparse.Namespace) -> int:
    tok = args.load_tokenizer(args.tokenizer)
    source = args.ids if args.ids is not None else _read_input(args.file)
    sys.stdout.write(tok.decode(parse_ids(source)) + "\n")
    return 0


def parse_ids(source: str) -> list[int]:
    """Token ids from text: a JSON list, or integers separated by spaces and/or commas."""
    source = source.strip()
    try:
        ids = json.loads(source) if source.startswith("[") else [int(s) for s in source.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"cannot read token ids from {source[:40]!r}; give integers like '15496 11 995'") from None
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise ValueError(f"cannot read token ids from {source[:40]!r}; give a list of integers")
    return ids


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m tokenizer`; returns the exit status."""
    parser = _Parser(prog="python -m tokenizer", description="tinygpt tokenizers: train, encode, decode")
    _add_subcommands(parser.add_subparsers(dest="tokenizer_command", required=True, metavar="COMMAND"))
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return int(e.code or 0)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:  # OSError covers DataFileError and unreadable files
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2


__all__ = ["add_tokenizer_commands", "main", "parse_ids"]
