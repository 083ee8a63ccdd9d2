"""Fine-tuning on numpy against torch (float64): gradients of the classifier (frozen layers get none), of a
LoRA-wrapped GPT (base weights get none) and of the instruction loss with -100 targets; LoRA merging keeps the
logits and gives back the book's state_dict keys and a plain GPT-2 export."""
from __future__ import annotations

import numpy as np
import pytest

import backends
from gpt.classify import calc_loss_batch_classifier, replace_head, set_trainable
from gpt.instruct import custom_collate_fn
from gpt.lora import LinearWithLoRA, LoRALayer, kaiming_uniform, lora_layers, merge_lora, replace_linear_with_lora
from gpt.model import GPTModel
from gpt.nn import to_numpy_any
from gpt.pretrain import calc_loss_batch

CFG = {"vocab_size": 61, "context_length": 12, "emb_dim": 16, "n_heads": 2, "n_layers": 2, "drop_rate": 0.0,
       "qkv_bias": True}
PAD = 60
RNG = np.random.default_rng(7)
IDS = RNG.integers(0, PAD, size=(3, 10))
IDS[1, 6:] = PAD                                  # right padding, as SpamDataset makes it
IDS[2, 8:] = PAD
LABELS = np.array([1, 0, 1])


def pair(build=None):
    """The same seeded model on numpy float64 and torch float64, with `build(model)` applied to each."""
    models = []
    for name in ("numpy", "torch"):
        m = GPTModel(CFG, backend=backends.get_backend(name, "float64"), seed=3)
        if build is not None:
            build(m)
        models.append(m)
    return models


def randomise_lora(model, scale=0.05):
    """Non-zero LoRA B matrices (B starts at zero, which would make every gradient of A exactly zero)."""
    rng = np.random.default_rng(11)
    for _, layer in lora_layers(model):
        model.B.assign(layer.lora.lora_B, rng.normal(0.0, scale, size=layer.lora.lora_B.shape))


def compare_grads(m_np, m_t, tol=1e-8):
    """Every trainable parameter's gradient agrees within tol relative (DESIGN §5 floor); frozen ones have none."""
    grads_np, grads_t, frozen = {}, {}, []
    for (n, p), (n_t, p_t) in zip(m_np.named_parameters(), m_t.named_parameters()):
        assert n == n_t
        assert bool(p.requires_grad) == bool(p_t.requires_grad), n
        if not p.requires_grad:
            assert p.grad is None and p_t.grad is None, f"frozen {n} got a gradient"
            frozen.append(n)
            continue
        assert p.grad is not None and p_t.grad is not None, f"trainable {n} got no gradient"
        grads_np[n], grads_t[n] = to_numpy_any(p.grad), to_numpy_any(p_t.grad)
    floor = 1e-6 * max(np.abs(g).max() for g in grads_t.values())
    errs = {n: float(np.abs(grads_np[n] - grads_t[n]).max() / max(np.abs(grads_t[n]).max(), floor))
            for n in grads_t}
    worst = max(errs, key=errs.get)
    assert errs[worst] <= tol, f"{worst}: relative gradient error {errs[worst]:.2e}"
    return set(grads_t), frozen


@pytest.mark.parametrize("pool_pad", [None, PAD], ids=["last-token", "last-non-pad"])
def test_classifier_gradients_match_torch_and_frozen_layers_get_none(pool_pad):
    def build(m):
        replace_head(m, 2, seed=5)
        set_trainable(m, "last-block")
    m_np, m_t = pair(build)
    losses = []
    for m in (m_np, m_t):
        loss = calc_loss_batch_classifier(IDS, LABELS, m, pad_token_id=pool_pad)
        loss.backward()
        losses.append(float(loss.item()))
    assert abs(losses[0] - losses[1]) <= 1e-12 * abs(losses[1])
    trained, frozen = compare_grads(m_np, m_t)
    assert trained == {n for n, _ in m_np.named_parameters()
                       if n.startswith(("trf_blocks.1.", "final_norm.", "out_head."))}
    assert "tok_emb.weight" in frozen and "trf_blocks.0.att.W_query.weight" in frozen
    assert "out_head.bias" in trained and tuple(m_np.out_head.weight.shape) == (2, CFG["emb_dim"])


