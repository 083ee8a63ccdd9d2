"""The trainer (gpt/training/trainer.py) and its schedule (gpt/schedule.py): warmup/cosine values, decay groups, gradient
accumulation == one big batch, exact resume on numpy with dropout and shuffling, the NaN guard."""
from __future__ import annotations

import math

import numpy as np
import pytest

import backends
from gpt.training import corpus
from gpt.training.checkpoint import optimizer_state_by_name, read_checkpoint
from gpt.model import GPTModel
from gpt.schedule import WarmupCosine, lr_at
from gpt.training.config import TrainConfig
from gpt.training.metrics import read_metrics
from gpt.training.trainer import TrainingDiverged, accumulate_grads, derive_seed, param_groups, pretrainer

TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. " * 40


def tiny_cfg(vocab: int = 257, drop: float = 0.1) -> dict:
    return dict(vocab_size=vocab, context_length=16, emb_dim=32, n_heads=2, n_layers=2, drop_rate=drop,
                qkv_bias=False)


def split_ids(text: str = TEXT):
    ids = corpus.tokenize(corpus.Corpus("test", text=text), corpus.bytes_tokenizer())
    return corpus.split_train_val(ids, 0.1)


def tiny_train_cfg(**kw) -> TrainConfig:
    base = dict(max_steps=12, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=3, eval_interval=100, eval_iters=2,
                sample_tokens=4, sample_prompt="the ", plot=False)
    return TrainConfig(**{**base, **kw})


# ---- schedule --------------------------------------------------------------------------------------------------

def test_warmup_cosine_values():
    mx, mn, warm, total = 1e-3, 1e-4, 10, 110
    f = WarmupCosine(mx, mn, warm, total)
    assert f(0) == mn                                   # warmup starts at the floor
    assert f(5) == pytest.approx(mn + (mx - mn) * 0.5, rel=1e-15)  # mid-warmup: halfway
    assert f(10) == mx                                  # end of warmup: the peak
    assert f(60) == pytest.approx((mx + mn) / 2, rel=1e-15)        # mid-decay: cos(pi/2) = 0
    assert f(110) == mn and f(500) == mn                # the end and past it: the floor
    assert f(35) > f(60) > f(85)                        # decreasing in the decay phase
    assert lr_at(60, 1.0, 0.5, 10, 110) == 0.75         # exactly, with dyadic values
    assert lr_at(0, 1.0, 0.0, 4, 10, init_lr=0.2) == 0.2
    assert lr_at(3, 1.0, 0.5, 0, 0) == 0.5              # no warmup, no decay steps: the floor after the end


def test_schedule_rejects_bad_values():
    with pytest.raises(ValueError, match="max_lr >= min_lr"):
        WarmupCosine(1e-4, 1e-3, 1, 10)


def test_train_config_validation_names_the_flag():
    with pytest.raises(ValueError, match="--lr"):
        TrainConfig(lr=-1.0).validate()
    with pytest.raises(ValueError, match="--min-lr"):
        TrainConfig(lr=1e-3, min_lr=1e-2).validate()
    with pytest.raises(ValueError, match="--beta2"):
        TrainConfig(beta2=1.0).validate()
    assert TrainConfig.from_dict({**TrainConfig().to_dict(), "unknown": 1}) == TrainConfig()


# ---- pieces ----------------------------------------------------------------------------------------------------

def test_param_groups_decay_matrices_only():
    model = GPTModel(tiny_cfg(), backend=backends.get_backend("numpy"), seed=0)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in decay["params"]} >= {"tok_emb.weight", "pos_emb.weight", "out_head.weight"}
    assert all(len(p.shape) >= 2 for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} >= {"final_norm.scale", "trf_blocks.0.ff.layers.0.bias"}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_derive_seed_depends_on_seed_and_step():
    assert derive_seed(1, 5) == derive_seed(1, 5)
    assert len({derive_seed(1, 5), derive_seed(1, 6), derive_seed(2, 5)}) == 3


def test_grad_accumulation_equals_one_big_batch():
    B = backends.get_backend("numpy", dtype="float64")
    model = GPTModel(tiny_cfg(drop=0.0), backend=B, seed=3)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 257, size=(16, 17))
    inputs, targets = x[:, :-1], x[:, 1:]
    model.zero_grad()
    big = accumulate_grads(model, [(inputs, targets)])
    want = {n: B.to_numpy(p.grad).copy() for n, p in model.named_parameters()}
    model.zero_grad()
    micro = accumulate_grads(model, [(inputs[i:i + 4], targets[i:i + 4]) for i in range(0, 16, 4)])
    assert micro == pytest.approx(big, rel=1e-12)
    floor = 1e-6 * max(np.abs(g).max() for g in want.values())   # DESIGN §5: mathematically-zero gradients
    for n, p in model.named_parameters():
        got = B.to_numpy(p.grad)
        rel = np.abs(got - want[n]).max() / max(np.abs(want[n]).max(), floor)
        assert rel <= 1e-10, f"{n}: relative error {rel:.2e}"


