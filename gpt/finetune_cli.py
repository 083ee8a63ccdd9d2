"""`tinygpt finetune classify|instruct` and `tinygpt chat`: the book's chapters 6 and 7 and appendix E as commands.

`add_finetune_commands(subparsers)` registers the three subcommands (gpt/cli.py calls it like its other
`add_*_command` functions). The fine-tuning loop here, `FinetuneRun`, is the pretraining trainer's recipe applied
to a task: AdamW with gpt.train's decay groups over the trainable parameters only, gpt.schedule's warmup + cosine
(by default a constant rate, as the book), optional clipping, `B.manual_seed(derive_seed(seed, step))` before each
step and a seeded, resumable gpt.data.DataLoader, so `--resume` continues a run exactly; checkpoints go through
gpt.checkpoint.CheckpointManager and progress to DIR/metrics.jsonl in the trainer's format.

A fine-tuned checkpoint is a trainer checkpoint whose state.json also holds "finetune": {"task": "classify" |
"instruct", "num_classes", "lora": {"rank", "alpha"} | null, "trainable", "pool", "max_length", "pad_token_id",
"config"}, which `load_finetuned` reads to rebuild the model's shape (2-class head, LoRA wrappers) before loading
the weights. An instruction run without LoRA is a plain GPT checkpoint (`tinygpt generate` reads it); with LoRA
the run also writes DIR/merged/, the LoRA-merged plain model (`tinygpt convert --to-hf` exports it as GPT-2).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
RESPONSES_FILE = "test-responses.json"
MERGED_DIR = "merged"


# ---- the loop -------------------------------------------------------------------------------------------------

@dataclass
class FinetuneConfig:
    """Settings of a fine-tuning run; the defaults are the book's chapter 6 (classification) settings."""

    epochs: int = 5                 # passes over the training split (book: 5 for spam, 2 for instructions)
    batch_size: int = 8             # examples per step (book: 8)
    lr: float = 5e-5                # peak learning rate (book: 5e-5 with AdamW)
    min_lr: float | None = None     # floor of the cosine; None: no decay, the book's constant rate
    warmup_steps: int = 0           # linear warmup steps (book: none)
    weight_decay: float = 0.1       # AdamW decay on matrices and embeddings (book: 0.1)
    grad_clip: float = 0.0          # max global gradient norm, 0 disables (book: no clipping)
    max_steps: int | None = None    # stop after this many steps; None: epochs × batches per epoch
    eval_interval: int = 50         # evaluate and checkpoint every this many steps (book: eval_freq 50 / 5)
    eval_iters: int = 5             # batches per loss/accuracy estimate during training (book: eval_iter 5)
    seed: int = 123                 # data order, new head, LoRA init, dropout masks
    keep_last: int = 2              # step checkpoints kept (best/ besides)

    def validate(self) -> "FinetuneConfig":
        """Raise ValueError naming the first bad setting (as its flag) and the rule."""
        for name in ("epochs", "batch_size", "eval_interval", "eval_iters", "keep_last"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} {value!r} is invalid: it must be an integer >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"--max-steps {self.max_steps} is invalid: it must be an integer >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--lr {self.lr} is invalid: it must be a positive number such as 5e-5")
        if self.min_lr is not None and not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"--min-lr {self.min_lr} is invalid: it must lie between 0 and --lr ({self.lr})")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("--warmup-steps, --weight-decay and --grad-clip must be >= 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FinetuneConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class FinetuneRun:
    """Trains `model` on batches of `loader` with `loss_fn(model, inputs, targets)`; evaluates with `evaluate()`.

    evaluate() returns a dict with at least train_loss and val_loss (plus e.g. train_acc, val_acc). state_extra is
    merged into each checkpoint's state.json (model_config, tokenizer, finetune, data source).
    """

    def __init__(self, model: Any, loader: Any, loss_fn: Callable[[Any, Any, Any], Any],
                 evaluate: Callable[[], dict], config: FinetuneConfig, out_dir: str | Path | None = None,
                 state_extra: dict | None = None, tokenizer: Any = None,
                 on_event: Callable[[dict], None] | None = None):
        from gpt.checkpoint import CheckpointManager
        from gpt.train import param_groups

        self.cfg = config.validate()
        self.model, self.B, self.loader = model, model.B, loader
        self.loss_fn, self.evaluate, self.on_event = loss_fn, evaluate, on_event
        self.state_extra, self.tokenizer = dict(state_extra or {}), tokenizer
        self.out_dir = Path(out_dir) if out_dir is not None else None
        groups = param_groups(model, self.cfg.weight_decay)
        if not groups:
            raise ValueError("no trainable parameters: unfreeze some (--trainable) or add LoRA (--lora-rank)")
        self.optimizer = self.B.AdamW(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.total_steps = self.cfg.max_steps or self.cfg.epochs * len(loader)
        self.step, self.examples_seen, self.tokens_seen = 0, 0, 0
        self.checkpoints = CheckpointManager(self.out_dir, self.cfg.keep_last) if self.out_dir else None
        self.stop_requested = self.stopped = False

    def lr(self, step: int) -> float:
        from gpt.schedule import lr_at

        c = self.cfg
        return lr_at(step, c.lr, c.lr if c.min_lr is None else c.min_lr, c.warmup_steps, self.total_steps)

    def next_batch(self) -> tuple[Any, Any]:
        """The next training batch, moving to the next (reshuffled) epoch at the end of one."""
        return self.loader.next_batch()

    def train_step(self) -> float:
        """One optimizer step; returns its loss. A NaN/inf loss raises gpt.train.TrainingDiverged."""
        from gpt.train import TrainingDiverged, derive_seed

        c = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(self.step)
        self.B.manual_seed(derive_seed(c.seed, self.step))   # this step's dropout masks (exact resume)
        self.optimizer.zero_grad()
        inputs, targets = self.next_batch()
        loss = self.loss_fn(self.model, inputs, targets)
        loss.backward()
        value = float(loss.item())
        if not math.isfinite(value):
            raise TrainingDiverged(self.step + 1, value, self.checkpoints.latest() if self.checkpoints else None)
        if c.grad_clip > 0:
            self.B.clip_grad_norm([p for p in self.model.parameters() if p.requires_grad], c.grad_clip)
        self.optimizer.step()
        self.step += 1
        self.examples_seen += int(np.shape(inputs)[0])
        self.tokens_seen += int(np.prod(np.shape(inputs)))
        return value

    def state(self, record: dict | None = None) -> dict:
        record = record or {}
        return {**self.state_extra, "step": self.step, "examples_seen": self.examples_seen,
                "tokens_seen": self.tokens_seen,
                "data": {**self.state_extra.get("data", {}), "loader": self.loader.state_dict()},
                "rng": {"scheme": "B.manual_seed(derive_seed(seed, step)) before each step; data order from "
                                  "default_rng([seed, epoch])", "seed": self.cfg.seed},
                "backend": {"name": self.B.name, "dtype": self.B.dtype_name},
                "train_loss": record.get("train_loss"), "val_loss": record.get("val_loss")}

    def save(self, record: dict | None = None) -> Path | None:
        if self.checkpoints is None:
            return None
        val = (record or {}).get("val_loss")
        path = self.checkpoints.save(self.step, self.model, self.optimizer, self.state(record), self.tokenizer,
                                     val_loss=val if val is not None and math.isfinite(val) else None)
        self._emit({"event": "checkpoint", "step": self.step, "path": str(path)})
        return path

    def resume(self, path: str | Path) -> int:
        """Restore weights, optimizer state, step, counters and data position from a checkpoint."""
        from gpt.checkpoint import read_checkpoint, restore_training
        from gpt.train import truncate_metrics

        ckpt = read_checkpoint(path)
        self.step = restore_training(ckpt, self.model, self.optimizer, self.loader)
        self.examples_seen = int(ckpt.state.get("examples_seen", 0))
        self.tokens_seen = int(ckpt.state.get("tokens_seen", 0))
        if self.out_dir is not None:
            truncate_metrics(self.out_dir / METRICS_FILE, self.step)
        return self.step

    def _emit(self, record: dict) -> None:
        if self.on_event is not None:
            self.on_event(record)

    def _log(self, record: dict) -> None:
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / METRICS_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _eval_record(self, tokens_per_s: float) -> dict:
        was_training = self.model.training
        self.model.eval()
        try:
            with self.B.no_grad():
                metrics = self.evaluate()
        finally:
            self.model.train(was_training)
        return {"step": self.step, **metrics, "lr": self.lr(self.step), "examples_seen": self.examples_seen,
                "tokens_seen": self.tokens_seen, "tokens_per_s": tokens_per_s,
                "epoch": self.examples_seen / max(len(self.loader.dataset), 1)}

    def request_stop(self) -> None:
        """Ask run() to finish the step in progress, checkpoint it and return with `stopped` set (a graceful Ctrl-C)."""
        self.stop_requested = True

    def run(self, progress: Any = None) -> list[dict]:
        """Train to total_steps from the current step (or to a requested stop); returns this call's evaluations."""
        evals: list[dict] = []
        self.model.train()
        if self.step == 0:
            record = self._eval_record(0.0)
            self._log(record)
            evals.append(record)
            self._emit({"event": "eval", **record})
        tokens_per_s = 0.0
        while self.step < self.total_steps:
            t0, tokens0 = time.perf_counter(), self.tokens_seen
            loss = self.train_step()
            self.B.synchronize()
            tokens_per_s = (self.tokens_seen - tokens0) / max(time.perf_counter() - t0, 1e-9)
            lr = self.lr(self.step - 1)
            self._log({"step": self.step, "train_loss": loss, "lr": lr, "examples_seen": self.examples_seen,
                       "tokens_seen": self.tokens_seen, "tokens_per_s": tokens_per_s})
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}")
            if self.step % self.cfg.eval_interval == 0 or self.step == self.total_steps:
                record = self._eval_record(tokens_per_s)
                self._log(record)
                evals.append(record)
                self._emit({"event": "eval", **record})
                self.save(record)
            elif self.stop_requested:
                self.save()
            if self.stop_requested:   # between steps: weights and optimizer state are consistent here
                self.stopped = True
                break
        return evals


# ---- building models ------------------------------------------------------------------------------------------

def apply_finetune_shape(model: Any, ft: dict, seed: int) -> Any:
    """Give a GPTModel the shape a fine-tuning run trains: the class head, the trainable set, LoRA wrappers."""
    from gpt.classify import replace_head, set_trainable
    from gpt.lora import replace_linear_with_lora

    if ft["task"] == "classify":
        replace_head(model, int(ft["num_classes"]), seed=seed)
    lora = ft.get("lora")
    if lora:
        # book appendix E: freeze the whole model (new head included), then only the LoRA matrices train
        replace_linear_with_lora(model, int(lora["rank"]), float(lora["alpha"]), rng=np.random.default_rng(seed))
    else:
        set_trainable(model, ft.get("trainable") or "all")
    return model


def load_finetuned(path: str | Path, backend: Any, merge: bool = False) -> tuple[Any, Any, dict]:
    """(model, tokenizer, state) of a fine-tuned checkpoint, a plain tinygpt checkpoint or a Hugging Face dir.

    merge: fold LoRA into the weights (for inference). The model is in eval mode.
    """
    from gpt.checkpoint import find_checkpoint, load_model, read_checkpoint
    from gpt.corpus import load_tokenizer
    from gpt.lora import merge_lora
    from gpt.model import GPTModel

    path = Path(path)
    try:
        ckpt_dir = find_checkpoint(path)
    except FileNotFoundError:
        ckpt_dir = None
    if ckpt_dir is None:
        return load_model(path, backend)        # a Hugging Face GPT-2 directory, or the loader's own error
    ckpt = read_checkpoint(ckpt_dir, with_optimizer=False)
    ft = ckpt.state.get("finetune")
    if not ft:
        return load_model(ckpt_dir, backend)
    model = GPTModel(ckpt.state["model_config"], backend=backend, seed=0)
    apply_finetune_shape(model, ft, seed=0)
    try:
        model.load_state_dict(ckpt.weights)
    except (KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise ValueError(f"{ckpt.path} does not fit its own fine-tuning description: {msg}") from None
    if merge and ft.get("lora"):
        merge_lora(model)
    model.eval()
    return model, load_tokenizer(ckpt.state.get("tokenizer") or {"kind": "gpt2"}, ckpt.path), ckpt.state


def _load_init(path: str, B: Any) -> tuple[Any, Any, dict]:
    """The model to fine-tune (a pretraining checkpoint/run dir or a Hugging Face GPT-2 dir) and its tokenizer."""
    from gpt.checkpoint import load_model

    model, tok, state = load_model(path, B)
    if state.get("finetune"):
        raise ValueError(f"--init {path} is already a fine-tuned model ({state['finetune']['task']}); start from "
                         f"a pretrained checkpoint, or pass --resume to continue that run")
    model.train()
    return model, tok, state


# ---- command-line plumbing ---------------------------------------------------------------------------------------

def _say(*parts: Any) -> None:
    print(*parts, flush=True)


def _cli() -> Any:
    import gpt.cli as cli   # imported late: gpt/cli.py imports this module to register the commands

    return cli


def _add_finetune_args(p: argparse.ArgumentParser, defaults: FinetuneConfig) -> None:
    cli = _cli()
    pos_int, pos_float = cli._positive(int), cli._positive(float)
    nonneg_int, nonneg_float = cli._positive(int, allow_zero=True), cli._positive(float, allow_zero=True)
    p.add_argument("--init", metavar="DIR", help="pretrained model: a `tinygpt train --out` directory or checkpoint, "
                                                 "a Hugging Face GPT-2 directory, or gpt2 (gpt2-medium, ...) after "
                                                 "`tinygpt download gpt2`")
    p.add_argument("--data", metavar="FILE", help="the data file (see the command's description)")
    p.add_argument("--out", metavar="DIR", required=True, help="run directory: checkpoints, metrics.jsonl, results")
    p.add_argument("--limit", type=pos_int, metavar="N", help="use only N examples (a quick trial)")
    o = p.add_argument_group("optimization")
    o.add_argument("--epochs", type=pos_int, metavar="N", help=f"passes over the training split "
                                                                f"(default {defaults.epochs})")
    o.add_argument("--max-steps", type=pos_int, metavar="N", help="stop after N steps (default: the epochs' steps)")
    o.add_argument("--batch-size", type=pos_int, metavar="N", help=f"default {defaults.batch_size}")
    o.add_argument("--lr", type=pos_float, metavar="LR", help=f"peak learning rate (default {defaults.lr:g})")
    o.add_argument("--min-lr", type=nonneg_float, metavar="LR", help="cosine floor (default: constant lr)")
    o.add_argument("--warmup-steps", type=nonneg_int, metavar="N", help="default 0")
    o.add_argument("--weight-decay", type=nonneg_float, metavar="W", help=f"default {defaults.weight_decay:g}")
    o.add_argument("--grad-clip", type=nonneg_float, metavar="C", help="max gradient norm (default 0: none)")
    o.add_argument("--eval-interval", type=pos_int, metavar="N", help=f"evaluate and checkpoint every N steps "
                                                                       f"(default {defaults.eval_interval})")
    o.add_argument("--eval-iters", type=pos_int, metavar="N", help=f"batches per estimate "
                                                                   f"(default {defaults.eval_iters})")
    o.add_argument("--keep-last", type=pos_int, metavar="K", help="step checkpoints to keep (default 2)")
    lo = p.add_argument_group("LoRA (book appendix E)")
    lo.add_argument("--lora-rank", type=pos_int, metavar="R", help="train rank-R LoRA matrices instead of weights")
    lo.add_argument("--lora-alpha", type=pos_float, metavar="A", help="LoRA scale (default: the rank, as the book)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    cli.add_common_args(p)


_CONFIG_FLAGS = ("epochs", "max_steps", "batch_size", "lr", "min_lr", "warmup_steps", "weight_decay", "grad_clip",
                 "eval_interval", "eval_iters", "keep_last")


def _config(args: argparse.Namespace, base: FinetuneConfig) -> FinetuneConfig:
    cfg = FinetuneConfig.from_dict(base.to_dict())
    for name in _CONFIG_FLAGS:
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.seed is not None:
        cfg.seed = args.seed
    return cfg.validate()


def _lora_spec(args: argparse.Namespace) -> dict | None:
    if args.lora_rank is None:
        if args.lora_alpha is not None:
            raise ValueError("--lora-alpha needs --lora-rank (e.g. --lora-rank 16 --lora-alpha 16)")
        return None
    return {"rank": args.lora_rank, "alpha": args.lora_alpha if args.lora_alpha is not None else args.lora_rank}


def _prepare(args: argparse.Namespace, task: str, defaults: FinetuneConfig) -> dict:
    """The model, tokenizer, config and state of a new run or of the run being resumed in --out."""
    from gpt.checkpoint import read_checkpoint, read_index
    from gpt.classify import end_of_text_id
    from gpt.corpus import load_tokenizer
    from gpt.model import GPTModel

    cli = _cli()
    out = Path(args.out)
    B = cli.make_backend(args)
    if args.resume:
        ckpt = read_checkpoint(out, with_optimizer=False)
        ft = ckpt.state.get("finetune") or {}
        if ft.get("task") != task:
            raise ValueError(f"{out} holds no `finetune {task}` run to resume (found task {ft.get('task')!r})")
        given = [f"--{n.replace('_', '-')}" for n in ("init", "lora_rank", "lora_alpha", "limit")
                 if getattr(args, n, None) is not None] + (["--trainable"] if getattr(args, "trainable", None)
                                                           else [])
        if given:
            raise ValueError(f"--resume continues the saved model, data and settings; drop {', '.join(given)}")
        cfg = FinetuneConfig.from_dict(ft["config"])
        for name in ("max_steps", "epochs"):          # a resumed run may be extended
            if getattr(args, name) is not None:
                setattr(cfg, name, getattr(args, name))
        cfg.validate()
        model = GPTModel(ckpt.state["model_config"], backend=B, seed=0)
        apply_finetune_shape(model, ft, seed=cfg.seed)
        tokenizer = load_tokenizer(ckpt.state.get("tokenizer") or {"kind": "gpt2"}, ckpt.path)
        return {"B": B, "model": model, "tokenizer": tokenizer, "tok_spec": ckpt.state.get("tokenizer"),
                "cfg": cfg, "ft": ft, "data": args.data or ckpt.state["data"]["source"],
                "limit": ckpt.state["data"].get("limit"), "resume_from": ckpt.path, "out": out}
    if args.init is None or args.data is None:
        raise ValueError(f"`finetune {task}` needs --init DIR (a pretrained model) and --data FILE, or --resume")
    if read_index(out).get("latest"):
        raise ValueError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    cfg = _config(args, defaults)
    model, tokenizer, state = _load_init(args.init, B)
    pad = end_of_text_id(tokenizer)
    ft = {"task": task, "lora": _lora_spec(args), "pad_token_id": pad, "init": str(args.init),
          "config": cfg.to_dict()}
    return {"B": B, "model": model, "tokenizer": tokenizer, "tok_spec": state.get("tokenizer") or {"kind": "gpt2"},
            "cfg": cfg, "ft": ft, "data": args.data, "limit": args.limit, "resume_from": None, "out": out}


def _describe(model: Any) -> str:
    total = model.num_parameters()
    trainable = model.num_parameters(trainable_only=True)
    return f"{trainable:,} of {total:,} parameters trainable ({100 * trainable / max(total, 1):.2f}%)"


def _run(run: FinetuneRun, resume_from: Path | None) -> list[dict]:
    from tqdm import tqdm

    if resume_from is not None:
        run.resume(resume_from)
        _say(f"resumed {run.out_dir} at step {run.step}")
    bar = tqdm(total=run.total_steps, initial=run.step, desc="finetune", unit="step", dynamic_ncols=True,
               disable=None, file=sys.stderr)
    run.on_event = _printer(bar)
    with bar, _cli()._graceful_interrupt(run, bar.write):
        evals = run.run(progress=bar)
    if run.stopped:
        _say(f"stopped at step {run.step}; checkpoint {run.checkpoints.latest() if run.checkpoints else None}; the "
             f"same command with --out {run.out_dir} --resume continues exactly from there")
    return evals


def _printer(bar: Any) -> Callable[[dict], None]:
    def on_event(event: dict) -> None:
        if event["event"] != "eval":
            return
        line = f"step {event['step']:>5}: train loss {event['train_loss']:.3f}, val loss {event['val_loss']:.3f}"
        if "train_acc" in event:
            line += f", train acc {100 * event['train_acc']:.1f}%, val acc {100 * event['val_acc']:.1f}%"
        bar.write(f"{line}, lr {event['lr']:.2e}, {event['examples_seen']:,} examples")
    return on_event


def _plot(out: Path) -> None:
    from gpt.pretrain import plot_losses
    from gpt.train import read_metrics

    evals = read_metrics(out / METRICS_FILE, evals_only=True)
    if len(evals) < 2:
        return
    try:
        plot_losses([r["epoch"] for r in evals], [r["tokens_seen"] for r in evals],
                    [r["train_loss"] for r in evals], [r["val_loss"] for r in evals], path=out / "loss.png")
    except ImportError as e:
        _cli()._warn(f"no loss plot: {e}")


# ---- finetune classify ---------------------------------------------------------------------------------------------

CLASSIFY_DEFAULTS = FinetuneConfig(epochs=5, batch_size=8, lr=5e-5, weight_decay=0.1, eval_interval=50, eval_iters=5)
INSTRUCT_DEFAULTS = FinetuneConfig(epochs=2, batch_size=8, lr=5e-5, weight_decay=0.1, eval_interval=5, eval_iters=5)


def add_classify_command(sub: argparse._SubParsersAction) -> None:
    from gpt.classify import TRAINABLE_CHOICES

    p = sub.add_parser("classify", help="fine-tune as a spam classifier (book ch. 6)",
                       description="Fine-tune a pretrained GPT as a spam classifier on the SMS Spam Collection "
                                   "(--data: its tab-separated SMSSpamCollection file): balance, split 70/10/20, "
                                   "2-class head, train the last block + final norm + head (book ch. 6), or LoRA.")
    _add_finetune_args(p, CLASSIFY_DEFAULTS)
    c = p.add_argument_group("classifier")
    c.add_argument("--trainable", choices=TRAINABLE_CHOICES, default=None,
                   help="what trains without LoRA: last-block (default, the book's: last block, final norm, head), "
                        "head, or all")
    c.add_argument("--max-length", type=_cli()._positive(int), metavar="N",
                   help="pad/truncate messages to N tokens (default: the longest training message, at most the "
                        "context length)")
    c.add_argument("--pool", choices=("last", "last-non-pad"), default=None,
                   help="classify from the last position (default, the book's) or the last non-pad token")
    p.set_defaults(func=cmd_finetune_classify)


def cmd_finetune_classify(args: argparse.Namespace) -> int:
    from gpt.classify import (SpamDataset, calc_accuracy_loader, calc_loss_batch_classifier,
                              calc_loss_loader_classifier, create_balanced_dataset, eval_batches, majority_baseline,
                              random_split, read_sms_spam)
    from gpt.data import DataLoader

    if args.resume and (args.max_length is not None or args.pool is not None):
        raise ValueError("--resume continues the saved settings; drop --max-length and --pool")
    if args.trainable is not None and args.lora_rank is not None:
        raise ValueError(f"--trainable {args.trainable} and --lora-rank exclude each other: with LoRA only the "
                         f"LoRA matrices train; drop one of them")
    run_info = _prepare(args, "classify", CLASSIFY_DEFAULTS)
    model, tok, cfg, ft = run_info["model"], run_info["tokenizer"], run_info["cfg"], run_info["ft"]
    ctx = model.cfg.context_length
    rows = create_balanced_dataset(read_sms_spam(run_info["data"]), seed=cfg.seed)
    limit = run_info["limit"]
    if limit is not None:
        keep = np.random.default_rng([cfg.seed, 1]).permutation(len(rows))[:limit]
        rows = [rows[i] for i in sorted(keep)]
    train_rows, val_rows, test_rows = random_split(rows, 0.7, 0.1, seed=cfg.seed)
    if min(len(train_rows), len(val_rows), len(test_rows)) == 0:
        raise ValueError(f"--limit {limit} leaves an empty split ({len(train_rows)}/{len(val_rows)}/"
                         f"{len(test_rows)} train/val/test); give --limit 30 or more")
    pad = int(ft["pad_token_id"])
    if run_info["resume_from"] is None:
        train_probe = SpamDataset(train_rows, tok, None, pad)
        max_length = args.max_length or train_probe.max_length
        if max_length > ctx:
            what = "--max-length" if args.max_length else "the longest training message"
            _say(f"note: {what} is {max_length} tokens, more than the model's context length; messages are "
                 f"truncated to {ctx} tokens")
            max_length = ctx
        ft.update(num_classes=2, trainable=None if ft["lora"] else (args.trainable or "last-block"),
                  pool=args.pool or "last", max_length=max_length)
        apply_finetune_shape(model, ft, seed=cfg.seed)
    max_length = int(ft["max_length"])
    if max_length > ctx:
        raise ValueError(f"--max-length {max_length} exceeds the model's context length {ctx}")
    pool_pad = pad if ft["pool"] == "last-non-pad" else None
    train_set = SpamDataset(train_rows, tok, max_length, pad)
    val_set, test_set = SpamDataset(val_rows, tok, max_length, pad), SpamDataset(test_rows, tok, max_length, pad)
    if len(train_set) < cfg.batch_size:
        raise ValueError(f"the training split has {len(train_set)} messages, fewer than --batch-size "
                         f"{cfg.batch_size}; lower --batch-size or raise --limit")
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True, seed=cfg.seed)
    train_eval = eval_batches(train_set, cfg.batch_size)
    val_eval, test_eval = eval_batches(val_set, cfg.batch_size), eval_batches(test_set, cfg.batch_size)

    def evaluate() -> dict:
        n = cfg.eval_iters
        return {"train_loss": calc_loss_loader_classifier(train_eval, model, num_batches=n, pad_token_id=pool_pad),
                "val_loss": calc_loss_loader_classifier(val_eval, model, num_batches=n, pad_token_id=pool_pad),
                "train_acc": calc_accuracy_loader(train_eval, model, num_batches=n, pad_token_id=pool_pad),
                "val_acc": calc_accuracy_loader(val_eval, model, num_batches=n, pad_token_id=pool_pad)}

    ft["config"] = cfg.to_dict()
    state = {"model_config": model.cfg.to_dict(), "tokenizer": run_info["tok_spec"], "finetune": ft,
             "data": {"source": str(run_info["data"]), "limit": limit}}
    run = FinetuneRun(model, loader, lambda m, x, y: calc_loss_batch_classifier(x, y, m, pad_token_id=pool_pad),
                      evaluate, cfg, out_dir=run_info["out"], state_extra=state, tokenizer=tok)
    _say(f"data: {run_info['data']}: {len(rows)} balanced messages -> {len(train_set)} train / {len(val_set)} val / "
         f"{len(test_set)} test, padded to {max_length} tokens with id {pad}; model: {_describe(model)}"
         + (f" (LoRA rank {ft['lora']['rank']}, alpha {ft['lora']['alpha']:g})" if ft["lora"] else
            f" ({ft['trainable']})") + f"; backend {run.B.name} {run.B.dtype_name}")
    t0 = time.perf_counter()
    _run(run, run_info["resume_from"])
    if run.stopped:
        return 130
    seconds = time.perf_counter() - t0
    accs = {name: calc_accuracy_loader(batches, model, pad_token_id=pool_pad)
            for name, batches in (("train", train_eval), ("val", val_eval), ("test", test_eval))}
    majority = int(np.bincount(train_set.labels, minlength=2).argmax())
    baseline = {name: float(np.mean(ds.labels == majority))
                for name, ds in (("train", train_set), ("val", val_set), ("test", test_set))}
    results = {"step": run.step, "seconds": seconds, "accuracy": accs, "majority_baseline": baseline,
               "majority_class": majority, "balanced_baseline": majority_baseline(train_set.labels),
               "sizes": {"train": len(train_set), "val": len(val_set), "test": len(test_set)},
               "lora": ft["lora"], "trainable": ft["trainable"], "checkpoint": str(run.checkpoints.latest())}
    (run_info["out"] / RESULTS_FILE).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    _plot(run_info["out"])
    _say(f"done: step {run.step} in {seconds:.0f} s. Accuracy: train {100 * accs['train']:.2f}%, validation "
         f"{100 * accs['val']:.2f}%, test {100 * accs['test']:.2f}% (majority-class baseline: train "
         f"{100 * baseline['train']:.2f}%, validation {100 * baseline['val']:.2f}%, test "
         f"{100 * baseline['test']:.2f}%); checkpoint {results['checkpoint']}; results "
         f"{run_info['out'] / RESULTS_FILE}")
    return 0


# ---- finetune instruct -------------------------------------------------------------------------------------------

def add_instruct_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("instruct", help="instruction fine-tuning (book ch. 7)",
                       description="Fine-tune a pretrained GPT to follow instructions (--data: a JSON list of "
                                   "{instruction, input, output}, e.g. the book's instruction-data.json): split "
                                   "85/10/5, Alpaca prompts, train, then write the test split's responses.")
    _add_finetune_args(p, INSTRUCT_DEFAULTS)
    i = p.add_argument_group("instructions")
    i.add_argument("--mask-instruction", action="store_true", help="learn only the responses (prompt targets -100)")
    i.add_argument("--max-new-tokens", type=_cli()._positive(int, allow_zero=True), default=256, metavar="N",
                   help="tokens generated per test response (default 256, the book's; 0 skips generation)")
    i.add_argument("--responses", metavar="FILE", help=f"where the test responses go (default DIR/{RESPONSES_FILE})")
    p.set_defaults(func=cmd_finetune_instruct)


def cmd_finetune_instruct(args: argparse.Namespace) -> int:
    from functools import partial

    from gpt.checkpoint import save_checkpoint
    from gpt.data import DataLoader
    from gpt.instruct import (CollatedDataset, InstructionDataset, custom_collate_fn, generate_responses,
                              load_instruction_data, split_instruction_data, write_responses)
    from gpt.lora import merge_lora
    from gpt.pretrain import calc_loss_batch, calc_loss_loader

    if args.resume and args.mask_instruction:
        raise ValueError("--resume continues the saved settings; drop --mask-instruction")
    run_info = _prepare(args, "instruct", INSTRUCT_DEFAULTS)
    model, tok, cfg, ft = run_info["model"], run_info["tokenizer"], run_info["cfg"], run_info["ft"]
    data = load_instruction_data(run_info["data"])
    limit = run_info["limit"]
    if limit is not None:
        data = data[:limit]
    train_data, test_data, val_data = split_instruction_data(data)
    if min(len(train_data), len(test_data), len(val_data)) == 0:
        raise ValueError(f"--limit {limit} leaves an empty split ({len(train_data)}/{len(test_data)}/"
                         f"{len(val_data)} train/test/val); give --limit 20 or more")
    if run_info["resume_from"] is None:
        ft.update(trainable=None if ft["lora"] else "all", mask_instruction=bool(args.mask_instruction))
        apply_finetune_shape(model, ft, seed=cfg.seed)
    pad, ctx = int(ft["pad_token_id"]), model.cfg.context_length
    collate = partial(custom_collate_fn, pad_token_id=pad, allowed_max_length=ctx,
                      mask_instruction=bool(ft.get("mask_instruction")))
    masked = bool(ft.get("mask_instruction"))
    sets = {}
    for name, entries in (("train", train_data), ("val", val_data)):
        dataset = InstructionDataset(entries, tok, with_prompt_length=masked)
        if masked:
            # a prompt that fills the whole context leaves no response target: its loss would be 0/0
            keep = [e for e, n in zip(entries, dataset.prompt_lengths) if n - 1 < ctx]
            if len(keep) < len(entries):
                _say(f"note: {len(entries) - len(keep)} {name} entries have prompts of {ctx}+ tokens, so "
                     f"--mask-instruction leaves them nothing to learn; they are left out")
            if not keep:
                raise ValueError(f"every {name} prompt is longer than the context length {ctx}; drop "
                                 f"--mask-instruction or use a model with a longer context")
            dataset = InstructionDataset(keep, tok, with_prompt_length=True)
        sets[name] = CollatedDataset(dataset, collate)
    if len(sets["train"]) < cfg.batch_size:
        raise ValueError(f"the training split has {len(sets['train'])} entries, fewer than --batch-size "
                         f"{cfg.batch_size}; lower --batch-size or raise --limit")
    loader = DataLoader(sets["train"], batch_size=cfg.batch_size, shuffle=True, drop_last=True, seed=cfg.seed)
    fixed = {name: [ds.get_batch(np.arange(i, min(i + cfg.batch_size, len(ds))))
                    for i in range(0, min(len(ds), cfg.batch_size * cfg.eval_iters), cfg.batch_size)]
             for name, ds in sets.items()}

    def evaluate() -> dict:
        return {"train_loss": calc_loss_loader(fixed["train"], model),
                "val_loss": calc_loss_loader(fixed["val"], model)}

    ft["config"] = cfg.to_dict()
    state = {"model_config": model.cfg.to_dict(), "tokenizer": run_info["tok_spec"], "finetune": ft,
             "data": {"source": str(run_info["data"]), "limit": limit}}
    run = FinetuneRun(model, loader, lambda m, x, y: calc_loss_batch(x, y, m), evaluate, cfg,
                      out_dir=run_info["out"], state_extra=state, tokenizer=tok)
    _say(f"data: {run_info['data']}: {len(data)} entries -> {len(train_data)} train / {len(test_data)} test / "
         f"{len(val_data)} val; prompts cut to {ctx} tokens, padded with id {pad}"
         f"{', instruction masked' if masked else ''}; model: {_describe(model)}"
         + (f" (LoRA rank {ft['lora']['rank']}, alpha {ft['lora']['alpha']:g})" if ft["lora"] else "")
         + f"; backend {run.B.name} {run.B.dtype_name}")
    t0 = time.perf_counter()
    evals = _run(run, run_info["resume_from"])
    if run.stopped:
        return 130
    seconds = time.perf_counter() - t0
    out = run_info["out"]
    if ft["lora"]:
        merge_lora(model)
        save_checkpoint(out / MERGED_DIR, model, None, {"step": run.step, "model_config": model.cfg.to_dict(),
                                                        "tokenizer": run_info["tok_spec"]}, tok)
        _say(f"LoRA merged into the weights: {out / MERGED_DIR} is a plain GPT checkpoint")
    _plot(out)
    _say(f"done: step {run.step} in {seconds:.0f} s"
         + (f"; val loss {evals[0]['val_loss']:.3f} -> {evals[-1]['val_loss']:.3f}" if evals else ""))
    if args.max_new_tokens:
        t1 = time.perf_counter()
        responses = generate_responses(model, tok, test_data, max_new_tokens=args.max_new_tokens, eos_id=pad)
        path = write_responses(responses, Path(args.responses) if args.responses else out / RESPONSES_FILE)
        _say(f"wrote {len(responses)} test responses to {path} in {time.perf_counter() - t1:.0f} s; the first:")
        for entry in responses[:3]:
            _say(f"  instruction: {entry['instruction']!r}" + (f" input: {entry['input']!r}" if entry.get("input")
                                                                  else ""))
            _say(f"    expected: {entry['output']!r}\n    model:    {entry['model_response']!r}")
    _say(f"next: {_cli().PROG} chat --checkpoint {out / MERGED_DIR if ft['lora'] else out}")
    return 0


# ---- chat ---------------------------------------------------------------------------------------------------------

def add_chat_command(sub: argparse._SubParsersAction) -> None:
    cli = _cli()
    p = sub.add_parser("chat", help="ask an instruction-tuned model questions, one per line (book ch. 7 prompts; "
                                    "Llama 3 / Qwen3 chat formats)",
                       description="Reads questions from standard input, one per line, and streams the answers. A "
                                   "`finetune instruct` model gets the Alpaca template used in training, one question "
                                   "at a time; a Llama 3 or Qwen3 directory its own chat format (Llama 3's headers, "
                                   "ChatML) and the whole conversation. Ends on end of input or a line '/exit'.")
    p.add_argument("--checkpoint", metavar="DIR", required=True,
                   help="a `finetune instruct --out` directory, a checkpoint, or a Hugging Face GPT-2, Llama 3 or "
                        "Qwen3 directory (with its tokenizer.json)")
    p.add_argument("--max-new-tokens", type=cli._positive(int), default=128, metavar="N", help="default 128")
    p.add_argument("--temperature", type=cli._positive(float, allow_zero=True), default=0.0, metavar="T",
                   help="0: greedy (default)")
    p.add_argument("--top-k", type=cli._positive(int), default=None, metavar="K")
    p.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus sampling, 0 < P <= 1")
    cli.add_common_args(p)
    p.set_defaults(func=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    from gpt.chat_format import CHAT_STYLES

    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p {args.top_p} must be in (0, 1]")
    B = _cli().make_backend(args)
    model, tok, state = load_finetuned(args.checkpoint, B, merge=True)
    if (state.get("finetune") or {}).get("task") == "classify":
        raise ValueError(f"{args.checkpoint} is a classifier; chat needs a `finetune instruct` model")
    # a Llama 3 / Qwen3 directory speaks its own chat format and keeps the conversation; a book model, Alpaca's
    style = None if state.get("finetune") else CHAT_STYLES.get(getattr(model.cfg, "arch", "gpt2"))
    ask = _family_turn(model, tok, style, args) if style else _alpaca_turn(model, tok, args)
    interactive = sys.stdin.isatty()
    out = sys.stdout
    while True:
        if interactive:
            out.write("> ")
            out.flush()
        line = sys.stdin.readline()
        if not line:
            break
        question = line.strip()
        if question == "/exit":
            break
        if question:
            _cli().write_tokens(ask(question), tok, out)
    return 0


def _stream(model: Any, ids: list[int], args: argparse.Namespace, eos: int | None) -> Any:
    """generate_stream over the last tokens of `ids` that fit, with a cache no longer than this answer needs."""
    from gpt.generate import generate_stream

    ctx = model.cfg.context_length
    prompt = np.asarray([ids], dtype=np.int64)[:, -(ctx - 1):]
    window = min(ctx, prompt.shape[1] + args.max_new_tokens)
    return generate_stream(model, prompt, args.max_new_tokens, window, temperature=args.temperature,
                           top_k=args.top_k, top_p=args.top_p, eos_id=eos, seed=args.seed)


def _alpaca_turn(model: Any, tok: Any, args: argparse.Namespace) -> Callable[[str], Any]:
    """One question, one answer, in the book's ch. 7 Alpaca template (no history)."""
    from gpt.classify import end_of_text_id
    from gpt.instruct import format_chat_prompt

    eos = end_of_text_id(tok)
    return lambda question: _stream(model, tok.encode(format_chat_prompt(question)), args, eos)


def _family_turn(model: Any, tok: Any, style: str, args: argparse.Namespace) -> Callable[[str], Any]:
    """A conversation in the family's chat format: each answer ends at an end-of-turn token and joins the history."""
    from gpt.chat_format import chat_prompt_ids, stop_ids

    history: list[dict[str, str]] = []
    stops = set(stop_ids(tok, style))

    def ask(question: str) -> Any:
        history.append({"role": "user", "content": question})
        answer: list[int] = []
        for token in _stream(model, chat_prompt_ids(tok, history, style), args, None):
            if token in stops:
                break
            answer.append(token)
            yield token
        history.append({"role": "assistant", "content": tok.decode(answer)})

    return ask


# ---- registration ---------------------------------------------------------------------------------------------

def add_finetune_commands(sub: argparse._SubParsersAction) -> None:
    """Register `finetune classify`, `finetune instruct` and `chat` on the `tinygpt` subparsers."""
    p = sub.add_parser("finetune", help="fine-tune a pretrained GPT: classify (book ch. 6), instruct (ch. 7)",
                       description="Fine-tune a pretrained GPT (a `tinygpt train` run or a Hugging Face GPT-2 "
                                   "directory) as a spam classifier or an instruction follower, optionally with "
                                   "LoRA (--lora-rank).")
    tasks = p.add_subparsers(dest="task", required=True, metavar="TASK")
    add_classify_command(tasks)
    add_instruct_command(tasks)
    add_chat_command(sub)


__all__ = ["FinetuneConfig", "FinetuneRun", "apply_finetune_shape", "load_finetuned", "add_finetune_commands",
           "cmd_finetune_classify", "cmd_finetune_instruct", "cmd_chat"]
