"""Fused ops (tinytensor.functional over tinytensor.kernels) vs torch.nn.functional (float64 ≤ 1e-10, float32
≤ 1e-5, outputs and every input gradient under a random upstream gradient), vs their composite twins, vs central
finite differences in float64, plus dropout's statistics and the error messages for bad arguments."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from opcheck import _make_inputs, check_op, check_raises, fused_and_composite

import tinytensor as tt
import tinytensor.functional as F
from tinytensor.gradcheck import GradcheckError, gradcheck
from tinytensor.random import manual_seed

PRECISIONS = [(np.float64, 1e-10), (np.float32, 1e-5)]
P_IDS = ["f64", "f32"]
_rng = np.random.default_rng(7)
TARGETS = np.array([3, 0, 4, 4, 1, 2])
TARGETS_IGNORED = np.array([3, -100, 4, 4, -100, 2])
TARGETS_3D = np.array([[1, 0, -100, 2], [4, -100, 4, 3]])  # (N=2, d1=4) for input (2, 5, 4)
IDS = np.array([[1, 3, 3], [0, 9, 1]])  # repeated ids: their gradients must add up
Q, KV, HD = (2, 3, 5, 4), (2, 3, 5, 4), 4
BOOL_MASK = _rng.random((5, 5)) < 0.7
np.fill_diagonal(BOOL_MASK, True)  # every query keeps at least one key
BOTTOM_RIGHT = np.tril(np.ones((3, 7), dtype=bool), k=7 - 3)  # a KV cache: 3 new queries see all 4 cached keys
FLOAT_MASK = _rng.standard_normal((5, 5))
WIDE = np.array([[-800.0, -40.0, -3.0, -1e-9, 0.0, 1e-9, 2.5, 40.0, 800.0]])  # no overflow at ±800

# (name, torch_fn, ours_fn, inputs)
CASES = [
    ("linear", TF.linear, F.linear, [(2, 3, 5), (4, 5), (4,)]),
    ("linear_no_bias", TF.linear, F.linear, [(2, 3, 5), (4, 5)]),
    ("linear_1d_input", TF.linear, F.linear, [(5,), (4, 5), (4,)]),
    ("embedding", lambda i, w: TF.embedding(i, w), lambda i, w: F.embedding(i, w), [IDS, (10, 4)]),
    ("layer_norm", lambda x, w, b: TF.layer_norm(x, (6,), w, b), lambda x, w, b: F.layer_norm(x, (6,), w, b),
     [(2, 3, 6), (6,), (6,)]),
    ("layer_norm_no_affine", lambda x: TF.layer_norm(x, (6,)), lambda x: F.layer_norm(x, 6), [(4, 6)]),
    ("layer_norm_bias_only", lambda x, b: TF.layer_norm(x, (6,), None, b),
     lambda x, b: F.layer_norm(x, (6,), None, b), [(4, 6), (6,)]),
    ("gelu_none", TF.gelu, F.gelu, [(3, 7)]),
    ("gelu_tanh", lambda x: TF.gelu(x, approximate="tanh"), lambda x: F.gelu(x, approximate="tanh"), [(3, 7)]),
    ("softmax_last", lambda x: TF.softmax(x, dim=-1), lambda x: F.softmax(x, dim=-1), [(2, 3, 5)]),
    ("softmax_dim0", lambda x: TF.softmax(x, dim=0), lambda x: F.softmax(x, dim=0), [(2, 3, 5)]),
    ("log_softmax_last", lambda x: TF.log_softmax(x, dim=-1), lambda x: F.log_softmax(x, dim=-1), [(2, 3, 5)]),
    ("log_softmax_dim1", lambda x: TF.log_softmax(x, dim=1), lambda x: F.log_softmax(x, dim=1), [(2, 3, 5)]),
    ("logsigmoid", TF.logsigmoid, F.logsigmoid, [(3, 7)]),
    ("logsigmoid_wide", TF.logsigmoid, F.logsigmoid, [WIDE]),
    ("cross_entropy", TF.cross_entropy, F.cross_entropy, [(6, 5), TARGETS]),
    ("cross_entropy_ignore", TF.cross_entropy, F.cross_entropy, [(6, 5), TARGETS_IGNORED]),
    ("cross_entropy_ignore_sum", lambda x, t: TF.cross_entropy(x, t, reduction="sum"),
     lambda x, t: F.cross_entropy(x, t, reduction="sum"), [(6, 5), TARGETS_IGNORED]),
    ("cross_entropy_ignore_none", lambda x, t: TF.cross_entropy(x, t, reduction="none"),
     lambda x, t: F.cross_entropy(x, t, reduction="none"), [(6, 5), TARGETS_IGNORED]),
    ("cross_entropy_custom_ignore", lambda x, t: TF.cross_entropy(x, t, ignore_index=4),
     lambda x, t: F.cross_entropy(x, t, ignore_index=4), [(6, 5), TARGETS]),
    ("cross_entropy_all_ignored_nan", TF.cross_entropy, F.cross_entropy, [(3, 5), np.full(3, -100)]),
    ("cross_entropy_3d", TF.cross_entropy, F.cross_entropy, [(2, 5, 4), TARGETS_3D]),
    ("cross_entropy_3d_none", lambda x, t: TF.cross_entropy(x, t, reduction="none"),
     lambda x, t: F.cross_entropy(x, t, reduction="none"), [(2, 5, 4), TARGETS_3D]),
    ("cross_entropy_1d", TF.cross_entropy, F.cross_entropy, [(5,), np.array(2)]),
    ("sdpa_causal", lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True),
     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), [Q, KV, KV]),
    ("sdpa_no_mask_scale", lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, scale=0.3),
     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.3), [Q, KV, (2, 3, 5, 6)]),
    ("sdpa_bool_mask", lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(BOOL_MASK)),
     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=BOOL_MASK), [Q, KV, KV]),
    ("sdpa_kv_cache_bottom_right", lambda q, k, v: TF.scaled_dot_product_attention(
        q, k, v, attn_mask=torch.tensor(BOTTOM_RIGHT)),
     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=BOTTOM_RIGHT),
     [(2, 3, 3, 4), (2, 3, 7, 4), (2, 3, 7, 4)]),
    ("sdpa_causal_tq_lt_tk_top_left", lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True),
     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), [(2, 3, 3, 4), (2, 3, 7, 4),
                                                                                (2, 3, 7, 4)]),
    ("sdpa_broadcast_kv", lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True),
     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), [Q, (1, 3, 5, 4), (1, 3, 5, 4)]),
]
CASES.append((  # an additive mask is a constant here (no gradient), cast to the inputs' dtype
    "sdpa_float_mask",
    lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(FLOAT_MASK).to(q.dtype)),
    lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=FLOAT_MASK.astype(q.dtype)), [Q, KV, KV]))
NAMES = [c[0] for c in CASES]


@pytest.mark.parametrize("name,torch_fn,ours_fn,inputs", CASES, ids=NAMES)
@pytest.mark.parametrize("dtype,rtol", PRECISIONS, ids=P_IDS)
def test_fused_vs_torch(name, torch_fn, ours_fn, inputs, dtype, rtol, kernels):
    check_op(torch_fn, ours_fn, inputs, rtol=rtol, dtype=dtype)


FD_CASES = [c for c in CASES if c[0] != "cross_entropy_all_ignored_nan"]  # that loss is nan by definition


@pytest.mark.parametrize("name,torch_fn,ours_fn,inputs", FD_CASES, ids=[c[0] for c in FD_CASES])
def test_fused_finite_differences(name, torch_fn, ours_fn, inputs, kernels):
    arrays = _make_inputs(inputs, np.float64, seed=5)
    gradcheck(ours_fn, [tt.Tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays])


COMPOSITES = [
    ("layer_norm", lambda x, w, b: TF.layer_norm(x, (6,), w, b),
     lambda x, w, b: F.layer_norm_composite(x, (6,), w, b), [(2, 3, 6), (6,), (6,)]),
    ("gelu_tanh", lambda x: TF.gelu(x, approximate="tanh"), F.gelu_composite, [(3, 7)]),
    ("softmax", lambda x: TF.softmax(x, dim=1), lambda x: F.softmax_composite(x, 1), [(2, 3, 5)]),
    ("logsigmoid", TF.logsigmoid, F.logsigmoid_composite, [(3, 7)]),
    ("log_softmax", lambda x: TF.log_softmax(x, dim=-1), lambda x: F.log_softmax_composite(x, -1), [(2, 3, 5)]),
    ("cross_entropy_ignore", TF.cross_entropy, F.cross_entropy_composite, [(6, 5), TARGETS_IGNORED]),
    ("cross_entropy_3d_none", lambda x, t: TF.cross_entropy(x, t, reduction="none"),
     lambda x, t: F.cross_entropy_composite(x, t, reduction="none"), [(2, 5, 4), TARGETS_3D]),
    ("attention_causal", lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True),
     lambda q, k, v: F.attention_composite(q, k, v, is_causal=True), [Q, KV, KV]),
    ("attention_bool_mask", lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(
        BOOL_MASK)), lambda q, k, v: F.attention_composite(q, k, v, attn_mask=BOOL_MASK), [Q, KV, KV]),
    ("attention_kv_cache", lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(
        BOTTOM_RIGHT)), lambda q, k, v: F.attention_composite(q, k, v, attn_mask=BOTTOM_RIGHT),
     [(2, 3, 3, 4), (2, 3, 7, 4), (2, 3, 7, 4)]),
]


@pytest.mark.parametrize("name,torch_fn,ours_fn,inputs", COMPOSITES, ids=[c[0] for c in COMPOSITES])
@pytest.mark.parametrize("dtype,rtol", PRECISIONS, ids=P_IDS)
def test_composite_vs_torch(name, torch_fn, ours_fn, inputs, dtype, rtol):
    check_op(torch_fn, ours_fn, inputs, rtol=rtol, dtype=dtype)



@pytest.mark.parametrize("kwargs", [dict(is_causal=True), dict(attn_mask=BOOL_MASK), dict(is_causal=True,
                                    dropout_p=0.4), dict(attn_mask=BOOL_MASK, dropout_p=0.25, scale=0.7)],
                         ids=["causal", "mask", "causal_dropout", "mask_dropout_scale"])
def test_fused_attention_equals_composite(kwargs):
    arrays = _make_inputs([Q, KV, KV], np.float64, seed=11)
    fused, comp = fused_and_composite(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **kwargs),
                                       lambda q, k, v: F.attention_composite(q, k, v, **kwargs), arrays)
    for a, b in zip(fused, comp):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13 * np.abs(b).max())


def test_attention_dropout_finite_differences():
    arrays = _make_inputs([(1, 2, 4, 3)] * 3, np.float64, seed=2)

    def fn(q, k, v):
        manual_seed(42)  # the same keep-mask on every call
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=0.3)

    gradcheck(fn, [tt.Tensor(a, requires_grad=True) for a in arrays])


def test_attention_dropout_zeroes_weights_and_rescales():
    manual_seed(3)
    q = tt.Tensor(np.zeros((1, 1, 6, 2)))  # equal scores: causal weights 1/(i+1) per row
    v = tt.Tensor(np.eye(6)[None, None])  # V = I, so the output is the dropped-out weight matrix itself
    out = F.scaled_dot_product_attention(q, q, v, is_causal=True, dropout_p=0.5).numpy()[0, 0]
    weights = np.tril(np.ones((6, 6))) / np.arange(1, 7)[:, None]
    assert np.all((out == 0) | np.isclose(out, 2 * weights))  # each weight dropped or scaled by 1/(1 − p)
    assert 0 < np.count_nonzero(out) < np.count_nonzero(weights)


def test_logsigmoid_keeps_relative_precision_far_from_zero():
    # logσ(40) = −e^(−40)(1 − …): a plain log(1 + e^(−x)) rounds it to 0; the kernel's log1p keeps every digit
    x = tt.Tensor(np.array([40.0, 700.0, -700.0]), requires_grad=True)
    out = F.logsigmoid(x)
    ref = TF.logsigmoid(torch.tensor([40.0, 700.0, -700.0], dtype=torch.float64))
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-14)
    out.backward(np.ones(3))
    np.testing.assert_allclose(x.grad.numpy(), [np.exp(-40.0) / (1 + np.exp(-40.0)), np.exp(-700.0), 1.0], rtol=1e-14)


def test_fully_masked_attention_row_gives_zeros():
    arrays = _make_inputs([Q, KV, KV], np.float64, seed=4)
    mask = BOOL_MASK.copy()
    mask[2] = False  # query 2 may attend to nothing
    q, k, v = (tt.Tensor(a, requires_grad=True) for a in arrays)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out.backward(np.ones(out.shape))
    assert np.all(out.numpy()[..., 2, :] == 0)
    assert all(np.isfinite(t.grad.numpy()).all() for t in (q, k, v))
    assert np.all(q.grad.numpy()[..., 2, :] == 0)


def test_gelu_erf_matches_torch_to_1e_10_over_a_wide_range(kernels):
    x = np.linspace(-12, 12, 2001)
    check_op(TF.gelu, F.gelu, [x], rtol=1e-10)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_statistics_and_scaling(p):
    manual_seed(0)
    x = tt.Tensor(np.ones((400, 500)), requires_grad=True)
    out = F.dropout(x, p=p)
    y = out.numpy()
    kept = y != 0
    assert abs(1 - kept.mean() - p) < 0.01  # fraction dropped ≈ p (200k draws: σ ≈ 0.001)
    assert np.allclose(y[kept], 1 / (1 - p))  # survivors scaled by 1/(1 − p)
    assert abs(y.mean() - 1) < 0.02  # expectation preserved
    g = np.random.default_rng(0).standard_normal(y.shape)
    out.backward(g)
    np.testing.assert_allclose(x.grad.numpy(), np.where(kept, g / (1 - p), 0), rtol=1e-15)  # the same mask


def test_dropout_identity_when_not_training_or_p_zero():
    x = tt.Tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    assert F.dropout(x, p=0.5, training=False) is x
    assert F.dropout(x, p=0.0) is x


def test_dropout_p_one_gives_zeros_as_torch():
    x = tt.Tensor(np.ones((3, 4), np.float32))
    out = F.dropout(x, p=1.0)
    assert out.dtype == np.float32 and np.all(out.numpy() == 0)


def test_dropout_is_reproducible_with_manual_seed():
    x = tt.Tensor(np.ones((50, 50)))
    manual_seed(123)
    a = F.dropout(x, 0.5).numpy()
    b = F.dropout(x, 0.5).numpy()
    manual_seed(123)
    c = F.dropout(x, 0.5).numpy()
    assert np.array_equal(a, c) and not np.array_equal(a, b)


def test_embedding_repeated_ids_accumulate():
    w = tt.Tensor(np.zeros((4, 2)), requires_grad=True)
    F.embedding(np.array([[1, 3, 1], [1, 0, 3]]), w).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [[1, 1], [3, 3], [0, 0], [2, 2]])


def test_float32_stays_float32_in_fused_ops():
    x = tt.Tensor(np.ones((2, 4), np.float32), requires_grad=True)
    w = tt.Tensor(np.ones((3, 4), np.float32), requires_grad=True)
    outs = [F.linear(x, w), F.layer_norm(x, 4), F.gelu(x), F.gelu(x, approximate="tanh"), F.softmax(x, -1),
            F.log_softmax(x, -1), F.cross_entropy(x, np.array([0, 3])), F.dropout(x, 0.5),
            F.scaled_dot_product_attention(x[None], x[None], x[None], is_causal=True, dropout_p=0.1)]
    for o in outs:
        assert o.dtype == np.float32
        o.backward(np.ones(o.shape, np.float32))
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32


# ---------------------------------------------------------------- errors
def test_embedding_id_out_of_range():
    err = check_raises(lambda i, w: TF.embedding(i, w), lambda i, w: F.embedding(i, w),
                       [np.array([[1, 60000]]), (50, 4)])
    assert "token id 60000 is out of range for an embedding of 50 rows" in str(err)
    with pytest.raises(IndexError, match="token id -1"):
        F.embedding(np.array([-1]), tt.Tensor(np.zeros((5, 2))))
    with pytest.raises(TypeError, match="integers"):
        F.embedding(np.array([1.0]), tt.Tensor(np.zeros((5, 2))))


def test_cross_entropy_target_out_of_range():
    err = check_raises(TF.cross_entropy, F.cross_entropy, [(3, 5), np.array([0, 7, 1])])
    assert "Target 7 is out of bounds for 5 classes" in str(err)


def test_cross_entropy_bad_arguments():
    x = tt.Tensor(np.zeros((3, 5)))
    with pytest.raises(TypeError, match="class-probability targets are not supported"):
        F.cross_entropy(x, np.zeros(3))
    with pytest.raises(ValueError, match=r"needs targets of shape \(3,\), got \(4,\)"):
        F.cross_entropy(x, np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="reduction='avg'"):
        F.cross_entropy(x, np.zeros(3, dtype=np.int64), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(x, np.zeros(3, dtype=np.int64), label_smoothing=0.1)


def test_dropout_bad_p():
    err = check_raises(lambda x: TF.dropout(x, p=1.5), lambda x: F.dropout(x, p=1.5), [(2, 3)])
    assert "between 0 and 1, but got 1.5" in str(err)
    check_raises(lambda x: TF.dropout(x, p=-0.1), lambda x: F.dropout(x, p=-0.1), [(2, 3)])
    with pytest.raises(ValueError, match="dropout_p"):
        F.scaled_dot_product_attention(tt.Tensor(np.zeros((2, 2))), tt.Tensor(np.zeros((2, 2))),
                                       tt.Tensor(np.zeros((2, 2))), dropout_p=2.0)


def test_layer_norm_normalized_shape_must_be_last_dim():
    with pytest.raises(ValueError, match=r"normalized_shape=\(4,\) must be the size of the input's last dim, \(5,\)"):
        F.layer_norm(tt.Tensor(np.zeros((3, 5))), (4,))


def test_gelu_bad_approximate():
    with pytest.raises(ValueError, match="approximate='exact' must be 'none' or 'tanh'"):
        F.gelu(tt.Tensor(np.zeros(3)), approximate="exact")
    with pytest.raises(ValueError, match="tanh"):
        F.gelu_composite(tt.Tensor(np.zeros(3)), approximate="none")


def test_mixed_dtypes_raise_typeerror():
    x32, w64 = tt.Tensor(np.zeros((2, 3), np.float32)), tt.Tensor(np.zeros((4, 3)))
    with pytest.raises(TypeError, match="dtype mismatch"):
        F.linear(x32, w64)
    with pytest.raises(TypeError, match="dtype mismatch"):
        F.layer_norm(x32, 3, tt.Tensor(np.ones(3)))
    with pytest.raises(TypeError, match="dtype mismatch"):
        F.scaled_dot_product_attention(x32, x32, tt.Tensor(np.zeros((2, 3))))


def test_attention_bad_shapes():
    q = tt.Tensor(np.zeros((1, 4, 3)))
    with pytest.raises(ValueError, match="query"):
        F.scaled_dot_product_attention(q, tt.Tensor(np.zeros((1, 4, 2))), q)
    with pytest.raises(ValueError, match=r"attn_mask of shape \(3, 3\) does not broadcast"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=np.ones((3, 3), dtype=bool))
    with pytest.raises(TypeError, match="attn_mask must be boolean"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=np.ones((4, 4), dtype=np.int64))


def test_linear_feature_mismatch():
    with pytest.raises(ValueError, match="input has 3 features"):
        F.linear(tt.Tensor(np.zeros((2, 3))), tt.Tensor(np.zeros((4, 5))))


def test_gradcheck_catches_a_wrong_backward():
    class BadExp(tt.Function):
        def forward(self, x):
            self.out = np.exp(x)
            return self.out

        def backward(self, g):
            return (g * self.out * 1.001,)  # 0.1 % off

    x = tt.Tensor(np.random.default_rng(0).standard_normal(4), requires_grad=True)
    with pytest.raises(GradcheckError, match="worst index"):
        gradcheck(BadExp.apply, [x])
    report = gradcheck(BadExp.apply, [x], raise_exception=False)
    assert not report.ok and report.inputs[0].max_rel > 1e-4


def test_check_op_catches_a_wrong_gradient():
    with pytest.raises(AssertionError, match="grad of input 0: max rel error"):
        check_op(torch.exp, lambda a: a.exp() * tt.Tensor(np.ones(1)) + (a - a.detach()) * 1e-6, [(3,)])
