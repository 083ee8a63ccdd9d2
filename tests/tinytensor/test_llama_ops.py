"""The ops Llama 3 and Qwen3 add to GPT-2 (issue 14): rms_norm, silu, rotary_embedding and grouped-query attention
(scaled_dot_product_attention / flash_attention with enable_gqa). Each fused op vs torch (float64 ≤ 1e-10, float32
≤ 1e-5, outputs and every input's gradient under a random upstream gradient), vs its composite twin, vs central
finite differences in float64, plus RoPE's properties and the errors (the same exception type as torch's)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from opcheck import _make_inputs, check_op, check_raises, fused_and_composite

import tinytensor as tt
import tinytensor.functional as F
from tinytensor.gradcheck import gradcheck
from tinytensor.kernels import rotary as rope_kernel
from tinytensor.random import manual_seed

PRECISIONS = [(np.float64, 1e-10), (np.float32, 1e-5)]
P_IDS = ["f64", "f32"]
_rng = np.random.default_rng(14)
TINY = _rng.standard_normal((4, 6)) * 1e-8  # mean(x²) ~ 1e-16: the default eps (finfo.eps) matters here
WIDE = np.linspace(-40.0, 40.0, 161)  # silu far into both tails (σ underflows / saturates)
BOOL_MASK = _rng.random((5, 5)) < 0.7
np.fill_diagonal(BOOL_MASK, True)  # every query keeps at least one key
HEAD_MASK = _rng.standard_normal((2, 6, 5, 5))  # an additive mask that differs per query head
BOTTOM_RIGHT = np.tril(np.ones((3, 7), dtype=bool), k=7 - 3)  # a KV cache: 3 new queries after 4 cached keys
Q6, KV2, KV3 = (2, 6, 5, 4), (2, 2, 5, 4), (2, 3, 5, 4)  # 6 query heads; 2 or 3 key/value heads


def rope_tables(head_dim: int, positions: np.ndarray, theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin (t, hd) in Hugging Face's layout: angle pos·theta^(−2i/hd) for pair i, repeated in both halves."""
    inv_freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (hd/2,)
    angles = np.outer(positions, inv_freq)  # (t, hd/2)
    emb = np.concatenate([angles, angles], axis=-1)  # (t, hd)
    return np.cos(emb), np.sin(emb)


COS, SIN = rope_tables(8, np.arange(3, 8))  # positions 3..7: a cache offset of 3


