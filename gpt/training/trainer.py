"""The one training loop: AdamW with decay groups, warmup + cosine, clipping, accumulation, checkpoints, resume.

Every task trains here; what varies (batches, loss, evaluation) is an Objective (gpt/training/objectives.py).
Follows the book's appendix D ("Adding bells and whistles to the training loop": linear warmup, cosine decay,
gradient clipping) on top of chapter 5's loop, with nanoGPT's weight-decay rule (every tensor with ndim >= 2,
i.e. the matmul weights and the embeddings, decays; biases and norm scale/shift do not). It speaks only to the
backend interface (`model.B`), so one loop trains numpy, cupy and torch models.

Exact resume. Everything random is a function of (seed, step) or (seed, epoch), never of hidden state: the data
order of epoch e is `np.random.default_rng([seed, e])` (gpt.data.DataLoader), and before optimizer step s the engine
is reseeded with `B.manual_seed(derive_seed(seed, s))`, which fixes every dropout mask of that step. A checkpoint
therefore needs only the weights, the optimizer state, the step, the counters and the loader position; a run
stopped at step k and resumed reproduces the uninterrupted run bit for bit on numpy. Evaluations run without
dropout and draw from their own seeded generators, so they never disturb the training stream.

Library code does not print: progress goes to a tqdm-like bar only when one is passed, evaluations, checkpoints and
notes to the `on_event` callback and to `DIR/metrics.jsonl`.

Full scale (torch backend, each opt-in): `compile` runs `torch.compile` on `B.module(model)`; `autocast` runs
forward and loss in bfloat16 (float32 master weights) or float16 with a loss scaler (`B.grad_scaler`, PyTorch's
"Automatic Mixed Precision" recipe); `tf32`, `fused_adamw`. Data parallelism comes in as a
gpt.training.distributed object (DDP under torchrun): each rank trains on its block of the examples, gradients
are all-reduced on the last micro-step only, and only rank 0 evaluates, logs and checkpoints. Every step logs
tokens/s and MFU (gpt/training/flops.py; None when the device's peak is unknown, as on a CPU).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gpt.pretrain import calc_loss_batch
from gpt.schedule import lr_at
from gpt.training import flops
from gpt.training.checkpoint import CheckpointManager, read_checkpoint, restore_training
from gpt.training.config import TrainConfig
from gpt.training.distributed import SingleProcess
from gpt.training.metrics import METRICS_FILE, append_record, plot_run, truncate_metrics
from gpt.training.objectives import Objective


class TrainingDiverged(RuntimeError):
    """The loss (or the gradient norm) became NaN or infinite; training stopped before applying that step."""

    def __init__(self, step: int, loss: Any, checkpoint: Path | None):
        self.step, self.loss, self.checkpoint = step, loss, checkpoint
        last = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was written yet"
        super().__init__(f"training diverged at step {step}: the loss is {loss}; {last}. Lower --lr, raise "
                         f"--warmup-steps or set --grad-clip, then --resume or start again")


def derive_seed(seed: int, step: int) -> int:
    """The engine seed used for optimizer step `step`: a hash of (seed, step), so any step can be replayed."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint32)[0])


