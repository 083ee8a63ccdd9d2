"""Bidirectional attention with padding (BERT's encoder): scaled_dot_product_attention with is_causal=False and a
key-padding mask built from an attention_mask (b, t) of 1 = real token, as a boolean (b, 1, 1, t) mask or as an
additive one (0 / −inf, or 0 / dtype min as Hugging Face builds it). Against torch float64 (≤ 1e-10, outputs and
every gradient under a random upstream gradient); masked keys get probability 0 and exactly zero gradient, and a
sequence that is all padding gives zero rows and zero gradients instead of torch's nan."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from opcheck import check_op

import tinytensor as tt
import tinytensor.functional as F

B_, H, T, HD = 3, 2, 6, 4
LENGTHS = [6, 4, 1]  # a full sequence, one padded by two, one by five
ATTENTION_MASK = np.array([[1] * n + [0] * (T - n) for n in LENGTHS])  # (b, t), 1 = real token


def _bool_mask(am: np.ndarray) -> np.ndarray:
    return am[:, None, None, :].astype(bool)  # (b, 1, 1, t): every query sees the real keys of its sequence


def _additive_mask(am: np.ndarray, fill: float) -> np.ndarray:
    return np.where(am[:, None, None, :] == 1, 0.0, fill)  # (b, 1, 1, t)


MASKS = {"bool": _bool_mask(ATTENTION_MASK), "additive_inf": _additive_mask(ATTENTION_MASK, -np.inf),
         "additive_min": _additive_mask(ATTENTION_MASK, np.finfo(np.float64).min)}


@pytest.mark.parametrize("kind", list(MASKS))
def test_padding_mask_matches_torch_float64(kind):
    mask = MASKS[kind]
    check_op(lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(mask)),
             lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
             [(B_, H, T, HD)] * 3, rtol=1e-10)


@pytest.mark.parametrize("kind", ["bool", "additive_inf"])
def test_masked_keys_get_zero_probability_and_zero_gradient(kind):
    rng = np.random.default_rng(1)
    q, k, v = (tt.Tensor(rng.standard_normal((B_, H, T, HD)), requires_grad=True) for _ in range(3))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=MASKS[kind])
    out.backward(rng.standard_normal(out.shape))
    pad = ATTENTION_MASK == 0  # (b, t)
    for t in (k, v):
        g = t.grad.numpy().transpose(0, 2, 1, 3)  # (b, t, h, hd)
        assert np.all(g[pad] == 0), "a padding key received gradient"
    # every real value does (a one-token sequence's key does not: a softmax over one score is constant)
    assert np.all(np.abs(v.grad.numpy().transpose(0, 2, 1, 3)[~pad]).max(axis=(-1, -2)) > 0)
    # a padding key's value cannot reach the output: change it and nothing moves
    v2 = v.numpy().copy()
    v2.transpose(0, 2, 1, 3)[pad] = 1e6
    out2 = F.scaled_dot_product_attention(tt.Tensor(q.numpy()), tt.Tensor(k.numpy()), tt.Tensor(v2),
                                          attn_mask=MASKS[kind])
    np.testing.assert_array_equal(out2.numpy(), out.numpy())


@pytest.mark.parametrize("kind", ["bool", "additive_inf"])
def test_all_padding_sequence_gives_zero_rows_and_gradients(kind):
    am = ATTENTION_MASK.copy()
    am[2] = 0  # the third sequence is nothing but padding: every one of its query rows may attend to nothing
    mask = _bool_mask(am) if kind == "bool" else _additive_mask(am, -np.inf)
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal((B_, H, T, HD)) for _ in range(3)]
    q, k, v = (tt.Tensor(a, requires_grad=True) for a in arrays)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    dout = rng.standard_normal(out.shape)
    out.backward(dout)
    assert np.all(out.numpy()[2] == 0)
    for t in (q, k, v):
        assert np.all(t.grad.numpy()[2] == 0) and np.isfinite(t.grad.numpy()).all()
    # the other sequences are untouched by the empty one: equal to torch on them alone
    tq, tk, tv = (torch.tensor(a[:2], requires_grad=True) for a in arrays)
    ref = TF.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch.tensor(mask[:2]))
    (ref * torch.tensor(dout[:2])).sum().backward()
    assert np.abs(out.numpy()[:2] - ref.detach().numpy()).max() <= 1e-14
    for ours, theirs in ((q, tq), (k, tk), (v, tv)):
        assert np.abs(ours.grad.numpy()[:2] - theirs.grad.numpy()).max() <= 1e-13


def test_padding_mask_with_dropout_keeps_padding_keys_at_zero():
    tt.random.manual_seed(0)
    rng = np.random.default_rng(3)
    q, k, v = (tt.Tensor(rng.standard_normal((B_, H, T, HD)), requires_grad=True) for _ in range(3))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=MASKS["bool"], dropout_p=0.3)
    out.backward(rng.standard_normal(out.shape))
    pad = ATTENTION_MASK == 0
    assert np.all(v.grad.numpy().transpose(0, 2, 1, 3)[pad] == 0)
    assert np.all(k.grad.numpy().transpose(0, 2, 1, 3)[pad] == 0)