def hf_rotary(x, cos, sin):
    """Hugging Face Llama's apply_rotary_pos_emb for one tensor, in torch: x·cos + rotate_half(x)·sin."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def sdpa(**kw):
    """(torch's sdpa, ours) with the same keywords; array masks become torch tensors on torch's side."""
    tkw = {k: (torch.tensor(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}

    def theirs(q, k, v):
        if isinstance(tkw.get("attn_mask"), torch.Tensor) and tkw["attn_mask"].is_floating_point():
            return TF.scaled_dot_product_attention(q, k, v, **{**tkw, "attn_mask": tkw["attn_mask"].to(q.dtype)})
        return TF.scaled_dot_product_attention(q, k, v, **tkw)

    def ours(q, k, v):
        m = kw.get("attn_mask")
        if isinstance(m, np.ndarray) and m.dtype.kind == "f":
            return F.scaled_dot_product_attention(q, k, v, **{**kw, "attn_mask": m.astype(q.dtype)})
        return F.scaled_dot_product_attention(q, k, v, **kw)

    return theirs, ours


GQA = dict(enable_gqa=True)
# (name, torch_fn, ours_fn, inputs)
CASES = [
    ("rms_norm", lambda x, w: TF.rms_norm(x, (6,), w, 1e-5), lambda x, w: F.rms_norm(x, (6,), w, 1e-5),
     [(2, 3, 6), (6,)]),
    ("rms_norm_default_eps", lambda x, w: TF.rms_norm(x, [6], w), lambda x, w: F.rms_norm(x, [6], w), [TINY, (6,)]),
    ("rms_norm_no_weight", lambda x: TF.rms_norm(x, (6,)), lambda x: F.rms_norm(x, 6), [(4, 6)]),
    ("rms_norm_two_dims", lambda x, w: TF.rms_norm(x, (3, 4), w, 1e-6), lambda x, w: F.rms_norm(x, (3, 4), w, 1e-6),
     [(2, 3, 4), (3, 4)]),
    ("silu", TF.silu, F.silu, [(3, 7)]),
    ("silu_tails", TF.silu, F.silu, [WIDE]),
    ("rotary_real_tables", hf_rotary, F.rotary_embedding, [(2, 3, 5, 8), COS, SIN]),
    ("rotary_random_tables", hf_rotary, F.rotary_embedding, [(2, 3, 5, 8), (5, 8), (5, 8)]),
    ("rotary_per_batch_tables", hf_rotary, F.rotary_embedding, [(2, 3, 5, 8), (2, 1, 5, 8), (2, 1, 5, 8)]),
    ("gqa_causal", *sdpa(is_causal=True, **GQA), [Q6, KV2, KV2]),
    ("gqa_kv_heads_differ", *sdpa(is_causal=True, **GQA), [Q6, KV3, KV2]),
    ("gqa_multi_query", *sdpa(is_causal=True, **GQA), [Q6, (2, 1, 5, 4), (2, 1, 5, 4)]),
    ("gqa_bool_mask_scale", *sdpa(attn_mask=BOOL_MASK, scale=0.3, **GQA), [Q6, KV2, (2, 2, 5, 7)]),
    ("gqa_per_head_float_mask", *sdpa(attn_mask=HEAD_MASK, **GQA), [Q6, KV3, KV3]),
    ("gqa_kv_cache", *sdpa(attn_mask=BOTTOM_RIGHT, **GQA), [(2, 6, 3, 4), (2, 2, 7, 4), (2, 2, 7, 4)]),
    ("gqa_broadcast_batch", *sdpa(is_causal=True, **GQA), [Q6, (1, 2, 5, 4), (1, 2, 5, 4)]),
    ("gqa_3d", *sdpa(is_causal=True, **GQA), [(6, 5, 4), (2, 5, 4), (2, 5, 4)]),
    ("gqa_equal_heads", *sdpa(is_causal=True, **GQA), [Q6, Q6, Q6]),
    ("flash_gqa_causal", lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
     lambda q, k, v: F.flash_attention(q, k, v, is_causal=True, enable_gqa=True), [Q6, KV3, KV2]),
    ("flash_gqa_tiles", lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
     lambda q, k, v: F.flash_attention(q, k, v, is_causal=True, enable_gqa=True),
     [(1, 4, 130, 4), (1, 2, 130, 4), (1, 2, 130, 4)]),  # 130 > BLOCK = 128: two query and two key tiles
]
NAMES = [c[0] for c in CASES]


@pytest.mark.parametrize("name,torch_fn,ours_fn,inputs", CASES, ids=NAMES)
@pytest.mark.parametrize("dtype,rtol", PRECISIONS, ids=P_IDS)
def test_fused_vs_torch(name, torch_fn, ours_fn, inputs, dtype, rtol):
    check_op(torch_fn, ours_fn, inputs, rtol=rtol, dtype=dtype)


COMPOSITES = [
    ("rms_norm", lambda x, w: TF.rms_norm(x, (6,), w), lambda x, w: F.rms_norm_composite(x, (6,), w),
     [(2, 3, 6), (6,)]),
    ("rms_norm_two_dims", lambda x: TF.rms_norm(x, (3, 4), eps=1e-6), lambda x: F.rms_norm_composite(x, (3, 4), eps=1e-6),
     [(2, 3, 4)]),
    ("silu", TF.silu, F.silu_composite, [(3, 7)]),
    ("rotary", hf_rotary, F.rotary_embedding_composite, [(2, 3, 5, 8), (5, 8), (5, 8)]),
    ("attention_gqa", lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
     lambda q, k, v: F.attention_composite(q, k, v, is_causal=True, enable_gqa=True), [Q6, KV3, KV2]),
]


@pytest.mark.parametrize("name,torch_fn,ours_fn,inputs", COMPOSITES, ids=[c[0] for c in COMPOSITES])
@pytest.mark.parametrize("dtype,rtol", PRECISIONS, ids=P_IDS)
def test_composite_vs_torch(name, torch_fn, ours_fn, inputs, dtype, rtol):
    check_op(torch_fn, ours_fn, inputs, rtol=rtol, dtype=dtype)


FD_CASES = [c for c in CASES if c[0] not in ("silu_tails", "flash_gqa_tiles", "rms_norm_default_eps")]


@pytest.mark.parametrize("name,torch_fn,ours_fn,inputs", FD_CASES, ids=[c[0] for c in FD_CASES])
def test_fused_finite_differences(name, torch_fn, ours_fn, inputs):
    arrays = _make_inputs(inputs, np.float64, seed=5)
    gradcheck(ours_fn, [tt.Tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays])



FUSED_COMPOSITE = [
    ("rms_norm", lambda x, w: F.rms_norm(x, 6, w), lambda x, w: F.rms_norm_composite(x, 6, w), [(3, 4, 6), (6,)]),
    ("silu", F.silu, F.silu_composite, [(4, 9)]),
    ("rotary", F.rotary_embedding, F.rotary_embedding_composite, [(2, 3, 5, 8), (5, 8), (5, 8)]),
    ("gqa_causal_dropout", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=0.4,
                                                                          enable_gqa=True),
     lambda q, k, v: F.attention_composite(q, k, v, is_causal=True, dropout_p=0.4, enable_gqa=True), [Q6, KV3, KV2]),
    ("gqa_mask_dropout", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=BOOL_MASK, dropout_p=0.25,
                                                                        enable_gqa=True),
     lambda q, k, v: F.attention_composite(q, k, v, attn_mask=BOOL_MASK, dropout_p=0.25, enable_gqa=True),
     [Q6, KV2, KV2]),
]


@pytest.mark.parametrize("name,fused,composite,inputs", FUSED_COMPOSITE, ids=[c[0] for c in FUSED_COMPOSITE])
def test_fused_equals_composite(name, fused, composite, inputs):
    arrays = _make_inputs(inputs, np.float64, seed=11)
    for a, b in zip(*fused_and_composite(fused, composite, arrays)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13 * np.abs(b).max())


def test_gqa_equals_attention_over_repeated_kv_heads_with_dropout():
    """enable_gqa == plain attention over K, V repeated to the query heads (torch's repeat_interleave), dropout
    included; the repeated heads' gradients, summed per group, are K's and V's."""
    q, k, v = _make_inputs([Q6, KV2, KV3], np.float64, seed=3)
    for fn in (F.scaled_dot_product_attention, F.flash_attention):
        a, b = fused_and_composite(
            lambda q_, k_, v_: fn(q_, k_, v_, is_causal=True, dropout_p=0.3, enable_gqa=True),
            lambda q_, k_, v_: fn(q_, F.repeat_heads_composite(k_, 3), F.repeat_heads_composite(v_, 2),
                                  is_causal=True, dropout_p=0.3), [q, k, v], seed=9)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-13 * np.abs(y).max())


def test_gqa_dropout_finite_differences():
    arrays = _make_inputs([(1, 4, 4, 3), (1, 2, 4, 3), (1, 2, 4, 3)], np.float64, seed=2)
    for attend in (F.scaled_dot_product_attention, F.flash_attention):
        def fn(q, k, v):
            manual_seed(42)  # the same keep-mask on every call
            return attend(q, k, v, is_causal=True, dropout_p=0.3, enable_gqa=True)

        gradcheck(fn, [tt.Tensor(a, requires_grad=True) for a in arrays])


def test_float32_stays_float32():
    x = tt.Tensor(np.ones((1, 2, 3, 4), np.float32), requires_grad=True)
    w = tt.Tensor(np.ones(4, np.float32), requires_grad=True)
    c = tt.Tensor(np.ones((3, 4), np.float32))
    kv = tt.Tensor(np.ones((1, 1, 3, 4), np.float32), requires_grad=True)
    outs = [F.rms_norm(x, 4, w), F.rms_norm(x, 4), F.silu(x), F.rotary_embedding(x, c, c),
            F.scaled_dot_product_attention(x, kv, kv, is_causal=True, enable_gqa=True),
            F.flash_attention(x, kv, kv, is_causal=True, enable_gqa=True)]
    for o in outs:
        assert o.dtype == np.float32
        o.backward(np.ones(o.shape, np.float32))
    assert x.grad.dtype == w.grad.dtype == kv.grad.dtype == np.float32


def test_rms_norm_default_eps_is_finfo_eps():
    for dtype in (np.float32, np.float64):
        x = tt.Tensor(TINY.astype(dtype))
        eps = float(np.finfo(dtype).eps)
        assert np.array_equal(F.rms_norm(x, 6).numpy(), F.rms_norm(x, 6, eps=eps).numpy())
        assert not np.allclose(F.rms_norm(x, 6).numpy(), F.rms_norm(x, 6, eps=1e-6).numpy())


def test_silu_has_no_overflow_warnings_and_exact_tails():
    x = tt.Tensor(np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0]), requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is the right answer
        out = F.silu(x)
        out.backward(np.ones(5))
    np.testing.assert_array_equal(out.numpy()[[2, 3, 4]], [0.0, 50.0, 1000.0])
    assert abs(out.numpy()[1] - (-50.0 * np.exp(-50.0))) < 1e-30
    np.testing.assert_allclose(x.grad.numpy()[[2, 3, 4]], [0.5, 1.0, 1.0])


