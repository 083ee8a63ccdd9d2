"""The full pretraining loop: AdamW with decay groups, warmup + cosine, clipping, accumulation, checkpoints, resume.

Follows the book's appendix D ("Adding bells and whistles to the training loop": linear warmup, cosine decay,
gradient clipping) on top of chapter 5's loop, with nanoGPT's weight-decay rule (every tensor with ndim >= 2,
i.e. the matmul weights and the embeddings, decays; biases and LayerNorm scale/shift do not). It speaks only to
the backend interface (`model.B`), so one loop trains numpy, cupy and torch models.

Exact resume. Everything random is a function of (seed, step) or (seed, epoch), never of hidden state: the data
order of epoch e is `np.random.default_rng([seed, e])` (gpt.data.DataLoader), and before optimizer step s the engine
is reseeded with `B.manual_seed(derive_seed(seed, s))`, which fixes every dropout mask of that step. A checkpoint
therefore needs only the weights, the optimizer state, the step and the loader position; a run stopped at step k
and resumed reproduces the uninterrupted run bit for bit on numpy. Evaluation and samples run without dropout and
draw from their own seeded generators, so they never disturb the training stream.

Library code does not print: progress goes to a tqdm bar only when one is passed (or `progress=True`), evaluations
and checkpoints to the `on_event` callback and to `DIR/metrics.jsonl`.

Full scale (torch backend, each opt-in; issue 7): `compile` runs `torch.compile` on `B.module(model)`; `autocast`
runs forward and loss in bfloat16 (float32 master weights) or float16 with a loss scaler (`B.grad_scaler`, PyTorch's
"Automatic Mixed Precision" recipe); `tf32`, `fused_adamw`. Data parallelism comes in as a `gpt.distributed` object
(DDP under torchrun): each rank trains on its block of the windows, gradients are all-reduced on the last
micro-step only, and only rank 0 evaluates, logs, samples and checkpoints. Every step logs tokens/s (all ranks)
and MFU (gpt/flops.py: 6N + 12·L·H·Q·T FLOPs per token over the device's peak; None when the peak is unknown).
A backend that lacks an option says so through `on_event({"event": "note", ...})` and runs without it.
"""
from __future__ import annotations

import dataclasses
import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gpt import flops
from gpt.checkpoint import CheckpointManager, read_checkpoint, restore_training
from gpt.data import DataLoader, GPTDatasetV1
from gpt.distributed import SingleProcess
from gpt.pretrain import calc_loss_batch, calc_loss_loader, generate_and_print_sample, plot_losses
from gpt.schedule import lr_at

# The model `tinygpt train` builds when given no sizes: ~2.2 M parameters, chosen so that the default run
# (numpy backend, 2 CPU cores) takes about five minutes; see TrainConfig for the schedule.
DEFAULT_MODEL_CONFIG = {
    "vocab_size": 1024,      # BPE vocabulary trained on the corpus (replaced by the tokenizer's actual size)
    "context_length": 128,   # tokens per training window: a paragraph of the pydoc text
    "emb_dim": 192,          # residual width: 4 heads of 48
    "n_heads": 4,            # attention heads
    "n_layers": 4,           # transformer blocks
    "drop_rate": 0.1,        # the corpus is small (~140 k tokens) and seen many times: dropout limits overfitting
    "qkv_bias": False,       # the book's default for training from scratch
}

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


class TrainingDiverged(RuntimeError):
    """The loss (or the gradient norm) became NaN or infinite; training stopped before applying that step."""

    def __init__(self, step: int, loss: float, checkpoint: Path | None):
        self.step, self.loss, self.checkpoint = step, loss, checkpoint
        last = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was written yet"
        super().__init__(f"training diverged at step {step}: the loss is {loss}; {last}. Lower --lr, raise "
                         f"--warmup-steps or set --grad-clip, then --resume or start again")


