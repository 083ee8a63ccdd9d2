"""The book's chapter 5 functions (gpt/pretrain.py) on the numpy backend: the loss is the mean cross-entropy,
evaluation leaves train mode on, the simple loop lowers the loss, samples come back as text, the plot is a PNG."""
from __future__ import annotations

import math

import numpy as np
import pytest

import backends
from gpt.training import corpus
from gpt.data import create_dataloader_v1
from gpt.model import GPTModel
from gpt.pretrain import (calc_loss_batch, calc_loss_loader, evaluate_model, generate_and_print_sample,
                          plot_losses, train_model_simple)

TEXT = "In the beginning the quick brown fox jumped over the lazy dog, and then it slept. " * 30
CFG = dict(vocab_size=257, context_length=16, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0, qkv_bias=False)


@pytest.fixture
def setup():
    B = backends.get_backend("numpy", dtype="float64")
    tok = corpus.bytes_tokenizer()
    model = GPTModel(CFG, backend=B, seed=0)
    cut = int(len(TEXT) * 0.9)
    train = create_dataloader_v1(TEXT[:cut], batch_size=4, max_length=16, stride=16, tokenizer=tok, seed=1)
    val = create_dataloader_v1(TEXT[cut:], batch_size=4, max_length=16, stride=16, shuffle=False,
                               drop_last=False, tokenizer=tok)
    return B, tok, model, train, val


def test_calc_loss_batch_is_mean_cross_entropy(setup):
    B, _, model, train, _ = setup
    inputs, targets = next(iter(train))
    loss = calc_loss_batch(inputs, targets, model, device="cpu")
    logits = B.to_numpy(model(inputs)).reshape(-1, 257)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    want = -logp[np.arange(logp.shape[0]), targets.reshape(-1)].mean()
    assert float(loss.item()) == pytest.approx(want, rel=1e-12)
    assert float(loss.item()) == pytest.approx(math.log(257), rel=0.05)   # untrained: near uniform


def test_calc_loss_loader_limits_batches_and_handles_empty(setup):
    _, _, model, train, val = setup
    batches = [next(iter(val))] * 3
    one = calc_loss_loader(batches, model, num_batches=1)
    assert calc_loss_loader(batches, model) == pytest.approx(one, rel=1e-12)
    assert math.isnan(calc_loss_loader([], model))


def test_evaluate_model_restores_train_mode(setup):
    _, _, model, train, val = setup
    model.train()
    tr, va = evaluate_model(model, train, val, "cpu", eval_iter=2)
    assert model.training and math.isfinite(tr) and math.isfinite(va)


def test_train_model_simple_lowers_the_loss(setup):
    B, tok, model, train, val = setup
    opt = B.AdamW(model.parameters(), lr=5e-3, weight_decay=0.1)
    lines = []
    train_losses, val_losses, tokens = train_model_simple(model, train, val, opt, "cpu", num_epochs=2,
                                                          eval_freq=5, eval_iter=2, start_context="In the",
                                                          tokenizer=tok, log=lines.append)
    assert len(train_losses) == len(val_losses) == len(tokens) >= 3
    assert train_losses[-1] < train_losses[0] - 1.0
    assert tokens == sorted(tokens) and tokens[0] == 4 * 16
    assert lines[0].startswith("Ep 1 (Step 000000): Train loss") and lines[-1].startswith("In the")


def test_generate_and_print_sample_returns_one_line(setup):
    _, tok, model, _, _ = setup
    text = generate_and_print_sample(model, tok, None, "In the", max_new_tokens=10)
    assert text.startswith("In the") and "\n" not in text
    assert model.training                                   # back in the mode it was in


def test_plot_losses_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_losses([0, 0.5, 1.0], [0, 100, 200], [5.0, 4.0, 3.5], [5.1, 4.4, 4.2], path=tmp_path / "l.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