# ---------------------------------------------------------------- RoPE's properties
def test_rotary_preserves_pair_norms_and_backward_is_the_inverse_rotation():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 8))
    out = rope_kernel.rotary_forward(x, COS, SIN)
    pair_norm = lambda a: a[..., :4] ** 2 + a[..., 4:] ** 2  # noqa: E731 - each rotated pair's squared length
    np.testing.assert_allclose(pair_norm(out), pair_norm(x), rtol=1e-13)
    dout = np.random.default_rng(1).standard_normal(x.shape)
    dx, _, _ = rope_kernel.rotary_backward(dout, x, COS, SIN)
    np.testing.assert_allclose(dx, rope_kernel.rotary_forward(dout, COS, -SIN), rtol=0, atol=1e-14)  # R(−θ)
    back, _, _ = rope_kernel.rotary_backward(out, x, COS, SIN)
    np.testing.assert_allclose(back, x, rtol=0, atol=1e-14)  # orthogonal: Rᵀ undoes R


def test_rotary_equals_the_complex_multiplication_form():
    """RoPE as Su et al. write it (eq. 34 in complex form): the pair (x₁ᵢ, x₂ᵢ) as x₁ᵢ + i·x₂ᵢ times e^(iθ)."""
    x = np.random.default_rng(2).standard_normal((1, 2, 5, 8))
    angles = np.outer(np.arange(3, 8), 10000.0 ** (-np.arange(0, 8, 2) / 8))  # (t, hd/2)
    z = (x[..., :4] + 1j * x[..., 4:]) * np.exp(1j * angles)
    ours = F.rotary_embedding(tt.Tensor(x), COS, SIN).numpy()
    np.testing.assert_allclose(ours, np.concatenate([z.real, z.imag], axis=-1), rtol=0, atol=1e-14)


