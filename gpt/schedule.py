"""Learning-rate schedule: linear warmup, then cosine decay to a floor (book appendix D, "Adding bells and whistles").

The book's appendix D warms the rate up linearly from an initial value to the peak over the first steps, then
follows half a cosine from the peak down to a minimum over the remaining steps (Loshchilov & Hutter, SGDR, 2017,
without restarts). Past the last step the rate stays at the minimum. Steps count optimizer updates from 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WarmupCosine:
    """lr(step): `init_lr` → `max_lr` linearly over `warmup_steps`, then a cosine from `max_lr` to `min_lr`."""

    max_lr: float                # the peak rate, reached at step == warmup_steps
    min_lr: float                # the floor, reached at step == max_steps and kept after it
    warmup_steps: int            # steps of linear warmup (0: start at the peak)
    max_steps: int               # the step at which the cosine reaches min_lr
    init_lr: float | None = None  # the rate at step 0; None: min_lr (warm up from the floor)

    def __post_init__(self):
        if not (self.max_lr >= self.min_lr >= 0):
            raise ValueError(f"need max_lr >= min_lr >= 0, got max_lr={self.max_lr}, min_lr={self.min_lr}")
        if self.warmup_steps < 0 or self.max_steps < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps} and max_steps={self.max_steps} must be >= 0")

    def __call__(self, step: int) -> float:
        return lr_at(step, self.max_lr, self.min_lr, self.warmup_steps, self.max_steps, self.init_lr)


def lr_at(step: int, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int,
          init_lr: float | None = None) -> float:
    """The learning rate at optimizer step `step` (0-based) of a linear-warmup + cosine-decay schedule."""
    start = min_lr if init_lr is None else init_lr
    if step < warmup_steps:
        return start + (max_lr - start) * step / warmup_steps
    decay_steps = max_steps - warmup_steps
    if decay_steps <= 0 or step >= max_steps:
        return min_lr if step >= max_steps else max_lr
    progress = (step - warmup_steps) / decay_steps                # 0 at the peak, 1 at max_steps
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