@dataclass
class TrainConfig:
    """Settings of a training run; the defaults are those of `tinygpt train` on the embedded corpus."""

    max_steps: int = 350            # optimizer steps; the cosine reaches min_lr here (~0.7 M tokens, ~5 epochs)
    batch_size: int = 16            # windows per micro-batch
    grad_accum: int = 1             # micro-batches per optimizer step (effective batch = batch_size * grad_accum)
    lr: float = 2e-3                # peak learning rate (small models tolerate nanoGPT's 1e-3..2e-3)
    min_lr: float = 2e-4            # floor of the cosine, lr / 10 as in the Chinchilla and nanoGPT recipes
    warmup_steps: int = 40          # linear warmup from min_lr, so Adam's early noisy moments take small steps
    weight_decay: float = 0.1       # AdamW decay on ndim >= 2 tensors (GPT-3 / nanoGPT value)
    beta1: float = 0.9              # Adam's first-moment decay
    beta2: float = 0.99             # second-moment decay: 0.99 rather than 0.999 suits small batches (nanoGPT)
    eps: float = 1e-8               # Adam's denominator guard
    grad_clip: float = 1.0          # max global gradient L2 norm (0 disables clipping), as in the book's appendix D
    eval_interval: int = 50         # evaluate, sample and checkpoint every this many steps (and at the end)
    eval_iters: int = 5             # batches averaged for each of the train and validation losses
    val_fraction: float = 0.1       # the last 10% of the tokens are held out for validation (the book's split)
    seed: int = 123                 # seeds the data order, the dropout masks (per step) and the samples
    keep_last: int = 2              # step checkpoints kept on disk (best/ is kept besides these)
    sample_prompt: str = "The for statement"  # prompt of the sample generated at each evaluation
    sample_tokens: int = 40         # tokens generated for each sample
    sample_temperature: float = 0.8  # sampling temperature for the samples (0: greedy)
    sample_top_k: int | None = 40   # top-k filter for the samples (None: no filter)
    plot: bool = True               # write DIR/loss.png at the end
    compile: bool = False           # torch.compile the model (torch backend; falls back to eager with a note)
    autocast: str | None = None     # "bfloat16" or "float16" mixed precision for forward + loss (torch backend)
    tf32: bool = False              # TF32 tensor cores for float32 matmuls (torch on CUDA)
    fused_adamw: bool = False       # torch's fused AdamW kernel (torch backend)
    peak_flops: float | None = None  # device peak FLOP/s for MFU (None: from gpt.flops.PEAK_FLOPS, n/a on CPU)

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first setting out of range (with its command-line flag) and the fix."""
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} {getattr(self, name)!r} is invalid: it must be {rule}")
        for name in ("max_steps", "batch_size", "grad_accum", "eval_interval", "eval_iters", "keep_last"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name, "an integer >= 1")
        need(self.lr > 0 and math.isfinite(self.lr), "lr", "a positive number such as 1e-3")
        need(0 <= self.min_lr <= self.lr, "min_lr", f"between 0 and --lr ({self.lr})")
        need(self.warmup_steps >= 0, "warmup_steps", ">= 0")
        need(self.weight_decay >= 0, "weight_decay", ">= 0")
        need(0 <= self.beta1 < 1, "beta1", "in [0, 1)")
        need(0 <= self.beta2 < 1, "beta2", "in [0, 1), e.g. 0.95 or 0.99")
        need(self.grad_clip >= 0, "grad_clip", ">= 0 (0 disables clipping)")
        need(0 < self.val_fraction < 1, "val_fraction", "between 0 and 1")
        need(isinstance(self.seed, int) and self.seed >= 0, "seed", "an integer >= 0")
        need(self.sample_tokens >= 0, "sample_tokens", ">= 0")
        need(self.autocast in (None, "bfloat16", "float16"), "autocast", "bfloat16 or float16")
        need(self.peak_flops is None or self.peak_flops > 0, "peak_flops", "a positive FLOP/s such as 989e12")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """A config from to_dict()'s output; unknown keys (from a newer version) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def derive_seed(seed: int, step: int) -> int:
    """The engine seed used for optimizer step `step`: a hash of (seed, step), so any step can be replayed."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint32)[0])


def param_groups(model: Any, weight_decay: float) -> list[dict]:
    """AdamW groups: decay for tensors with ndim >= 2 (matmul weights, embeddings), none for biases and norms."""
    params = [(n, p) for n, p in model.named_parameters() if getattr(p, "requires_grad", True)]
    decay = [p for _, p in params if len(p.shape) >= 2]
    no_decay = [p for _, p in params if len(p.shape) < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def accumulate_grads(model: Any, micro_batches: list[tuple[Any, Any]]) -> float:
    """Backpropagate the mean loss of the micro-batches (each loss scaled by 1/n) into .grad; return that mean.

    Equal-sized micro-batches give the gradient of one batch holding all of them. The caller zeroes the gradients.
    `model` is a GPTModel or a Trainer's StepRunner, which adds the autocast dtype, the loss scaler and the
    per-micro-step gradient-sync context (DDP all-reduces on the last micro-step only).
    """
    n, total = len(micro_batches), None
    for i, (inputs, targets) in enumerate(micro_batches):
        with model.micro_step(i == n - 1) if hasattr(model, "micro_step") else contextlib.nullcontext():
            # autocast covers forward and loss only; backward runs outside it (PyTorch AMP recipe)
            with model.B.autocast(getattr(model, "autocast", None)):
                loss = calc_loss_batch(inputs, targets, model)
            scaled = loss * (1.0 / n)
            (model.scaler.scale(scaled) if hasattr(model, "scaler") else scaled).backward()
        value = loss.detach().double()   # summed on the device in float64 (as Python floats were): one read below
        total = value if total is None else total + value
    return float(total.item()) / n


class StepRunner:
    """The model as the training step sees it: calls go through `net` (compiled and/or DDP-wrapped
    B.module(model), or the model itself), with the run's autocast dtype, loss scaler and gradient-sync rule."""

    def __init__(self, model: Any, net: Any, dist: Any, autocast: str | None, scaler: Any):
        self.model, self.B, self.cfg = model, model.B, model.cfg
        self.net, self.dist, self.autocast, self.scaler = net, dist, autocast, scaler

    def __call__(self, idx: Any) -> Any:
        return self.net(idx)

    def micro_step(self, last: bool) -> contextlib.AbstractContextManager:
        """The context of one micro-step: DDP skips the gradient all-reduce unless `last`."""
        return self.dist.sync(self.net, last)