# ---- exact resume -----------------------------------------------------------------------------------------------

def _weights(model):
    return {n: model.B.to_numpy(p).copy() for n, p in model.state_dict().items()}


def test_resume_is_bit_exact_on_numpy(tmp_path):
    """2k steps in one go == k steps, a fresh process-like restart from the checkpoint, k more (dropout + shuffle)."""
    B = backends.get_backend("numpy")
    train_ids, val_ids = split_ids(TEXT[:600])
    cfg = tiny_train_cfg(max_steps=12, grad_accum=2)
    tok = corpus.bytes_tokenizer()

    def trainer(out, seed):
        model = GPTModel(tiny_cfg(drop=0.1), backend=B, seed=seed)
        return pretrainer(model, train_ids, val_ids, cfg, out_dir=out, tokenizer=tok, tokenizer_spec={"kind": "bytes"})

    whole = trainer(tmp_path / "whole", 7)
    assert 12 * cfg.grad_accum > 2 * len(whole.loader)      # the run crosses epochs: reshuffles are exercised
    whole.run()
    first = trainer(tmp_path / "split", 7)
    first.run(stop_at=6)
    assert read_checkpoint(tmp_path / "split").step == 6
    second = trainer(tmp_path / "split", 99)               # other initial weights: all must come from the file
    assert second.resume() == 6
    second.run()
    assert second.step == whole.step == 12
    w1, w2 = _weights(whole.model), _weights(second.model)
    for n in w1:
        assert np.array_equal(w1[n], w2[n]), n
    a1, s1 = optimizer_state_by_name(whole.optimizer, whole.model)
    a2, s2 = optimizer_state_by_name(second.optimizer, second.model)
    assert s1 == s2 and a1.keys() == a2.keys()
    for k in a1:
        assert np.array_equal(a1[k], a2[k]), k
    # the logs agree too: same training losses at every step
    losses = lambda d: [(r["step"], r["train_loss"]) for r in read_metrics(d / "metrics.jsonl") if "val_loss" not in r]
    assert losses(tmp_path / "whole") == losses(tmp_path / "split")


def test_resume_on_torch_continues_with_the_optimizer_state(tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)   # tiny model: extra threads only contend with the other xdist worker
    B = backends.get_backend("torch", dtype="float64")
    train_ids, val_ids = split_ids()
    cfg = tiny_train_cfg(max_steps=6)

    def trainer(out, seed):
        return pretrainer(GPTModel(tiny_cfg(drop=0.1), backend=B, seed=seed), train_ids, val_ids, cfg, out_dir=out,
                       tokenizer=corpus.bytes_tokenizer(), tokenizer_spec={"kind": "bytes"})

    whole = trainer(tmp_path / "whole", 1)
    whole.run()
    first = trainer(tmp_path / "split", 1)
    first.run(stop_at=3)
    second = trainer(tmp_path / "split", 2)
    second.resume()
    step_state = second.optimizer.state_dict()["state"][0]["step"]
    assert float(step_state) == 3.0
    second.run()
    w1, w2 = _weights(whole.model), _weights(second.model)
    for n in w1:
        np.testing.assert_allclose(w2[n], w1[n], rtol=0, atol=1e-12, err_msg=n)


# ---- divergence ---------------------------------------------------------------------------------------------------

