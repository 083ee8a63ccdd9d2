"""What every `tinygpt` command shares: the parser class whose errors are one line, the engine options, backend
selection, number parsing, printing, the progress bar, streamed token output and the graceful Ctrl-C."""
from __future__ import annotations

import argparse
import codecs
import contextlib
import math
import signal
import sys
import threading
from typing import Any, Callable, Iterator

import backends

PROG = "tinygpt"
DEFAULT_RUN_DIR = "runs/tinygpt"   # where `tinygpt train` writes and `tinygpt generate` reads by default


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (`tinygpt: error: ...`) and exit status 2, and whose
    help shows each option's default."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{PROG}: error: {message} (see `{self.prog} --help`)\n")


class DefaultsFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help when it has a default and the help does not name one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: {action.default})" if text else f"default: {action.default}"


def say(*parts: Any) -> None:
    """Print a line of the command's output on stdout."""
    print(*parts, flush=True)


def warn(message: str) -> None:
    """Print a note on stderr, prefixed with the program's name."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def add_common_args(parser: argparse.ArgumentParser, seed: bool = True) -> None:
    """--backend, --dtype, --device (and --seed), the engine options of every command that runs a model."""
    g = parser.add_argument_group("engine")
    g.add_argument("--backend", default="numpy", choices=backends.BACKENDS,
                   help="engine: numpy (tinytensor, CPU), cupy (tinytensor, CUDA) or torch")
    g.add_argument("--dtype", default="float32", help="float dtype: float32, float64; torch also bfloat16, float16")
    g.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the backend's default)")
    g.add_argument("--matmul-threads", choices=("pool", "blas", "auto"), default=None,
                   help="numpy backend: how matrix products use the cores: auto (default: the faster of the two "
                        "below by measured speed, only where both give the same bits), pool (single-threaded BLAS "
                        "over tinytensor's threads, robust on shared cores), blas (OpenBLAS's own threads: faster "
                        "for small models on an idle machine, much slower on busy cores); also env "
                        "TINYTENSOR_MATMUL (tinytensor/kernels/matmul.py)")
    g.add_argument("--kernels", choices=("native", "numpy"), default=None,
                   help="numpy backend: LayerNorm, GELU, softmax, cross-entropy and AdamW as the C kernels built at "
                        "install (native, the default where they were built) or as NumPy calls (numpy, the "
                        "reference); also env TINYTENSOR_NATIVE=0 (tinytensor/kernels/native.py)")
    if seed:
        g.add_argument("--seed", type=int, default=None, help="random seed (data order, dropout, sampling)")


def make_backend(args: argparse.Namespace) -> backends.Backend:
    """The backend the flags ask for; an unavailable one (no torch, no CUDA) becomes a ValueError with the fix."""
    if getattr(args, "matmul_threads", None):
        from tinytensor.kernels.matmul import set_matmul_threading

        set_matmul_threading(args.matmul_threads)
    if getattr(args, "kernels", None):
        from tinytensor.kernels.native import set_native_kernels

        try:
            set_native_kernels(args.kernels == "native")
        except RuntimeError as e:  # asked for native where they were not built: say why
            raise ValueError(str(e)) from None
    try:
        return backends.get_backend(args.backend, dtype=args.dtype, device=args.device)
    except (ImportError, RuntimeError) as e:
        raise ValueError(str(e)) from None


def positive(kind: type, allow_zero: bool = False) -> Callable[[str], Any]:
    """An argparse type: a number > 0 (or >= 0)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not (value >= 0 if allow_zero else value > 0) or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text} must be {'>= 0' if allow_zero else '> 0'}")
        return value
    parse.__name__ = kind.__name__
    return parse


def progress_bar(total: int, initial: int, desc: str, enabled: bool = True) -> Any:
    """A tqdm bar on stderr, shown only on a terminal (logs and tests get no redraw noise)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                disable=None if enabled else True, file=sys.stderr)


def write_tokens(tokens: Any, tok: Any, out: Any) -> None:
    """Write streamed token ids to `out` as text as they arrive, then a newline (generate and chat)."""
    # tokens may end inside a UTF-8 character: the incremental decoder holds such bytes until the rest arrives
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for token in tokens:
        out.write(decoder.decode(tok.decode_bytes([token])))
        out.flush()
    out.write(decoder.decode(b"", final=True) + "\n")
    out.flush()


@contextlib.contextmanager
def graceful_interrupt(trainer: Any, write: Callable[[str], None] | None) -> Iterator[None]:
    """While training: the first Ctrl-C finishes the step, writes a checkpoint and ends the run; a second aborts.
    Off (plain KeyboardInterrupt) when `write` is None (DDP ranks) or off the main thread."""
    if write is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.request_stop()
        write("stopping after this step to write a checkpoint (Ctrl-C again to abort at once)")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def write_above_bar(line: str) -> None:
    """Print a line on stdout without breaking a progress bar that is being drawn on the terminal."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def event_printer(describe: Callable[[dict], str], write: Callable[[str], None] = write_above_bar
                  ) -> Callable[[dict], None]:
    """A Trainer on_event callback: notes and warnings through `write` (above the progress bar), each evaluation
    as `describe(record)` plus its sample."""
    def on_event(event: dict) -> None:
        kind = event["event"]
        if kind == "warning":
            write(f"{PROG}: {event['message']}")
        elif kind == "note":
            write(f"note: {event['message']}")
        elif kind == "eval":
            write(describe(event))
            if event.get("sample"):
                write(f"  sample: {event['sample']}")
    return on_event


def run_training(trainer: Any, desc: str, world_size: int = 1, rank: int = 0) -> Any:
    """Run a Trainer under a progress bar with the graceful Ctrl-C; evaluation lines print above the bar."""
    bar = progress_bar(trainer.total_steps, trainer.step, desc, enabled=rank == 0)
    with bar, graceful_interrupt(trainer, bar.write if world_size == 1 else None):
        return trainer.run(progress=bar)