def test_rotary_scores_depend_only_on_the_relative_position():
    """⟨RoPE(q, m), RoPE(k, n)⟩ is a function of m − n (Su et al. §3.2): shifting both positions changes nothing."""
    rng = np.random.default_rng(3)
    q, k = (tt.Tensor(rng.standard_normal((1, 1, 1, 8))) for _ in range(2))

    def score(m: int, n: int) -> float:
        cm, sm = rope_tables(8, np.array([m]))
        cn, sn = rope_tables(8, np.array([n]))
        return float((F.rotary_embedding(q, cm, sm).numpy() * F.rotary_embedding(k, cn, sn).numpy()).sum())

    assert abs(score(7, 3) - score(104, 100)) < 1e-12
    assert abs(score(7, 3) - score(3, 7)) > 1e-3  # but not symmetric: the offset's sign matters


def test_rotary_tables_need_no_gradient():
    x = tt.Tensor(np.random.default_rng(4).standard_normal((2, 3, 5, 8)), requires_grad=True)
    out = F.rotary_embedding(x, COS, SIN)  # plain arrays: constants
    out.backward(np.ones(out.shape))
    assert x.grad.shape == x.shape


# ---------------------------------------------------------------- errors
def test_rms_norm_bad_shapes_raise_like_torch():
    err = check_raises(lambda x: TF.rms_norm(x, (4,)), lambda x: F.rms_norm(x, (4,)), [(3, 5)])
    assert isinstance(err, ValueError) and "normalized_shape=[4] must equal the input's trailing dims" in str(err)
    err = check_raises(lambda x, w: TF.rms_norm(x, (5,), w), lambda x, w: F.rms_norm(x, (5,), w), [(3, 5), (4,)])
    assert "weight of shape (4,) must have the shape normalized_shape=[5]" in str(err)
    check_raises(lambda x: TF.rms_norm(x, (2, 3, 5)), lambda x: F.rms_norm(x, (2, 3, 5)), [(3, 5)])


