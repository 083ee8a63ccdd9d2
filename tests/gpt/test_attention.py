"""gpt/attention.py: every variant of the book's ch. 3 on numpy against torch (float64, forward and gradients),
the variants against each other (v1 == v2, wrapper == multi-head, explicit == fused), causality, dropout modes,
the KV-cache path, and the d_out/num_heads check."""
from __future__ import annotations

import numpy as np
import pytest

import backends
from gpt.attention import (CausalAttention, MultiHeadAttention, MultiHeadAttentionWrapper, SelfAttention_v1,
                           SelfAttention_v2)
from gpt.nn import to_numpy_any

NP = backends.get_backend("numpy", dtype="float64")
TORCH = backends.get_backend("torch", dtype="float64")
D_IN, CTX, T = 6, 8, 7

MAKERS = {
    "v1": lambda B: SelfAttention_v1(B, D_IN, 4, rng=np.random.default_rng(0)),
    "v2": lambda B: SelfAttention_v2(B, D_IN, 4, qkv_bias=True, rng=np.random.default_rng(0)),
    "causal": lambda B: CausalAttention(B, D_IN, 4, CTX, 0.0, qkv_bias=True, rng=np.random.default_rng(0)),
    "wrapper": lambda B: MultiHeadAttentionWrapper(B, D_IN, 2, CTX, 0.0, num_heads=3, rng=np.random.default_rng(0)),
    "mha": lambda B: MultiHeadAttention(B, D_IN, 6, CTX, 0.0, num_heads=3, qkv_bias=True,
                                        rng=np.random.default_rng(0)),
    "mha_explicit": lambda B: MultiHeadAttention(B, D_IN, 6, CTX, 0.0, num_heads=3, rng=np.random.default_rng(0),
                                                 use_sdpa=False),
}


def rel_err(a, b, floor: float = 0.0) -> float:
    a, b = to_numpy_any(a), to_numpy_any(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), floor, 1e-300))


def x_batch(b: int = 2, t: int = T) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(b, t, D_IN))


def run(B, module, x, dout):
    xt = B.tensor(x, requires_grad=True)
    out = module(xt)
    (out * B.tensor(dout)).sum().backward()
    grads = {n: p.grad for n, p in module.named_parameters()}
    grads["input"] = xt.grad
    return out, grads


@pytest.mark.parametrize("name", list(MAKERS))
def test_each_variant_matches_torch_in_float64(name):
    x = x_batch()
    a, b = MAKERS[name](NP), MAKERS[name](TORCH)
    out_shape = tuple(b(TORCH.tensor(x)).shape)
    dout = np.random.default_rng(2).normal(size=out_shape)
    out_np, g_np = run(NP, a, x, dout)
    out_t, g_t = run(TORCH, b, x, dout)
    assert out_np.shape == out_shape
    assert rel_err(out_np, out_t) <= 1e-12
    floor = 1e-6 * max(float(np.abs(to_numpy_any(g)).max()) for g in g_t.values())  # DESIGN §5 trap (1)
    errs = {k: rel_err(g_np[k], g_t[k], floor) for k in g_t}
    worst = max(errs, key=errs.get)
    assert errs[worst] <= 1e-10, f"{name}: worst gradient {worst} rel err {errs[worst]:.2e}"


def test_v2_with_v1s_weights_transposed_equals_v1():
    """The book's §3.4.2 exercise: Linear stores W transposed, so v2 loaded with v1's Wᵀ gives v1's output."""
    v1 = SelfAttention_v1(NP, D_IN, 4, rng=np.random.default_rng(3))
    v2 = SelfAttention_v2(NP, D_IN, 4, rng=np.random.default_rng(4))
    v2.load_state_dict({f"{w}.weight": to_numpy_any(getattr(v1, w)).T for w in ("W_query", "W_key", "W_value")})
    x = NP.tensor(x_batch()[0])  # (t, d_in): the book's unbatched input
    assert rel_err(v2(x), v1(x)) <= 1e-12


def _mha_from_heads(B, wrapper, nh, hd):
    """A MultiHeadAttention whose projections stack the wrapper's heads and whose out_proj is the identity."""
    mha = MultiHeadAttention(B, D_IN, nh * hd, CTX, 0.0, num_heads=nh, qkv_bias=True, rng=np.random.default_rng(9))
    sd = {}
    for w in ("W_query", "W_key", "W_value"):
        sd[f"{w}.weight"] = np.concatenate([to_numpy_any(getattr(h, w).weight) for h in wrapper.heads], axis=0)
        sd[f"{w}.bias"] = np.concatenate([to_numpy_any(getattr(h, w).bias) for h in wrapper.heads])
    sd["out_proj.weight"], sd["out_proj.bias"] = np.eye(nh * hd), np.zeros(nh * hd)
    mha.load_state_dict(sd)
    return mha


