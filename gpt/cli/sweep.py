"""`tinygpt sweep`: an Optuna hyperparameter search whose trials are `tinygpt train` runs (library: gpt/sweep.py).

--trials N is the number of finished (completed or pruned) trials the *study* should hold: a process stops when
the study reaches it, so several processes given the same --storage and --study share the work, and running the
command again after a Ctrl-C (which stops after the running trial) continues the study up to N.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from gpt.cli.common import PROG, add_common_args, make_backend, positive, say, warn
from gpt.sweep import SPACE_MODEL_KEYS, SPACE_TRAIN_KEYS


def add_sweep_command(sub: argparse._SubParsersAction) -> None:
    """Register `tinygpt sweep` on the `tinygpt` subparsers."""
    pos = positive(int)
    p = sub.add_parser("sweep", help="hyperparameter search with Optuna (TPE + median pruning) over train runs",
                       description="Search learning rate, depth, width, heads, batch size and warmup (or the "
                                   "space of --space FILE) with Optuna's TPE sampler; each trial is a `tinygpt "
                                   "train` run in DIR/trial-NNNN, pruned when its validation loss falls behind. "
                                   "Writes DIR/sweep.md and DIR/sweep.png. --space FILE: a JSON object such as "
                                   '{"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": true}, "n_layers": '
                                   '{"type": "int", "low": 1, "high": 4}, "emb_dim": {"type": "categorical", '
                                   '"choices": [64, 128]}, "drop_rate": 0.0} (a bare value is fixed); see '
                                   "gpt/sweep.py for the settings it may name.")
    p.add_argument("--trials", type=pos, required=True, metavar="N",
                   help="finished trials the study should hold (shared by every process on the study)")
    p.add_argument("--out", required=True, metavar="DIR", help="sweep directory: trial runs, sweep.md, sweep.png "
                                                               "and the default SQLite study file sweep.db")
    p.add_argument("--storage", metavar="URL", help="Optuna RDB storage, e.g. sqlite:///PATH or "
                                                    "postgresql://user@host/db (default: sqlite in DIR)")
    p.add_argument("--study", default="sweep", metavar="NAME", help="study name in the storage (default: sweep)")
    p.add_argument("--space", metavar="FILE", help="search space JSON replacing the default one; it may name "
                                                   + ", ".join(SPACE_MODEL_KEYS + SPACE_TRAIN_KEYS))
    p.add_argument("--data", metavar="FILE", help="text or token file (default: the embedded pydoc corpus)")
    p.add_argument("--tokenizer", choices=("bpe", "gpt2", "bytes"), help="as `tinygpt train --tokenizer`")
    p.add_argument("--vocab-size", type=pos, default=1024, metavar="N", help="BPE vocabulary size (default 1024)")
    p.add_argument("--max-steps", type=pos, metavar="N", help="optimizer steps per trial (default: train's 350)")
    p.add_argument("--eval-interval", type=pos, metavar="N", help="evaluate (and maybe prune) every N steps")
    p.add_argument("--eval-iters", type=pos, metavar="N", help="batches per loss estimate")
    add_common_args(p)
    p.set_defaults(func=cmd_sweep)


@contextlib.contextmanager
def _stop_after_trial(write: Callable[[str], None]) -> Iterator[Callable[[], bool]]:
    """While sweeping: the first Ctrl-C lets the running trial finish and ends the sweep; a second aborts."""
    requested = [False]
    if threading.current_thread() is not threading.main_thread():
        yield lambda: requested[0]
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if requested[0]:
            raise KeyboardInterrupt
        requested[0] = True
        write("stopping after the running trial (Ctrl-C again to abort it); the same command continues the study")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield lambda: requested[0]
    finally:
        signal.signal(signal.SIGINT, previous)


def _base_config(args: argparse.Namespace) -> Any:
    from gpt.training.config import TrainConfig

    cfg = TrainConfig()
    for name in ("max_steps", "eval_interval", "eval_iters", "seed"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    cfg.sample_tokens = 0          # a sweep compares losses; samples would only cost time
    return cfg.validate()


def _open(storage: str, name: str, seed: int) -> Any:
    from gpt import sweep

    try:
        return sweep.open_study(storage, name, seed)
    except ImportError:
        raise ImportError('tinygpt sweep needs Optuna: pip install "tinygpt[sweep]"') from None
    except Exception as e:   # the storage layer's own errors (a bad URL, an unreachable server)
        raise ValueError(f"--storage {storage}: cannot open the study ({' '.join(str(e).split())[:200]})") from None


def _trial_line(trial: Any) -> str:
    value = trial.value if trial.value is not None else None
    settings = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in trial.user_attrs.get("settings", trial.params).items())
    seconds = trial.duration.total_seconds() if trial.duration is not None else 0.0
    what = f"val loss {value:.4f}" if value is not None else trial.state.name.lower()
    return f"trial {trial.number}: {what} in {seconds:.0f} s ({settings})"


def cmd_sweep(args: argparse.Namespace) -> int:
    from gpt import sweep

    space = sweep.load_space(args.space)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = _base_config(args)
    B = make_backend(args)
    data = sweep.prepare_data(args.data, args.tokenizer, args.vocab_size, base.val_fraction)
    storage = args.storage or sweep.default_storage(out)
    study = _open(storage, args.study, base.seed)
    done = len(sweep.finished_trials(study))
    say(f"study {args.study!r} in {storage}: {done} of {args.trials} trials finished; data {data.source} "
             f"({len(data.train_ids):,} train / {len(data.val_ids):,} val tokens); {base.max_steps} steps per "
             f"trial; backend {B.name} {B.dtype_name}")

    def objective(trial: Any) -> float:
        return sweep.run_trial(trial, space, data, base, B, out)

    with _stop_after_trial(say) as should_stop:
        ran = sweep.run_sweep(study, objective, args.trials, should_stop,
                              on_trial=lambda t: say(_trial_line(t)))
    report = sweep.write_report(study, out / sweep.REPORT_FILE, generate_command=f"{PROG} generate")
    try:
        sweep.plot_study(study, out / sweep.PLOT_FILE)
    except ImportError as e:
        warn(f"no sweep plot: {e}")
    rows = [r for r in sweep.trial_rows(study) if r["state"] == "complete"]
    best = f"; best: trial {rows[0]['number']}, val loss {rows[0]['value']:.4f}, {rows[0]['run_dir']}" if rows else ""
    say(f"ran {ran} trials here; the study has {len(sweep.finished_trials(study))} finished{best}; report "
             f"{report}")
    if rows:
        say(f"next: {PROG} generate --checkpoint {rows[0]['run_dir']} --prompt \"The for statement\"")
    return 130 if should_stop() and len(sweep.finished_trials(study)) < args.trials else 0


__all__ = ["add_sweep_command", "cmd_sweep"]