def test_gqa_heads_that_do_not_divide_raise_like_torch():
    err = check_raises(*sdpa(**GQA), [Q6, (2, 4, 5, 4), (2, 4, 5, 4)])
    assert "key heads (4) and value heads (4) must each divide the number of query heads (6)" in str(err)
    check_raises(*sdpa(**GQA), [Q6, KV2, (2, 4, 5, 4)])  # the value heads alone
    with pytest.raises(RuntimeError, match="must each divide"):
        F.flash_attention(*(tt.Tensor(a) for a in _make_inputs([Q6, (2, 4, 5, 4), (2, 4, 5, 4)], np.float64, 0)),
                          enable_gqa=True)


def test_fewer_kv_heads_without_enable_gqa_names_the_flag():
    err = check_raises(*sdpa(is_causal=True), [Q6, KV2, KV2])
    assert isinstance(err, ValueError) and "pass enable_gqa=True" in str(err)


def test_gqa_needs_a_heads_dim_as_torch():
    check_raises(*sdpa(**GQA), [(5, 4), (5, 4), (5, 4)])


def test_flash_gqa_needs_equal_batch_shapes():
    with pytest.raises(ValueError, match="flash_attention needs equal batch shapes"):
        F.flash_attention(*(tt.Tensor(a) for a in _make_inputs([Q6, (1, 2, 5, 4), (1, 2, 5, 4)], np.float64, 0)),
                          enable_gqa=True)


@pytest.mark.parametrize("fn", [F.rotary_embedding, F.rotary_embedding_composite], ids=["fused", "composite"])
def test_rotary_bad_shapes(fn):
    x = tt.Tensor(np.zeros((1, 2, 5, 8)))
    with pytest.raises(ValueError, match=r"must be even; got x of shape \(1, 2, 5, 7\)"):
        fn(tt.Tensor(np.zeros((1, 2, 5, 7))), np.zeros((5, 7)), np.zeros((5, 7)))
    with pytest.raises(ValueError, match=r"cos \(5, 8\) and sin \(4, 8\) must have the same shape"):
        fn(x, np.zeros((5, 8)), np.zeros((4, 8)))
    with pytest.raises(ValueError, match=r"of shape \(6, 8\) do not broadcast to x of shape \(1, 2, 5, 8\); pass "
                                         r"tables of shape \(t, head_dim\) = \(5, 8\)"):
        fn(x, np.zeros((6, 8)), np.zeros((6, 8)))
    with pytest.raises(ValueError, match="do not broadcast"):  # tables that would enlarge x
        fn(x, np.zeros((3, 1, 5, 8)), np.zeros((3, 1, 5, 8)))


def test_silu_inplace_and_mixed_dtypes_are_refused():
    x32 = tt.Tensor(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"silu\(inplace=True\)"):
        F.silu(x32, inplace=True)
    with pytest.raises(TypeError, match="dtype mismatch"):
        F.rms_norm(x32, 4, tt.Tensor(np.ones(4)))
    with pytest.raises(TypeError, match="dtype mismatch"):
        F.rotary_embedding(x32, np.ones((2, 4)), np.ones((2, 4)))


@pytest.mark.gpu
@pytest.mark.parametrize("name,torch_fn,ours_fn,inputs", CASES, ids=NAMES)
def test_fused_on_cupy_equals_numpy_in_float64(name, torch_fn, ours_fn, inputs):
    import cupy

    arrays = _make_inputs(inputs, np.float64, seed=5)
    results = []
    for xp in (np, cupy):
        ins = [tt.Tensor(xp.asarray(a), requires_grad=a.dtype.kind == "f") for a in arrays]
        out = ours_fn(*ins)
        out.backward(xp.asarray(np.random.default_rng(1).standard_normal(out.shape)))
        results.append([cupy.asnumpy(out.data)] + [cupy.asnumpy(t.grad.data) for t in ins if t.requires_grad])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12 * np.abs(a).max())