@pytest.mark.parametrize("B", [NP, TORCH], ids=["numpy", "torch"])
@pytest.mark.parametrize("use_sdpa", [True, False])
def test_wrapper_equals_multihead_with_equivalent_weights(B, use_sdpa):
    nh, hd = 3, 2
    wrapper = MultiHeadAttentionWrapper(B, D_IN, hd, CTX, 0.0, num_heads=nh, qkv_bias=True,
                                        rng=np.random.default_rng(5))
    mha = _mha_from_heads(B, wrapper, nh, hd)
    mha.use_sdpa = use_sdpa
    x = B.tensor(x_batch())
    assert rel_err(mha(x), wrapper(x)) <= 1e-12


@pytest.mark.parametrize("B", [NP, TORCH], ids=["numpy", "torch"])
def test_causal_attention_equals_one_head_fused_attention(B):
    head = CausalAttention(B, D_IN, 4, CTX, 0.0, qkv_bias=True, rng=np.random.default_rng(6))
    wrapper = MultiHeadAttentionWrapper(B, D_IN, 4, CTX, 0.0, num_heads=1, qkv_bias=True)
    wrapper.heads[0].load_state_dict(head.state_dict())
    mha = _mha_from_heads(B, wrapper, 1, 4)
    assert mha.use_sdpa
    x = B.tensor(x_batch())
    assert rel_err(mha(x), head(x)) <= 1e-12


@pytest.mark.parametrize("name", ["causal", "wrapper", "mha", "mha_explicit"])
def test_causal_variants_never_look_ahead(name):
    """Changing the last token changes no earlier output."""
    m = MAKERS[name](NP)
    x = x_batch()
    y = x.copy()
    y[:, -1] += 1.0
    a, b = to_numpy_any(m(NP.tensor(x))), to_numpy_any(m(NP.tensor(y)))
    assert np.array_equal(a[:, :-1], b[:, :-1])
    assert not np.allclose(a[:, -1], b[:, -1])


@pytest.mark.parametrize("B", [NP, TORCH], ids=["numpy", "torch"])
@pytest.mark.parametrize("use_sdpa", [True, False])
def test_dropout_zero_train_equals_eval_and_dropout_acts_only_in_train(B, use_sdpa):
    x = B.tensor(x_batch())
    m = MultiHeadAttention(B, D_IN, 6, CTX, 0.0, num_heads=3, rng=np.random.default_rng(0), use_sdpa=use_sdpa)
    assert np.array_equal(to_numpy_any(m.train()(x)), to_numpy_any(m.eval()(x)))
    c = CausalAttention(B, D_IN, 4, CTX, 0.0, rng=np.random.default_rng(0))
    assert np.array_equal(to_numpy_any(c.train()(x)), to_numpy_any(c.eval()(x)))
    d = MultiHeadAttention(B, D_IN, 6, CTX, 0.5, num_heads=3, rng=np.random.default_rng(0), use_sdpa=use_sdpa)
    B.manual_seed(0)
    assert not np.allclose(to_numpy_any(d.train()(x)), to_numpy_any(d.eval()(x)))
    assert np.array_equal(to_numpy_any(d.eval()(x)), to_numpy_any(m.eval()(x)))


class _Cache:
    """A single layer's cache with the LayerKVCache interface (pos + update), growing by concatenation."""

    def __init__(self, B):
        self.B, self.pos, self.k, self.v = B, 0, None, None

    def update(self, k, v):
        self.k = k if self.k is None else self.B.cat([self.k, k], dim=2)
        self.v = v if self.v is None else self.B.cat([self.v, v], dim=2)
        return self.k, self.v


@pytest.mark.parametrize("B", [NP, TORCH], ids=["numpy", "torch"])
@pytest.mark.parametrize("use_sdpa", [True, False])
def test_cached_chunks_equal_one_full_pass(B, use_sdpa):
    """Prefill 3 tokens, then chunks of 1 and 3: the bottom-right-aligned mask reproduces the full causal pass."""
    m = MultiHeadAttention(B, D_IN, 6, CTX, 0.0, num_heads=3, qkv_bias=True, rng=np.random.default_rng(0),
                           use_sdpa=use_sdpa)
    x = x_batch()
    full = to_numpy_any(m(B.tensor(x)))
    cache, outs = _Cache(B), []
    for lo, hi in [(0, 3), (3, 4), (4, 7)]:
        outs.append(to_numpy_any(m(B.tensor(x[:, lo:hi]), cache=cache)))
        cache.pos = hi
    assert rel_err(np.concatenate(outs, axis=1), full) <= 1e-12


def test_d_out_must_divide_into_heads():
    with pytest.raises(ValueError, match="d_out=6 must be divisible by num_heads=4"):
        MultiHeadAttention(NP, D_IN, 6, CTX, 0.0, num_heads=4)


def test_positions_past_the_context_length_are_refused():
    m = MAKERS["mha"](NP)
    with pytest.raises(ValueError, match="exceed context_length=8"):
        m(NP.tensor(np.zeros((1, 9, D_IN))))