def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    B = backends.get_backend("numpy")
    train_ids, val_ids = split_ids()
    model = GPTModel(tiny_cfg(), backend=B, seed=0)
    saved = {}

    def poison(event):          # right after the step-4 checkpoint is written, break the weights
        if event["event"] == "checkpoint":
            saved.update(_weights(model))
            w = model.tok_emb.weight
            B.assign(w, np.full(w.shape, np.nan, dtype=np.float32))

    trainer = pretrainer(model, train_ids, val_ids, tiny_train_cfg(max_steps=10, eval_interval=4), out_dir=tmp_path,
                      tokenizer=corpus.bytes_tokenizer(), tokenizer_spec={"kind": "bytes"}, on_event=poison)
    with pytest.raises(TrainingDiverged, match="diverged at step 5") as info:
        trainer.run()
    assert info.value.step == 5 and math.isnan(info.value.loss)
    assert "step-000004" in str(info.value)
    ckpt = read_checkpoint(tmp_path)
    assert ckpt.step == 4
    for n, w in ckpt.weights.items():
        assert np.isfinite(w).all() and np.array_equal(w, saved[n]), n
    fresh = GPTModel(tiny_cfg(), backend=B, seed=1)
    fresh.load_state_dict(ckpt.weights)                  # loadable into a new model


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # numpy's overflow warnings on the way to inf/NaN
def test_huge_learning_rate_is_caught(tmp_path):
    B = backends.get_backend("numpy")
    train_ids, val_ids = split_ids()
    model = GPTModel(tiny_cfg(drop=0.0), backend=B, seed=0)
    cfg = tiny_train_cfg(max_steps=200, lr=1e30, min_lr=1e30, warmup_steps=0, grad_clip=0.0, sample_tokens=0)
    trainer = pretrainer(model, train_ids, val_ids, cfg)
    with pytest.raises(TrainingDiverged, match=r"diverged at step \d+"):
        trainer.run()


def test_trainer_writes_metrics_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    B = backends.get_backend("numpy")
    train_ids, val_ids = split_ids()
    model = GPTModel(tiny_cfg(), backend=B, seed=0)
    events = []
    cfg = tiny_train_cfg(max_steps=6, eval_interval=3, plot=True, keep_last=1)
    result = pretrainer(model, train_ids, val_ids, cfg, out_dir=tmp_path, tokenizer=corpus.bytes_tokenizer(),
                     tokenizer_spec={"kind": "bytes"}, on_event=events.append).run()
    assert [e["step"] for e in events if e["event"] == "eval"] == [0, 3, 6]
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [3, 6]
    assert all(e["sample"].startswith("the ") for e in result.evals)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if "val_loss" not in r] == [1, 2, 3, 4, 5, 6]
    for r in records:
        assert {"step", "train_loss", "lr", "tokens_seen", "tokens_per_s"} <= r.keys()
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["best", "step-000006"]


def test_missing_matplotlib_only_skips_the_plot(tmp_path, monkeypatch):
    import gpt.training.trainer

    def no_matplotlib(*a, **k):
        raise ImportError('plotting the losses needs matplotlib: pip install "tinygpt[plot]"')

    monkeypatch.setattr(gpt.training.trainer, "plot_run", no_matplotlib)
    train_ids, val_ids = split_ids(TEXT[:600])
    model = GPTModel(tiny_cfg(), backend=backends.get_backend("numpy"), seed=0)
    events = []
    result = pretrainer(model, train_ids, val_ids, tiny_train_cfg(max_steps=2, plot=True, sample_tokens=0),
                     out_dir=tmp_path, on_event=events.append).run()
    assert result.step == 2 and not (tmp_path / "loss.png").exists()
    assert any(e["event"] == "warning" and "matplotlib" in e["message"] for e in events)


def test_request_stop_checkpoints_the_finished_step_and_resume_is_exact(tmp_path):
    """A graceful stop (what the CLI's first Ctrl-C asks for) ends run() after the step in progress with a checkpoint
    of it, off the evaluation interval; resuming from it equals the uninterrupted run bit for bit."""
    B = backends.get_backend("numpy")
    train_ids, val_ids = split_ids(TEXT[:600])
    cfg = tiny_train_cfg(max_steps=10, eval_interval=4)
    tok = corpus.bytes_tokenizer()

    def trainer(out):
        model = GPTModel(tiny_cfg(drop=0.1), backend=B, seed=3)
        return pretrainer(model, train_ids, val_ids, cfg, out_dir=out, tokenizer=tok, tokenizer_spec={"kind": "bytes"})

    whole = trainer(tmp_path / "whole")
    whole.run()
    stopped = trainer(tmp_path / "stopped")
    step = stopped.train_step

    def step_then_ask_to_stop():
        loss = step()
        if stopped.step == 5:
            stopped.request_stop()
        return loss

    stopped.train_step = step_then_ask_to_stop
    result = stopped.run()
    assert result.stopped and result.step == 5 and read_checkpoint(tmp_path / "stopped").step == 5
    again = trainer(tmp_path / "stopped")
    assert again.resume() == 5 and not again.run().stopped and again.step == 10
    w1, w2 = _weights(whole.model), _weights(again.model)
    assert all(np.array_equal(w1[n], w2[n]) for n in w1)
