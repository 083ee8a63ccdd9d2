"""Settings of a training run (`TrainConfig`) and the model `tinygpt train` builds by default.

One config serves every objective: pretraining, classification, instructions and the later ones. Fine-tuning
differs only in its defaults (the book's chapter 6/7 recipe: a constant 5e-5, batch 8, counted in epochs), which
`gpt/training/finetune.py` writes down as two TrainConfig instances. Each field carries its command-line flag's
name (`max_steps` is `--max-steps`), so a validation error names the flag to change.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

# The model `tinygpt train` builds when given no sizes: ~2.2 M parameters, chosen so that the default run
# (numpy backend, 2 CPU cores) takes about two to five minutes; see TrainConfig for the schedule.
DEFAULT_MODEL_CONFIG = {
    "vocab_size": 1024,      # BPE vocabulary trained on the corpus (replaced by the tokenizer's actual size)
    "context_length": 128,   # tokens per training window: a paragraph of the pydoc text
    "emb_dim": 192,          # residual width: 4 heads of 48
    "n_heads": 4,            # attention heads
    "n_layers": 4,           # transformer blocks
    "drop_rate": 0.1,        # the corpus is small (~140 k tokens) and seen many times: dropout limits overfitting
    "qkv_bias": False,       # the book's default for training from scratch
}


@dataclass
class TrainConfig:
    """Settings of a training run; the defaults are those of `tinygpt train` on the embedded corpus."""

    max_steps: int | None = 350     # optimizer steps (None: `epochs` passes over the training batches)
    epochs: int | None = None       # passes over the training split when max_steps is None (fine-tuning)
    batch_size: int = 16            # examples (windows) per micro-batch
    grad_accum: int = 1             # micro-batches per optimizer step (effective batch = batch_size * grad_accum)
    lr: float = 2e-3                # peak learning rate (small models tolerate nanoGPT's 1e-3..2e-3)
    min_lr: float | None = 2e-4     # floor of the cosine, lr / 10 as in Chinchilla and nanoGPT; None: constant lr
    warmup_steps: int = 40          # linear warmup from min_lr, so Adam's early noisy moments take small steps
    weight_decay: float = 0.1       # AdamW decay on ndim >= 2 tensors (GPT-3 / nanoGPT value)
    beta1: float = 0.9              # Adam's first-moment decay
    beta2: float = 0.99             # second-moment decay: 0.99 rather than 0.999 suits small batches (nanoGPT)
    eps: float = 1e-8               # Adam's denominator guard
    grad_clip: float = 1.0          # max global gradient L2 norm (0 disables clipping), as in the book's appendix D
    eval_interval: int = 50         # evaluate, sample and checkpoint every this many steps (and at the end)
    eval_iters: int = 5             # batches averaged for each evaluation estimate
    val_fraction: float = 0.1       # pretraining: the last 10% of the tokens are held out (the book's split)
    seed: int = 123                 # seeds the data order, the dropout masks (per step) and the samples
    keep_last: int = 2              # step checkpoints kept on disk (best/ is kept besides these)
    sample_prompt: str = "The for statement"  # pretraining: prompt of the sample generated at each evaluation
    sample_tokens: int = 40         # tokens generated for each sample (0: no samples)
    sample_temperature: float = 0.8  # sampling temperature for the samples (0: greedy)
    sample_top_k: int | None = 40   # top-k filter for the samples (None: no filter)
    plot: bool = True               # write DIR/loss.png at the end
    compile: bool = False           # torch.compile the model (torch backend; falls back to eager with a note)
    autocast: str | None = None     # "bfloat16" or "float16" mixed precision for forward + loss (torch backend)
    tf32: bool = False              # TF32 tensor cores for float32 matmuls (torch on CUDA)
    fused_adamw: bool = False       # torch's fused AdamW kernel (torch backend)
    peak_flops: float | None = None  # device peak FLOP/s for MFU (None: from gpt.training.flops.PEAK_FLOPS)

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first setting out of range (with its command-line flag) and the fix."""
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} {getattr(self, name)!r} is invalid: it must be {rule}")
        for name in ("batch_size", "grad_accum", "eval_interval", "eval_iters", "keep_last"):
            need(_is_count(getattr(self, name)), name, "an integer >= 1")
        for name in ("max_steps", "epochs"):
            need(getattr(self, name) is None or _is_count(getattr(self, name)), name, "an integer >= 1")
        if self.max_steps is None and self.epochs is None:
            raise ValueError("give --max-steps or --epochs: the run needs a length")
        need(self.lr > 0 and math.isfinite(self.lr), "lr", "a positive number such as 1e-3")
        need(self.min_lr is None or 0 <= self.min_lr <= self.lr, "min_lr", f"between 0 and --lr ({self.lr})")
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

    def total_steps(self, batches_per_epoch: int) -> int:
        """The run's length in optimizer steps: max_steps, or epochs × the optimizer steps of one epoch."""
        if self.max_steps is not None:
            return self.max_steps
        return max(1, self.epochs * batches_per_epoch // self.grad_accum)

    def floor_lr(self) -> float:
        """The cosine's floor: min_lr, or lr itself for a constant rate."""
        return self.lr if self.min_lr is None else self.min_lr

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """A config from to_dict()'s output; unknown keys (from another version) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes).validate()


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


__all__ = ["TrainConfig", "DEFAULT_MODEL_CONFIG"]