def test_classifier_pooling_reads_the_last_non_pad_token():
    m_np, _ = pair(lambda m: replace_head(m, 2, seed=5))
    from gpt.classify import classifier_logits

    full = to_numpy_any(m_np(IDS))                                    # (3, 10, 2)
    pooled = to_numpy_any(classifier_logits(m_np, IDS, pad_token_id=PAD))
    np.testing.assert_array_equal(pooled, full[[0, 1, 2], [9, 5, 7]])
    np.testing.assert_array_equal(to_numpy_any(classifier_logits(m_np, IDS)), full[:, -1])


def test_lora_gradients_match_torch_and_base_weights_get_none():
    def build(m):
        replace_linear_with_lora(m, rank=3, alpha=2.0, rng=np.random.default_rng(9))
        randomise_lora(m)
    m_np, m_t = pair(build)
    targets = np.roll(IDS, -1, axis=1)
    for m in (m_np, m_t):
        calc_loss_batch(IDS, targets, m).backward()
    trained, frozen = compare_grads(m_np, m_t)
    assert trained and all(n.endswith((".lora.A", ".lora.B")) for n in trained)
    # every Linear is wrapped: 4 attention + 2 feed-forward per block, and the head
    assert len(trained) == 2 * (6 * CFG["n_layers"] + 1)
    assert "trf_blocks.0.att.W_query.linear.weight" in frozen and "out_head.linear.weight" in frozen


def test_instruction_loss_with_ignored_targets_matches_torch():
    rng = np.random.default_rng(2)
    items = [list(rng.integers(0, PAD, size=n)) for n in (9, 4, 6)]
    inputs, targets = custom_collate_fn(items, pad_token_id=PAD, allowed_max_length=CFG["context_length"])
    assert (targets == -100).sum() > 0
    m_np, m_t = pair()
    losses = []
    for m in (m_np, m_t):
        loss = calc_loss_batch(inputs, targets, m)
        loss.backward()
        losses.append(float(loss.item()))
    assert abs(losses[0] - losses[1]) <= 1e-12 * abs(losses[1])
    # the ignored positions must not count: the loss equals the mean over the kept targets only
    logits = to_numpy_any(m_np(inputs)).reshape(-1, CFG["vocab_size"])
    t = targets.reshape(-1)
    keep = t != -100
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    assert abs(-logp[keep, t[keep]].mean() - losses[0]) <= 1e-12
    trained, frozen = compare_grads(m_np, m_t)
    assert not frozen


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_merged_lora_gives_the_same_logits_and_the_books_keys(backend, tmp_path):
    B = backends.get_backend(backend, "float64")
    model = GPTModel({**CFG, "qkv_bias": False}, backend=B, seed=3)
    book_keys = list(model.state_dict())
    replace_linear_with_lora(model, rank=4, alpha=8.0, rng=np.random.default_rng(1))
    randomise_lora(model, scale=0.1)
    keys = list(model.state_dict())
    assert "trf_blocks.0.att.W_query.lora.A" in keys and "trf_blocks.0.att.W_query.lora.B" in keys
    assert "trf_blocks.1.ff.layers.2.linear.weight" in keys and "out_head.lora.A" in keys
    before = to_numpy_any(model(IDS))
    merge_lora(model)
    after = to_numpy_any(model(IDS))
    assert np.abs(after - before).max() <= 1e-10 * max(1.0, np.abs(before).max())
    assert np.abs(before - to_numpy_any(GPTModel({**CFG, "qkv_bias": False}, backend=B, seed=3)(IDS))).max() > 1e-3
    assert list(model.state_dict()) == book_keys
    assert not lora_layers(model)
    from gpt.weights import export_hf_gpt2, load_hf_gpt2

    reloaded = load_hf_gpt2(export_hf_gpt2(model, tmp_path / "hf"), backend=B)
    assert np.abs(to_numpy_any(reloaded(IDS)) - after).max() <= 1e-12 * max(1.0, np.abs(after).max())


def test_merge_unties_a_tied_head_and_keeps_the_embedding():
    B = backends.get_backend("numpy", "float64")
    model = GPTModel({**CFG, "tie_weights": True}, backend=B, seed=3)
    emb = to_numpy_any(model.tok_emb.weight).copy()
    replace_linear_with_lora(model, rank=2, alpha=1.0)
    randomise_lora(model)
    before = to_numpy_any(model(IDS))
    merge_lora(model)
    np.testing.assert_array_equal(to_numpy_any(model.tok_emb.weight), emb)
    assert model.cfg.tie_weights is False and "out_head.weight" in model.state_dict()
    assert np.abs(to_numpy_any(model(IDS)) - before).max() <= 1e-10
    fresh = GPTModel(model.cfg, backend=B, seed=0)
    fresh.load_state_dict(model.state_dict())


