"""Two-process DDP (gloo, CPU, float64) against one process on the concatenated batch; the DDP checkpoint in numpy.

Each rank runs one optimizer step of two micro-batches through gpt.training.trainer.Trainer with a gpt.training.distributed.TorchDDP;
the single process runs the same step on all four micro-batches as one batch. Equal-sized micro-batches make the
mean of the per-rank, per-micro-batch gradients equal the gradient of the concatenated batch, so DDP's all-reduce
average must reproduce it to float64 rounding. A comm hook counts all-reduces: with no_sync on the first
micro-step there is one per step (the tiny model fits one DDP bucket), not two.
"""
import socket

import numpy as np
import pytest

torch = pytest.importorskip("torch")

CFG = {"vocab_size": 61, "context_length": 8, "emb_dim": 16, "n_heads": 2, "n_layers": 2, "drop_rate": 0.0,
       "qkv_bias": True}
SEED = 7
PROMPT = np.arange(12, dtype=np.int64).reshape(2, 6) % CFG["vocab_size"]


def _micro_batches() -> list[tuple[np.ndarray, np.ndarray]]:
    """Four micro-batches of two windows: ranks 0 and 1 take two each."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(4):
        x = rng.integers(0, CFG["vocab_size"], size=(2, CFG["context_length"] + 1))
        out.append((x[:, :-1], x[:, 1:]))
    return out


def _trainer(B, batch_size, grad_accum, out_dir=None, distributed=None):
    from gpt.model import GPTModel
    from gpt.training.trainer import TrainConfig, pretrainer

    model = GPTModel(CFG, backend=B, seed=SEED)
    ids = np.random.default_rng(1).integers(0, CFG["vocab_size"], size=400)
    cfg = TrainConfig(max_steps=1, batch_size=batch_size, grad_accum=grad_accum, grad_clip=0.0, warmup_steps=0,
                      eval_iters=1, sample_tokens=0, plot=False)
    return pretrainer(model, ids[:300], ids[300:], cfg, out_dir=out_dir, tokenizer_spec={"kind": "bytes"},
                   distributed=distributed)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    import backends
    from gpt.training.distributed import TorchDDP

    B = backends.get_backend("torch", dtype="float64")
    dist = TorchDDP(B, rank, world, dist_backend="gloo", init_method=f"tcp://127.0.0.1:{port}")
    try:
        trainer = _trainer(B, batch_size=2, grad_accum=2, out_dir=out_dir, distributed=dist)
        calls = []

        def counting_hook(state, bucket):
            from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

            calls.append(1)
            return allreduce_hook(None, bucket)

        trainer.runner.net.register_comm_hook(None, counting_hook)
        mine = _micro_batches()[2 * rank:2 * rank + 2]
        loss = trainer.step_on(mine)
        grads = {n: p.grad.numpy().copy() for n, p in trainer.model.named_parameters()}
        with torch.no_grad():
            logits = trainer.model(PROMPT).numpy()
        np.savez(f"{out_dir}/rank{rank}.npz", loss=loss, allreduces=len(calls), logits=logits,
                 **{"grad:" + n: g for n, g in grads.items()})
        trainer.save()   # only rank 0 writes
    finally:
        dist.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_ranks_equal_one_process_and_checkpoint_loads_in_numpy(tmp_path):
    import backends
    from gpt.training.checkpoint import load_model

    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]

    B = backends.get_backend("torch", dtype="float64")
    single = _trainer(B, batch_size=8, grad_accum=1)
    batches = _micro_batches()
    loss = single.step_on([(np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches]))])
    for r in ranks:
        assert int(r["allreduces"]) == 1, "all-reduce ran on a non-final micro-step (no_sync not applied)"
        assert abs(float(r["loss"]) - loss) <= 1e-12
        for n, p in single.model.named_parameters():
            err = np.max(np.abs(r["grad:" + n] - p.grad.numpy()))
            assert err <= 1e-10, f"{n}: DDP gradient differs from one process's by {err:.2e}"

    # only rank 0 wrote; the checkpoint loads in numpy float64 with the same logits as both torch models
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-000001"]
    numpy_model, _, _ = load_model(tmp_path, backends.get_backend("numpy", dtype="float64"))
    ours = numpy_model(PROMPT).numpy()
    with torch.no_grad():
        reference = single.model(PROMPT).numpy()
    assert np.max(np.abs(ours - ranks[0]["logits"])) <= 1e-10
    assert np.max(np.abs(ours - reference)) <= 1e-10
