"""Data-parallel training with PyTorch's own DistributedDataParallel, behind one backend-agnostic object.

The trainer talks to a `SingleProcess` or a `TorchDDP` through the same five methods (`wrap`, `sync`, `shard`,
`mean`, `close`) and two facts (`rank`, `world_size`), so gpt/training/trainer.py has no backend branches (DESIGN.md §4.8).
`TorchDDP` follows the PyTorch docs: "Getting Started with Distributed Data Parallel" and the
`torch.nn.parallel.DistributedDataParallel` reference:
- one process per device, started by `torchrun`, which sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and
  MASTER_PORT; `init_process_group(backend)` ("nccl" on GPUs, "gloo" on CPUs) reads them;
- the model's `B.module(model)` view (the same Parameter objects, DESIGN.md §4.5) is wrapped in DDP, which
  all-reduces (averages) gradients across ranks during backward;
- gradient accumulation: every micro-step but the last runs inside `ddp.no_sync()`, so gradients accumulate
  locally and are all-reduced once, on the last micro-step's backward;
- every rank starts from the same weights (GPTModel draws them from the seed; DDP also broadcasts rank 0's).
Each rank trains on its own contiguous block of the training windows (`RankShard`). Only rank 0 logs, samples
and writes checkpoints (the trainer asks `rank == 0`). torch is imported inside functions only (DESIGN.md §4.8).
"""
from __future__ import annotations

import contextlib
import datetime
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from backends.base import Backend

DIST_BACKENDS = ("nccl", "gloo")
CLOSE_WAIT_S = 60  # how long close() waits for the other ranks before it leaves the process group


@dataclass
class LaunchEnv:
    """What torchrun tells each process through its environment."""

    rank: int          # this process among all of them
    local_rank: int    # this process on its machine: which GPU it drives
    world_size: int    # number of processes


def launch_env(environ: Mapping[str, str]) -> LaunchEnv | None:
    """The torchrun variables from `environ` (the CLI passes os.environ), or None when not launched by torchrun."""
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return None
    try:
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local = int(environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise ValueError(f"RANK={environ.get('RANK')!r}, WORLD_SIZE={environ.get('WORLD_SIZE')!r} and LOCAL_RANK="
                         f"{environ.get('LOCAL_RANK')!r} must be integers; launch with torchrun") from None
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} must lie in [0, WORLD_SIZE={world}); launch with torchrun")
    return LaunchEnv(rank, local, world)


class RankShard:
    """Rank `rank`'s contiguous block of a dataset's windows: len(dataset) // world_size of them (the rest, fewer
    than world_size windows, are dropped so every rank takes the same number of steps)."""

    def __init__(self, dataset: Any, rank: int, world_size: int):
        self.dataset, self.rank, self.world_size = dataset, rank, world_size
        self.size = len(dataset) // world_size
        if self.size == 0:
            raise ValueError(f"{len(dataset)} training windows cannot be split over {world_size} processes; give "
                             f"more data or use fewer processes")
        self.start = rank * self.size
        self.n_tokens = getattr(dataset, "n_tokens", None) or len(getattr(dataset, "token_ids", ()))

    def __len__(self) -> int:
        return self.size

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Windows `indices` of this rank's block, as the dataset's (inputs, targets)."""
        return self.dataset.get_batch(self.start + np.asarray(indices, dtype=np.int64))


class SingleProcess:
    """One process, no communication: every method is the identity (numpy, cupy, or torch without torchrun)."""

    rank, local_rank, world_size = 0, 0, 1

    def wrap(self, module: Any) -> Any:
        """The module gradients flow through (DDP-wrapped when distributed)."""
        return module

    def sync(self, module: Any, last_micro_step: bool) -> contextlib.AbstractContextManager:
        """The context for one micro-step's forward and backward: gradients are all-reduced only on the last."""
        return contextlib.nullcontext()

    def shard(self, dataset: Any) -> Any:
        """This rank's part of the training windows."""
        return dataset

    def mean(self, value: float) -> float:
        """The mean of a number over all ranks (the logged loss; a NaN on any rank reaches every rank)."""
        return value

    def close(self) -> None:
        """Leave the process group."""
        return None


class TorchDDP(SingleProcess):
    """A torch.distributed process group and DistributedDataParallel for the torch backend."""

    def __init__(self, B: Backend, rank: int, world_size: int, local_rank: int = 0, dist_backend: str | None = None,
                 init_method: str | None = None):
        if not B.supports_ddp:
            raise ValueError(f"distributed training uses PyTorch's DistributedDataParallel; the {B.name} backend "
                             f"runs in one process: use --backend torch, or run without torchrun")
        import torch.distributed as dist

        self.B, self.rank, self.world_size, self.local_rank = B, rank, world_size, local_rank
        on_cuda = str(B.device).startswith("cuda")
        dist_backend = dist_backend or ("nccl" if on_cuda else "gloo")
        if dist_backend not in DIST_BACKENDS:
            raise ValueError(f"--dist-backend {dist_backend!r} is unknown; choose nccl (GPUs) or gloo (CPU)")
        if dist_backend == "nccl" and not on_cuda:
            raise ValueError("--dist-backend nccl needs CUDA devices; use --dist-backend gloo on the CPU")
        if on_cuda:
            B.torch.cuda.set_device(B.device)
        dist.init_process_group(dist_backend, init_method=init_method, rank=rank, world_size=world_size)
        self.dist_backend = dist_backend

    def wrap(self, module: Any) -> Any:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.B.torch.device(self.B.device).index] if str(self.B.device).startswith("cuda") else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def sync(self, module: Any, last_micro_step: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if last_micro_step else module.no_sync()

    def shard(self, dataset: Any) -> Any:
        return RankShard(dataset, self.rank, self.world_size)

    def mean(self, value: float) -> float:
        import torch.distributed as dist

        t = self.B.torch.tensor([float(value)], dtype=self.B.torch.float64,
                                device=self.B.device if self.dist_backend == "nccl" else "cpu")
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def close(self) -> None:
        """Leave the process group once every rank is here: on gloo a rank that tears its connections down while a
        peer is still finishing (rank 0 writing the checkpoint) can abort that peer ("terminate called without an
        active exception", seen once in CI). A rank that never arrives (it failed) is waited for CLOSE_WAIT_S."""
        import torch.distributed as dist

        if dist.is_initialized():
            if self.dist_backend == "gloo":
                try:
                    dist.monitored_barrier(timeout=datetime.timedelta(seconds=CLOSE_WAIT_S))
                except RuntimeError:  # a peer did not come: leave anyway
                    pass
            dist.destroy_process_group()


def setup(B: Backend, environ: Mapping[str, str], dist_backend: str | None = None) -> SingleProcess:
    """TorchDDP when launched by torchrun (from `environ`'s variables), else SingleProcess."""
    env = launch_env(environ)
    if env is None or env.world_size == 1 and dist_backend is None:
        return SingleProcess()
    return TorchDDP(B, env.rank, env.world_size, env.local_rank, dist_backend)