def fixed_batches(dataset: Any, batch_size: int, n_batches: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first `n_batches` batches of a dataset in order (the last may be short): a fixed evaluation set."""
    n = len(dataset)
    stop = min(n, batch_size * n_batches)
    return [dataset.get_batch(np.arange(i, min(i + batch_size, stop))) for i in range(0, stop, batch_size)]


def _dataset(ids: Any, context_length: int, what: str) -> Any:
    # a dataset object (gpt.prepare.ShardDataset: windows over memory-mapped shards) is used as it is; an id array
    # becomes the book's non-overlapping windows, copied into RAM as int64 (fine for up to a few hundred million
    # tokens; larger corpora belong in shards from `tinygpt prepare`)
    if hasattr(ids, "get_batch"):
        return ids
    try:
        return GPTDatasetV1(np.asarray(ids, dtype=np.int64), None, context_length, context_length)
    except ValueError as e:
        raise ValueError(f"the {what}: {e}; or lower --context-length") from None


@dataclass
class TrainResult:
    """What a run did: its last step, tokens seen, the evaluation history and the last checkpoint."""

    step: int
    tokens_seen: int
    evals: list[dict] = field(default_factory=list)   # the metrics records of each evaluation
    checkpoint: Path | None = None
    seconds: float = 0.0
    stopped: bool = False                              # ended early by request_stop() (checkpointed there)


class Trainer:
    """Trains a GPTModel on token ids with TrainConfig's recipe; `run()` trains, `resume()` restores a checkpoint.

    out_dir holds metrics.jsonl, loss.png and the checkpoints (none of these are written when it is None).
    `on_event(record)` receives each evaluation record (with the sample), each checkpoint event and each note.
    train_ids/val_ids: id arrays, or datasets with get_batch (gpt.prepare.ShardDataset). `distributed`: a
    gpt.distributed object (default SingleProcess); only its rank 0 evaluates, logs and writes files.
    """

    def __init__(self, model: Any, train_ids: Any, val_ids: Any, config: TrainConfig | None = None,
                 out_dir: str | Path | None = None, tokenizer: Any = None, tokenizer_spec: dict | None = None,
                 data_source: str | None = None, on_event: Callable[[dict], None] | None = None,
                 distributed: Any = None):
        self.cfg = (config or TrainConfig()).validate()
        self.model, self.B = model, model.B
        self.dist = distributed or SingleProcess()
        self.is_main = self.dist.rank == 0
        self.notes: list[str] = []
        self.stop_requested = False
        self.tokenizer, self.tokenizer_spec = tokenizer, tokenizer_spec
        self.data_source = data_source
        self.on_event = on_event
        self.out_dir = Path(out_dir) if out_dir is not None else None
        ctx = model.cfg.context_length
        train_set = self.dist.shard(_dataset(train_ids, ctx, "training split"))
        val_set = _dataset(val_ids, ctx, f"validation split (the last {self.cfg.val_fraction:.0%} of the tokens)")
        if len(train_set) < self.cfg.batch_size:
            raise ValueError(f"the training split has {len(train_set)} windows of {ctx} tokens, fewer than "
                             f"--batch-size {self.cfg.batch_size}; lower --batch-size or --context-length, or "
                             f"give more data")
        self.loader = DataLoader(train_set, batch_size=self.cfg.batch_size, shuffle=True, drop_last=True,
                                 seed=self.cfg.seed)
        self.train_eval = fixed_batches(train_set, self.cfg.batch_size, self.cfg.eval_iters)
        self.val_eval = fixed_batches(val_set, self.cfg.batch_size, self.cfg.eval_iters)
        self.n_train_tokens = (getattr(train_set, "n_tokens", None) or len(train_set.token_ids)) * self.dist.world_size
        self.tokens_per_step = self.cfg.batch_size * self.cfg.grad_accum * ctx * self.dist.world_size
        self.optimizer = self.B.AdamW(param_groups(model, self.cfg.weight_decay), lr=self.cfg.lr,
                                      betas=(self.cfg.beta1, self.cfg.beta2), eps=self.cfg.eps,
                                      weight_decay=self.cfg.weight_decay, fused=self.cfg.fused_adamw)
        self.runner = self._build_runner()
        self.flops_per_token = flops.flops_per_token(model.cfg)
        self.peak_flops, peak_note = flops.resolve_peak(self.B, self.cfg.autocast or self.B.dtype_name,
                                                        self.cfg.tf32, self.cfg.peak_flops)
        self.notes.append(f"MFU: {flops.flops_per_token(model.cfg):.3g} FLOPs/token (6N + 12·L·H·Q·T); {peak_note}")
        self.step = 0
        self.checkpoints = (CheckpointManager(self.out_dir, self.cfg.keep_last)
                            if self.out_dir is not None and self.is_main else None)

    def _build_runner(self) -> StepRunner:
        """The training forward path: B.module(model), compiled, DDP-wrapped, each only where asked for."""
        c, B = self.cfg, self.B
        if c.tf32:
            self._note(B.allow_tf32(True))
        net = self.model
        if c.compile or self.dist.world_size > 1:
            net = B.module(self.model)   # DESIGN.md §4.5: built last, after weights are loaded
        if c.compile:
            net, note = B.compile(net)
            self._note(note)
        net = self.dist.wrap(net)
        return StepRunner(self.model, net, self.dist, c.autocast, B.grad_scaler(c.autocast == "float16"))

    def _note(self, message: str | None) -> None:
        if message:
            self.notes.append(message)

    # ---- pieces ----
    def lr(self, step: int) -> float:
        """The learning rate of optimizer step `step` (0-based)."""
        c = self.cfg
        return lr_at(step, c.lr, c.min_lr, c.warmup_steps, c.max_steps)

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """The next training batch, moving to the next (reshuffled) epoch at the end of one."""
        return self.loader.next_batch()

    def evaluate(self) -> tuple[float, float]:
        """Mean loss on the fixed train and validation evaluation batches, in eval mode without a graph."""
        self.model.eval()
        try:
            with self.B.no_grad():
                return (calc_loss_loader(self.train_eval, self.model),
                        calc_loss_loader(self.val_eval, self.model))
        finally:
            self.model.train()

    def sample(self) -> str:
        """A continuation of cfg.sample_prompt, drawn with a fixed seed so samples compare across evaluations."""
        c = self.cfg
        if self.tokenizer is None or c.sample_tokens == 0:
            return ""
        return generate_and_print_sample(self.model, self.tokenizer, None, c.sample_prompt, c.sample_tokens,
                                         temperature=c.sample_temperature, top_k=c.sample_top_k, seed=c.seed)

    def train_step(self) -> float:
        """One optimizer step (with accumulation and clipping); returns its loss. TrainingDiverged on NaN/inf."""
        return self.step_on([self.next_batch() for _ in range(self.cfg.grad_accum)])

    def step_on(self, micro_batches: list[tuple[Any, Any]]) -> float:
        """One optimizer step on the given micro-batches; returns the loss averaged over them and over ranks."""
        c, step = self.cfg, self.step
        lr = self.lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.B.manual_seed(derive_seed(c.seed, step))   # fixes this step's dropout masks (exact resume)
        self.optimizer.zero_grad()
        loss = self.dist.mean(accumulate_grads(self.runner, micro_batches))
        if not math.isfinite(loss):
            raise TrainingDiverged(step + 1, loss, self.last_checkpoint())
        scaler = self.runner.scaler
        if c.grad_clip > 0:
            scaler.unscale_(self.optimizer)   # clip the true gradients, not the loss-scaled ones
            norm = self.B.clip_grad_norm(self.model.parameters(), c.grad_clip)
            # with a float16 scaler an inf norm means "overflow: skip this step and lower the scale", not divergence
            if not math.isfinite(norm) and not scaler.is_enabled():
                raise TrainingDiverged(step + 1, f"{loss} (gradient norm {norm})", self.last_checkpoint())
        scaler.step(self.optimizer)
        scaler.update()
        self.step += 1
        return loss

    # ---- checkpoints ----
    def last_checkpoint(self) -> Path | None:
        return self.checkpoints.latest() if self.checkpoints else None

    def state(self, val_loss: float | None = None, train_loss: float | None = None) -> dict:
        """What state.json records besides the weights and optimizer arrays."""
        return {
            "step": self.step,
            "tokens_seen": self.step * self.tokens_per_step,
            "model_config": self.model.cfg.to_dict(),
            "train_config": self.cfg.to_dict(),
            "tokenizer": self.tokenizer_spec,
            "data": {"source": self.data_source, "loader": self.loader.state_dict()},
            "rng": {"scheme": "B.manual_seed(derive_seed(seed, step)) before each step; data order from "
                              "default_rng([seed, epoch])", "seed": self.cfg.seed},
            "backend": {"name": self.B.name, "dtype": self.B.dtype_name},
            "train_loss": train_loss,
            "val_loss": val_loss,
        }

    def save(self, val_loss: float | None = None, train_loss: float | None = None) -> Path | None:
        """Checkpoint the current step into out_dir (atomically); None when there is no out_dir."""
        if self.checkpoints is None:
            return None
        path = self.checkpoints.save(self.step, self.model, self.optimizer, self.state(val_loss, train_loss),
                                     self.tokenizer, val_loss=val_loss)
        self._emit({"event": "checkpoint", "step": self.step, "path": str(path)})
        return path

    def resume(self, path: str | Path | None = None) -> int:
        """Restore weights, optimizer state, step and data position from a checkpoint (default: out_dir's latest)."""
        ckpt = read_checkpoint(path if path is not None else self.out_dir)
        self.step = restore_training(ckpt, self.model, self.optimizer, self.loader)
        if self.out_dir is not None and self.is_main:
            truncate_metrics(self.out_dir / METRICS_FILE, self.step)
        return self.step

    def request_stop(self) -> None:
        """Ask run() to finish the step in progress, checkpoint it and return (a graceful Ctrl-C). Single process
        only: the ranks of a DDP run would stop at different steps and wait for each other forever."""
        if self.dist.world_size > 1:
            raise RuntimeError("request_stop() cannot stop the ranks of a DDP run together; interrupt torchrun")
        self.stop_requested = True

    # ---- the loop ----
    def _emit(self, record: dict) -> None:
        if self.on_event is not None and self.is_main:
            self.on_event(record)

    def _log(self, record: dict) -> None:
        if self.out_dir is not None and self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / METRICS_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _eval_record(self, tokens_per_s: float) -> dict:
        train_loss, val_loss = self.evaluate()
        return {"step": self.step, "train_loss": train_loss, "val_loss": val_loss,
                "lr": self.lr(self.step), "tokens_seen": self.step * self.tokens_per_step,
                "tokens_per_s": tokens_per_s, "mfu": self.mfu(tokens_per_s),
                "epoch": self.step * self.tokens_per_step / self.n_train_tokens, "sample": self.sample()}

    def mfu(self, tokens_per_s: float) -> float | None:
        """Model FLOPs utilisation of all ranks at `tokens_per_s` (gpt/flops.py), None without a known peak."""
        return flops.mfu(tokens_per_s, self.flops_per_token, self.peak_flops, self.dist.world_size)

    def run(self, progress: Any = False, stop_at: int | None = None) -> TrainResult:
        """Train from self.step to cfg.max_steps (or stop after step `stop_at`, checkpointing it).

        progress: False, True (a tqdm bar made here) or a tqdm-like bar to update.
        """
        c = self.cfg
        end = c.max_steps if stop_at is None else min(stop_at, c.max_steps)
        bar = _make_bar(progress, c.max_steps, self.step) if self.is_main else None
        result = TrainResult(self.step, self.step * self.tokens_per_step)
        start, tokens_per_s = time.perf_counter(), 0.0
        for note in self.notes:
            self._emit({"event": "note", "message": note})
        try:
            if self.step == 0 and self.is_main:
                record = self._eval_record(0.0)
                self._log(record)
                result.evals.append(record)
                self._emit({"event": "eval", **record})
            while self.step < end:
                t0 = time.perf_counter()
                loss = self.train_step()
                self.B.synchronize()
                tokens_per_s = self.tokens_per_step / max(time.perf_counter() - t0, 1e-9)
                lr = self.lr(self.step - 1)
                self._log({"step": self.step, "train_loss": loss, "lr": lr,
                           "tokens_seen": self.step * self.tokens_per_step, "tokens_per_s": tokens_per_s,
                           "mfu": self.mfu(tokens_per_s)})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}")
                if not self.is_main:
                    continue
                if self.step % c.eval_interval == 0 or self.step == c.max_steps:
                    record = self._eval_record(tokens_per_s)
                    self._log(record)
                    result.evals.append(record)
                    self._emit({"event": "eval", **record})
                    result.checkpoint = self.save(record["val_loss"], record["train_loss"])
                elif self.step == end or self.stop_requested:
                    result.checkpoint = self.save()
                if self.stop_requested:   # only between steps: weights and optimizer state are consistent here
                    result.stopped = True
                    break
        finally:
            if bar is not None and bar is not progress:
                bar.close()
        result.step, result.tokens_seen = self.step, self.step * self.tokens_per_step
        result.seconds = time.perf_counter() - start
        if self.out_dir is not None and self.is_main and c.plot and self.step == c.max_steps:
            try:
                self.plot()
            except ImportError as e:   # a finished run must not fail for want of matplotlib
                self._emit({"event": "warning", "message": f"no loss plot: {e}"})
        return result

    def plot(self) -> Path | None:
        """Plot the evaluations in metrics.jsonl to out_dir/loss.png."""
        evals = read_metrics(self.out_dir / METRICS_FILE, evals_only=True)
        if not evals:
            return None
        return plot_losses([r["epoch"] for r in evals], [r["tokens_seen"] for r in evals],
                           [r["train_loss"] for r in evals], [r["val_loss"] for r in evals],
                           path=self.out_dir / PLOT_FILE)


def _make_bar(progress: Any, total: int, initial: int) -> Any:
    if progress is True:
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)
    return progress or None


def read_metrics(path: str | Path, evals_only: bool = False) -> list[dict]:
    """The records of a metrics.jsonl (only the evaluation records, those with val_loss, if evals_only)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in records if "val_loss" in r] if evals_only else records


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the records after `step` (written by a run that went past its last checkpoint) before resuming."""
    if path.is_file():
        kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