def param_groups(model: Any, weight_decay: float) -> list[dict]:
    """AdamW groups over the trainable parameters: decay for ndim >= 2 (matmul weights, embeddings), none for
    biases and norms."""
    params = [p for _, p in model.named_parameters() if getattr(p, "requires_grad", True)]
    decay = [p for p in params if len(p.shape) >= 2]
    no_decay = [p for p in params if len(p.shape) < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class StepRunner:
    """The model as the training step sees it: calls go through `net` (compiled and/or DDP-wrapped
    B.module(model), or the model itself), with the run's autocast dtype, loss scaler and gradient-sync rule."""

    def __init__(self, model: Any, net: Any, dist: Any, autocast: str | None, scaler: Any):
        self.model, self.B, self.cfg = model, model.B, model.cfg
        self.net, self.dist, self.autocast, self.scaler = net, dist, autocast, scaler

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.net(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # objectives may read the model's own attributes (out_head, trf_blocks, ...): they are the model's
        return getattr(self.model, name)

    def micro_step(self, last: bool) -> contextlib.AbstractContextManager:
        """The context of one micro-step: DDP skips the gradient all-reduce unless `last`."""
        return self.dist.sync(self.net, last)


def accumulate_grads(model: Any, micro_batches: list[Any], objective: Objective | None = None) -> float:
    """Backpropagate the mean loss of the micro-batches (each loss scaled by 1/n) into .grad; return that mean.

    Equal-sized micro-batches give the gradient of one batch holding all of them. The caller zeroes the gradients.
    `model` is a model or the Trainer's StepRunner (which adds the autocast dtype, the loss scaler and DDP's
    sync-on-the-last-micro-step rule); `objective` defaults to next-token prediction on (inputs, targets).
    """
    loss_of = objective.loss if objective is not None else (lambda m, b: calc_loss_batch(b[0], b[1], m))
    n, total = len(micro_batches), None
    for i, batch in enumerate(micro_batches):
        with model.micro_step(i == n - 1) if hasattr(model, "micro_step") else contextlib.nullcontext():
            # autocast covers forward and loss only; backward runs outside it (PyTorch AMP recipe)
            with model.B.autocast(getattr(model, "autocast", None)):
                loss = loss_of(model, batch)
            scaled = loss * (1.0 / n)
            (model.scaler.scale(scaled) if hasattr(model, "scaler") else scaled).backward()
        value = loss.detach().double()   # summed on the device in float64 (as Python floats were): one read below
        total = value if total is None else total + value
    return float(total.item()) / n


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
    """Trains `model` on `objective` with TrainConfig's recipe; `run()` trains, `resume()` restores a checkpoint.

    out_dir holds metrics.jsonl, loss.png and the checkpoints (none of these are written when it is None).
    `on_event(record)` receives each evaluation record, each checkpoint event and each note. `state_extra` (plus
    tokenizer_spec and data_source, the pretraining CLI's two) is merged into every checkpoint's state.json.
    `distributed`: a gpt.training.distributed object (default SingleProcess); only its rank 0 evaluates, logs and
    writes files.
    """

    def __init__(self, model: Any, objective: Objective, config: TrainConfig | None = None,
                 out_dir: str | Path | None = None, tokenizer: Any = None, tokenizer_spec: dict | None = None,
                 data_source: str | None = None, state_extra: dict | None = None,
                 on_event: Callable[[dict], None] | None = None, distributed: Any = None):
        self.cfg = (config or TrainConfig()).validate()
        self.model, self.B, self.objective = model, model.B, objective
        self.dist = distributed or SingleProcess()
        self.is_main = self.dist.rank == 0
        self.notes: list[str] = []
        self.stop_requested = False
        self.tokenizer, self.on_event = tokenizer, on_event
        self.state_extra = {"tokenizer": tokenizer_spec, **(state_extra or {})}
        if data_source is not None:
            self.state_extra["data"] = {"source": data_source, **self.state_extra.get("data", {})}
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.loader = objective.setup(self.cfg, self.dist.shard)
        self.n_train = len(objective.train_set)
        self.total_steps = self.cfg.total_steps(len(self.loader))
        groups = param_groups(model, self.cfg.weight_decay)
        if not groups:
            raise ValueError("no trainable parameters: unfreeze some (--trainable) or add LoRA (--lora-rank)")
        self.optimizer = self.B.AdamW(groups, lr=self.cfg.lr, betas=(self.cfg.beta1, self.cfg.beta2),
                                      eps=self.cfg.eps, weight_decay=self.cfg.weight_decay,
                                      fused=self.cfg.fused_adamw)
        # walked once: the model's parameter set is fixed from here on (the optimizer holds it); which of them
        # train is read at each step, so freezing or unfreezing still counts (the walk cost ~0.5 ms per step)
        self._params = list(model.parameters())
        self.runner = self._build_runner()
        self.flops_per_token = flops.flops_per_token(model.cfg)
        self.peak_flops, peak_note = flops.resolve_peak(self.B, self.cfg.autocast or self.B.dtype_name,
                                                        self.cfg.tf32, self.cfg.peak_flops)
        if self.peak_flops is not None:   # on a CPU MFU means nothing: say nothing
            self.notes.append(f"MFU: {self.flops_per_token:.3g} FLOPs/token (6N + 12·L·H·Q·T); {peak_note}")
        self.step, self.examples_seen, self.tokens_seen = 0, 0, 0
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

    # ---- one step ----
    def lr(self, step: int) -> float:
        """The learning rate of optimizer step `step` (0-based)."""
        c = self.cfg
        return lr_at(step, c.lr, c.floor_lr(), c.warmup_steps, self.total_steps)

    def next_batch(self) -> Any:
        """The next training batch, moving to the next (reshuffled) epoch at the end of one."""
        return self.loader.next_batch()

    def train_step(self) -> float:
        """One optimizer step (with accumulation and clipping); returns its loss. TrainingDiverged on NaN/inf."""
        return self.step_on([self.next_batch() for _ in range(self.cfg.grad_accum)])

    def step_on(self, micro_batches: list[Any]) -> float:
        """One optimizer step on the given micro-batches; returns the loss averaged over them and over ranks."""
        c, step = self.cfg, self.step
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(step)
        self.B.manual_seed(derive_seed(c.seed, step))   # fixes this step's dropout masks (exact resume)
        self.optimizer.zero_grad()
        loss = self.dist.mean(accumulate_grads(self.runner, micro_batches, self.objective))
        if not math.isfinite(loss):
            raise TrainingDiverged(step + 1, loss, self.last_checkpoint())
        scaler = self.runner.scaler
        if c.grad_clip > 0:
            scaler.unscale_(self.optimizer)   # clip the true gradients, not the loss-scaled ones
            trainable = [p for p in self._params if getattr(p, "requires_grad", True)]
            norm = self.B.clip_grad_norm(trainable, c.grad_clip)
            # with a float16 scaler an inf norm means "overflow: skip this step and lower the scale", not divergence
            if not math.isfinite(norm) and not scaler.is_enabled():
                raise TrainingDiverged(step + 1, f"{loss} (gradient norm {norm})", self.last_checkpoint())
        scaler.step(self.optimizer)
        scaler.update()
        for batch in micro_batches:
            examples, tokens = self.objective.count(batch)
            self.examples_seen += examples * self.dist.world_size
            self.tokens_seen += tokens * self.dist.world_size
        self.step += 1
        return loss

    def evaluate(self) -> dict[str, Any]:
        """The objective's metrics, in eval mode without a graph (the model's mode is restored)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with self.B.no_grad():
                return self.objective.evaluate(self.model)
        finally:
            self.model.train(was_training)

    # ---- checkpoints ----
    def last_checkpoint(self) -> Path | None:
        return self.checkpoints.latest() if self.checkpoints else None

    def state(self, record: dict | None = None) -> dict:
        """What state.json records besides the weights and optimizer arrays."""
        record = record or {}
        extra = self.state_extra
        return {**extra, **self.objective.state(), "task": self.objective.task, "step": self.step,
                "examples_seen": self.examples_seen, "tokens_seen": self.tokens_seen,
                "model_config": self.model.cfg.to_dict(), "train_config": self.cfg.to_dict(),
                "data": {**extra.get("data", {}), "loader": self.loader.state_dict()},
                "rng": {"scheme": "B.manual_seed(derive_seed(seed, step)) before each step; data order from "
                                  "default_rng([seed, epoch])", "seed": self.cfg.seed},
                "backend": {"name": self.B.name, "dtype": self.B.dtype_name},
                "train_loss": record.get("train_loss"), "val_loss": record.get("val_loss")}

    def save(self, record: dict | None = None) -> Path | None:
        """Checkpoint the current step into out_dir (atomically); None when there is no out_dir."""
        if self.checkpoints is None:
            return None
        val = (record or {}).get("val_loss")
        path = self.checkpoints.save(self.step, self.model, self.optimizer, self.state(record), self.tokenizer,
                                     val_loss=val if val is not None and math.isfinite(val) else None)
        self._emit({"event": "checkpoint", "step": self.step, "path": str(path)})
        return path

    def resume(self, path: str | Path | None = None) -> int:
        """Restore weights, optimizer state, step, counters and data position from a checkpoint (default: out_dir's
        latest)."""
        ckpt = read_checkpoint(path if path is not None else self.out_dir)
        self.step = restore_training(ckpt, self.model, self.optimizer, self.loader)
        self.examples_seen = int(ckpt.state.get("examples_seen", 0))
        self.tokens_seen = int(ckpt.state.get("tokens_seen", 0))
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
            append_record(self.out_dir, record)

    def _counters(self, tokens_per_s: float) -> dict:
        return {"lr": self.lr(max(self.step - 1, 0)), "examples_seen": self.examples_seen,
                "tokens_seen": self.tokens_seen, "tokens_per_s": tokens_per_s, "mfu": self.mfu(tokens_per_s)}

    def _evaluation(self, result: TrainResult, tokens_per_s: float) -> dict:
        record = {"step": self.step, **self.evaluate(), **self._counters(tokens_per_s),
                  "epoch": self.examples_seen / max(self.n_train, 1)}
        self._log(record)
        result.evals.append(record)
        self._emit({"event": "eval", **record})
        return record

    def mfu(self, tokens_per_s: float) -> float | None:
        """Model FLOPs utilisation of all ranks at `tokens_per_s` (gpt/training/flops.py), None without a peak."""
        return flops.mfu(tokens_per_s, self.flops_per_token, self.peak_flops, self.dist.world_size)

    def _timed_step(self) -> tuple[float, float]:
        t0, tokens0 = time.perf_counter(), self.tokens_seen
        loss = self.train_step()
        self.B.synchronize()
        return loss, (self.tokens_seen - tokens0) / max(time.perf_counter() - t0, 1e-9)

    def run(self, progress: Any = None, stop_at: int | None = None) -> TrainResult:
        """Train from self.step to the run's last step (or stop after step `stop_at`, checkpointing it).

        progress: a tqdm-like bar to update (rank 0), or None.
        """
        end = self.total_steps if stop_at is None else min(stop_at, self.total_steps)
        bar = progress if self.is_main else None
        result, start, tokens_per_s = TrainResult(self.step, self.tokens_seen), time.perf_counter(), 0.0
        for note in self.notes:
            self._emit({"event": "note", "message": note})
        self.model.train()
        if self.step == 0 and self.is_main:
            self._evaluation(result, 0.0)
        while self.step < end:
            loss, tokens_per_s = self._timed_step()
            self._log({"step": self.step, "train_loss": loss, **self._counters(tokens_per_s)})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{self.lr(self.step - 1):.2e}", tok_s=f"{tokens_per_s:,.0f}")
            if not self.is_main:
                continue
            if self.step % self.cfg.eval_interval == 0 or self.step == self.total_steps:
                result.checkpoint = self.save(self._evaluation(result, tokens_per_s))
            elif self.step == end or self.stop_requested:
                result.checkpoint = self.save()
            if self.stop_requested:   # only between steps: weights and optimizer state are consistent here
                result.stopped = True
                break
        result.step, result.tokens_seen = self.step, self.tokens_seen
        result.seconds = time.perf_counter() - start
        if self.step == self.total_steps:
            self._finish()
        return result

    def _finish(self) -> None:
        if self.out_dir is None or not self.is_main or not self.cfg.plot:
            return
        try:
            plot_run(self.out_dir)
        except ImportError as e:   # a finished run must not fail for want of matplotlib
            self._emit({"event": "warning", "message": f"no loss plot: {e}"})

    def plot(self) -> Path | None:
        """Plot the evaluations in metrics.jsonl to out_dir/loss.png."""
        return plot_run(self.out_dir) if self.out_dir is not None else None


def pretrainer(model: Any, train_ids: Any, val_ids: Any, config: TrainConfig | None = None, tokenizer: Any = None,
               **kwargs: Any) -> Trainer:
    """A Trainer for next-token prediction on token ids (or shard datasets): the language-modelling objective over
    `model`'s context length, sampling with `tokenizer` at each evaluation."""
    from gpt.training.objectives import LanguageModeling

    objective = LanguageModeling(train_ids, val_ids, model.cfg.context_length, tokenizer=tokenizer)
    return Trainer(model, objective, config, tokenizer=tokenizer, **kwargs)


__all__ = ["Trainer", "pretrainer", "TrainResult", "TrainingDiverged", "StepRunner", "derive_seed", "param_groups",
           "accumulate_grads"]