def test_lora_layer_init_and_formula():
    B = backends.get_backend("numpy", "float64")
    layer = LoRALayer(B, 6, 5, rank=4, alpha=3.0, rng=np.random.default_rng(0))
    A = to_numpy_any(layer.A)
    assert A.shape == (6, 4) and np.abs(A).max() <= 1 / np.sqrt(4)    # kaiming-uniform(a=√5): bound 1/√fan_in
    assert np.all(to_numpy_any(layer.lora_B) == 0)
    assert [n for n, _ in layer.named_parameters()] == ["A", "B"]
    samples = kaiming_uniform((2000, 9), np.sqrt(5), np.random.default_rng(1))
    assert 0.3 < samples.max() * 3 <= 1.0 + 1e-12                      # fills (−1/3, 1/3)
    from gpt.nn import Linear

    lin = Linear(B, 6, 5, rng=np.random.default_rng(1))
    wrapped = LinearWithLoRA(lin, rank=2, alpha=0.5, rng=np.random.default_rng(2))
    B.assign(wrapped.lora.lora_B, np.random.default_rng(3).normal(size=(2, 5)))
    x = np.random.default_rng(4).normal(size=(3, 6))
    expect = (x @ to_numpy_any(lin.weight).T + to_numpy_any(lin.bias)
              + 0.5 * (x @ to_numpy_any(wrapped.lora.A) @ to_numpy_any(wrapped.lora.lora_B)))
    np.testing.assert_allclose(to_numpy_any(wrapped(B.tensor(x))), expect, rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="rank"):
        LoRALayer(B, 6, 5, rank=0, alpha=1.0)
    with pytest.raises(TypeError, match="Linear"):
        LinearWithLoRA(layer, 2, 1.0)


def test_freezing_keeps_frozen_weights_in_the_state_dict_and_out_of_the_optimizer():
    from gpt.training.trainer import param_groups

    B = backends.get_backend("numpy", "float64")
    model = GPTModel(CFG, backend=B, seed=3)
    replace_head(model, 2)
    set_trainable(model, "head")
    assert len(model.state_dict()) == len(list(model.named_parameters()))
    groups = param_groups(model, 0.1)
    assert sum(len(g["params"]) for g in groups) == 2                  # the head's weight and bias
    with pytest.raises(ValueError, match="trainable"):
        set_trainable(model, "everything")


def test_train_classifier_simple_runs_the_books_loop():
    from gpt.classify import SpamDataset, calc_accuracy_loader, classify_review, eval_batches, train_classifier_simple
    from gpt.data import DataLoader

    class Bytes:
        def encode(self, text, **_):
            return list(text.encode("utf-8"))

    B = backends.get_backend("numpy", "float32")
    model = GPTModel({**CFG, "vocab_size": 257, "context_length": 16}, backend=B, seed=3)
    replace_head(model, 2, seed=1)
    set_trainable(model, "last-block")
    rows = [("win cash now", 1), ("see you at 5", 0), ("free prize!!", 1), ("ok thanks", 0)] * 3
    train = SpamDataset(rows, Bytes(), pad_token_id=256)
    loader = DataLoader(train, batch_size=4, shuffle=True, seed=1)
    val = eval_batches(train, 4)
    lines = []
    out = train_classifier_simple(model, loader, val, B.AdamW([p for p in model.parameters() if p.requires_grad],
                                                               lr=1e-3, weight_decay=0.1),
                                  None, num_epochs=2, eval_freq=2, eval_iter=2, log=lines.append)
    train_losses, val_losses, train_accs, val_accs, examples_seen = out
    assert examples_seen == 24 and len(train_losses) == len(val_losses) == 3 and len(train_accs) == 2
    assert any(line.startswith("Training accuracy:") for line in lines)
    assert 0 <= calc_accuracy_loader(val, model) <= 1 and model.training
    assert classify_review("free cash", model, Bytes(), max_length=train.max_length, pad_token_id=256) in (
        "spam", "not spam")
