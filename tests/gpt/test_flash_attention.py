"""The tiled FlashAttention kernel against the plain fused kernel and torch, and the model with it switched on.

Tolerances: float64 ≤ 1e-10, float32 ≤ 1e-5 per op; the whole model ≤ 1e-8 in float64.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import backends
import tinytensor as tt
import tinytensor.functional as F
from gpt.model import GPTModel
from tinytensor.kernels import flash_attention as kflash


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("tq,tk", [(7, 7), (200, 200), (64, 300)])
def test_flash_matches_plain_and_torch(dtype, tol, causal, tq, tk):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 3, tq, 16)).astype(dtype)
    k, v = (rng.standard_normal((2, 3, tk, 16)).astype(dtype) for _ in range(2))
    dout = rng.standard_normal((2, 3, tq, 16)).astype(dtype)
    flash = [tt.Tensor(a, requires_grad=True) for a in (q, k, v)]
    plain = [tt.Tensor(a, requires_grad=True) for a in (q, k, v)]
    ref = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    out_f = F.flash_attention(*flash, is_causal=causal)
    out_p = F.scaled_dot_product_attention(*plain, is_causal=causal)
    out_t = torch.nn.functional.scaled_dot_product_attention(*ref, is_causal=causal)
    out_f.backward(tt.Tensor(dout))
    out_p.backward(tt.Tensor(dout))
    out_t.backward(torch.tensor(dout))
    assert out_f.dtype == dtype and out_f.shape == out_p.shape
    assert _rel(out_f.data, out_t.detach().numpy()) <= tol
    assert _rel(out_f.data, out_p.data) <= tol
    for f, p, t in zip(flash, plain, ref):
        assert f.grad.dtype == dtype
        assert _rel(f.grad.data, t.grad.numpy()) <= tol
        assert _rel(f.grad.data, p.grad.data) <= tol


def test_flash_keeps_no_score_matrix():
    q = np.zeros((1, 1, 300, 8))
    _, saved = kflash.flash_attention_forward(q, q, q, is_causal=True)
    assert not any(hasattr(a, "shape") and a.shape[-2:] == (300, 300) for a in saved.values())
    assert saved["lse"].shape == (1, 1, 300, 1)


def _full_mask(seed, tq, tk, batch, p, block):
    """The per-tile dropout masks assembled into one (…, tq, tk) array, to replay them in the composite."""
    mask = np.zeros(batch + (tq, tk))
    for q0 in range(0, tq, block):
        for k0 in range(0, tk, block):
            shape = batch + (min(block, tq - q0), min(block, tk - k0))
            mask[..., q0:q0 + block, k0:k0 + block] = kflash.tile_keep_mask(seed, q0, k0, shape, p, np)
    return mask


def test_flash_dropout_matches_composite_with_the_same_mask():
    rng = np.random.default_rng(1)
    tq = tk = 150
    q, k, v, dout = (rng.standard_normal((2, 2, tq, 8)) for _ in range(4))
    ours = [tt.Tensor(a, requires_grad=True) for a in (q, k, v)]
    tt.random.manual_seed(5)
    seed = int(tt.random.generator().integers(2**62))
    tt.random.manual_seed(5)
    out = F.flash_attention(*ours, dropout_p=0.3, is_causal=True)
    out.backward(tt.Tensor(dout))
    mask = _full_mask(seed, tq, tk, (2, 2), 0.3, kflash.BLOCK)
    ref = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    scores = ref[0] @ ref[1].transpose(-2, -1) / np.sqrt(8)
    scores = scores.masked_fill(torch.ones(tq, tk, dtype=torch.bool).triu(1), float("-inf"))
    out_t = (torch.softmax(scores, -1) * torch.tensor(mask)) @ ref[2]
    out_t.backward(torch.tensor(dout))
    assert 0.6 < (mask[..., np.tril_indices(tq)[0], np.tril_indices(tq)[1]] > 0).mean() < 0.8
    assert _rel(out.data, out_t.detach().numpy()) <= 1e-10
    for o, t in zip(ours, ref):
        assert _rel(o.grad.data, t.grad.numpy()) <= 1e-10


def test_model_with_flash_attention_matches_plain_float64():
    B = backends.get_backend("numpy", dtype="float64")
    cfg = {"vocab_size": 97, "context_length": 160, "emb_dim": 32, "n_heads": 4, "n_layers": 2, "drop_rate": 0.0,
           "qkv_bias": True}
    plain = GPTModel(cfg, backend=B, seed=7)
    flash = GPTModel({**cfg, "flash_attention": True}, backend=B, seed=7)
    assert flash.trf_blocks[0].att.flash and not plain.trf_blocks[0].att.flash
    ids = np.random.default_rng(2).integers(0, 97, size=(2, 150))
    targets = np.random.default_rng(3).integers(0, 97, size=(2, 150))
    losses = []
    for model in (plain, flash):
        logits = model(ids)
        loss = B.F.cross_entropy(logits.flatten(0, 1), B.tensor(targets.reshape(-1)))
        loss.backward()
        losses.append((logits.data, dict(model.named_parameters())))
    (lp, pp), (lf, pf) = losses
    assert _rel(lf, lp) <= 1e-8
    largest = max(np.abs(p.grad.data).max() for p in pp.values())
    for name, p in pp.items():
        denom = max(np.abs(p.grad.data).max(), 1e-6 * largest)  # DESIGN §5: floor for ~zero gradients
        assert np.abs(pf[name].grad.data - p.grad.data).max() / denom <= 1e-8, name


def test_flash_config_is_ignored_by_torch_backend():
    B = backends.get_backend("torch", dtype="float64")
    cfg = {"vocab_size": 50, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0,
           "qkv_bias": False}
    a = GPTModel({**cfg, "flash_attention": True}, backend=B, seed=1)(np.arange(10)[None])
    b = GPTModel(cfg, backend=B, seed=1)(np.arange(10)[None])
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_flash_path_of_a_grouped_query_model_equals_the_plain_path():
    """flash_attention=True with n_kv_heads < n_heads (Llama-style GQA) gives the sdpa path's logits and gradients."""
    B = backends.get_backend("numpy", dtype="float64")
    cfg = {"vocab_size": 40, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2, "drop_rate": 0.0,
           "qkv_bias": False, "n_kv_heads": 2, "norm": "rmsnorm", "positions": "rope", "mlp": "swiglu"}
    ids = np.random.default_rng(0).integers(0, 40, size=(2, 16))
    outs = []
    for flash in (False, True):
        model = GPTModel({**cfg, "flash_attention": flash}, backend=B, seed=3)
        logits = model(ids)
        (logits * B.tensor(np.random.default_rng(1).standard_normal(logits.shape))).sum().backward()
        outs.append([B.to_numpy(logits)] + [B.to_numpy(p.grad) for p in model.parameters()])
    for a, b in zip(*outs):
        assert np.abs(a - b).max() <= 1e-10 * np.abs(b).max()
