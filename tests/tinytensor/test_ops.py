"""Primitive ops (tinytensor/ops.py) and the engine: forward and backward vs torch (float64 ≤ 1e-10, float32 ≤ 1e-5)
with random upstream gradients, vs central finite differences in float64, and the graph's edge cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from opcheck import _make_inputs, check_op

import tinytensor as tt
from tinytensor.gradcheck import gradcheck

_rng = np.random.default_rng(1234)
POS = _rng.uniform(0.5, 2.0, (3, 4))  # strictly positive inputs for log / sqrt / fractional powers
AWAY = np.where(_rng.random((3, 4)) < 0.5, -1.0, 1.0) * _rng.uniform(0.2, 2.0, (3, 4))  # |x| ≥ 0.2: abs is smooth
REPEAT = np.array([2, 0, 2, 1, 2])  # repeated indices: the backward must scatter-add

# (name, torch_fn, ours_fn, inputs): both functions take their library's tensors in order
CASES = [
    ("add", lambda a, b: a + b, lambda a, b: a + b, [(3, 4), (3, 4)]),
    ("add_broadcast_both", lambda a, b: a + b, lambda a, b: a + b, [(3, 1, 4), (1, 5, 4)]),
    ("add_scalar", lambda a: 2.5 + a, lambda a: 2.5 + a, [(3, 4)]),
    ("sub_broadcast", lambda a, b: a - b, lambda a, b: a - b, [(2, 3, 4), (4,)]),
    ("rsub_scalar", lambda a: 1.0 - a, lambda a: 1.0 - a, [(3, 4)]),
    ("mul_broadcast_both", lambda a, b: a * b, lambda a, b: a * b, [(2, 1, 4), (3, 1)]),
    ("div", lambda a, b: a / b, lambda a, b: a / b, [(3, 4), POS]),
    ("rdiv_scalar", lambda a: 2.0 / a, lambda a: 2.0 / a, [POS]),
    ("neg", lambda a: -a, lambda a: -a, [(3, 4)]),
    ("pow2", lambda a: a ** 2, lambda a: a ** 2, [(3, 4)]),
    ("pow3", lambda a: a ** 3, lambda a: a ** 3, [(3, 4)]),
    ("pow_half", lambda a: a ** 0.5, lambda a: a ** 0.5, [POS]),
    ("pow_neg", lambda a: a ** -1.5, lambda a: a ** -1.5, [POS]),
    ("matmul", lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (4, 5)]),
    ("matmul_batched", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 3, 4), (2, 4, 5)]),
    ("matmul_broadcast", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 1, 3, 4), (5, 4, 2)]),
    ("matmul_2d_batched", lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (2, 4, 5)]),
    ("matmul_vec_mat", lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (4, 5)]),
    ("matmul_mat_vec", lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (4,)]),
    ("matmul_vec_vec", lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (4,)]),
    ("matmul_vec_batched", lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (2, 4, 5)]),
    ("matmul_batched_vec", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 3, 4), (4,)]),
    ("matmul_transposed", lambda a, b: a.transpose(0, 1) @ b.permute(2, 0, 1), lambda a, b: a.transpose(0, 1) @
     b.permute(2, 0, 1), [(4, 3), (4, 5, 2)]),
    ("exp", torch.exp, lambda a: a.exp(), [(3, 4)]),
    ("log", torch.log, lambda a: a.log(), [POS]),
    ("log1p", torch.log1p, lambda a: a.log1p(), [POS]),
    ("log1p_tiny", torch.log1p, lambda a: a.log1p(), [np.array([1e-18, 3e-12, -1e-9, 0.5])]),
    ("tanh", torch.tanh, lambda a: a.tanh(), [(3, 4)]),
    ("sqrt", torch.sqrt, lambda a: a.sqrt(), [POS]),
    ("abs", torch.abs, lambda a: a.abs(), [AWAY]),
    ("sum_all", lambda a: a.sum(), lambda a: a.sum(), [(2, 3, 4)]),
    ("sum_dim", lambda a: a.sum(1), lambda a: a.sum(1), [(2, 3, 4)]),
    ("sum_dims_keepdim", lambda a: a.sum((0, 2), keepdim=True), lambda a: a.sum((0, 2), keepdim=True), [(2, 3, 4)]),
    ("mean_all", lambda a: a.mean(), lambda a: a.mean(), [(2, 3, 4)]),
    ("mean_dim_keepdim", lambda a: a.mean(-1, keepdim=True), lambda a: a.mean(-1, keepdim=True), [(2, 3, 4)]),
    ("mean_dims", lambda a: a.mean((0, 1)), lambda a: a.mean((0, 1)), [(2, 3, 4)]),
    ("max_all", lambda a: a.max(), lambda a: a.max(), [(2, 3, 4)]),
    ("max_dim", lambda a: a.max(1).values, lambda a: a.max(1).values, [(2, 3, 4)]),
    ("max_dim_keepdim", lambda a: a.max(-1, keepdim=True)[0], lambda a: a.max(-1, keepdim=True)[0], [(2, 3, 4)]),
    ("amax_dims", lambda a: a.amax((0, 2)), lambda a: a.amax((0, 2)), [(2, 3, 4)]),
    ("amax_keepdim", lambda a: a.amax(1, keepdim=True), lambda a: a.amax(1, keepdim=True), [(2, 3, 4)]),
    ("var_all", lambda a: a.var(), lambda a: a.var(), [(2, 3, 4)]),
    ("var_dim_biased", lambda a: a.var(-1, correction=0), lambda a: a.var(-1, correction=0), [(2, 3, 4)]),
    ("var_dim_unbiased_keepdim", lambda a: a.var(1, keepdim=True), lambda a: a.var(1, keepdim=True), [(2, 3, 4)]),
    ("reshape", lambda a: a.reshape(4, 6) * a.reshape(4, 6), lambda a: a.reshape(4, 6) * a.reshape(4, 6), [(2, 3, 4)]),
    ("view_infer", lambda a: a.view(-1, 4), lambda a: a.view(-1, 4), [(2, 3, 4)]),
    ("flatten", lambda a: a.flatten(1), lambda a: a.flatten(1), [(2, 3, 4)]),
    ("unsqueeze", lambda a: a.unsqueeze(1), lambda a: a.unsqueeze(1), [(3, 4)]),
    ("squeeze", lambda a: a.squeeze(), lambda a: a.squeeze(), [(3, 1, 4, 1)]),
    ("squeeze_dim", lambda a: a.squeeze(1), lambda a: a.squeeze(1), [(3, 1, 4, 1)]),
    ("transpose", lambda a: a.transpose(0, 2), lambda a: a.transpose(0, 2), [(2, 3, 4)]),
    ("permute", lambda a: a.permute(2, 0, 1), lambda a: a.permute(2, 0, 1), [(2, 3, 4)]),
    ("T", lambda a: a.T, lambda a: a.T, [(3, 4)]),
    ("index_slices", lambda a: a[1:, ::2], lambda a: a[1:, ::2], [(3, 4)]),
    ("index_int_none_ellipsis", lambda a: a[1, None, ..., -1], lambda a: a[1, None, ..., -1], [(3, 4, 5)]),
    ("index_int_array_repeated", lambda a: a[torch.tensor(REPEAT)], lambda a: a[REPEAT], [(3, 4)]),
    ("index_two_arrays", lambda a: a[torch.tensor(REPEAT), torch.tensor([0, 1, 0, 3, 0])],
     lambda a: a[REPEAT, np.array([0, 1, 0, 3, 0])], [(3, 4)]),
    ("index_bool", lambda a: a[torch.tensor(POS > 1.0)], lambda a: a[POS > 1.0], [(3, 4)]),
    ("cat", lambda a, b: torch.cat([a, b, a], dim=1), lambda a, b: tt.cat([a, b, a], dim=1), [(2, 3), (2, 5)]),
    ("stack", lambda a, b: torch.stack([a, b], dim=-1), lambda a, b: tt.stack([a, b], dim=-1), [(2, 3), (2, 3)]),
    ("split", lambda a: torch.cat([p * (i + 1) for i, p in enumerate(a.split(2, dim=1))], 1),
     lambda a: tt.cat([p * (i + 1) for i, p in enumerate(a.split(2, dim=1))], 1), [(3, 5)]),
    ("split_sections", lambda a: torch.cat([p * (i + 1) for i, p in enumerate(a.split([1, 3, 1], dim=1))], 1),
     lambda a: tt.cat([p * (i + 1) for i, p in enumerate(a.split([1, 3, 1], dim=1))], 1), [(3, 5)]),
    ("chunk", lambda a: torch.cat([p * (i + 1) for i, p in enumerate(a.chunk(3, dim=0))], 0),
     lambda a: tt.cat([p * (i + 1) for i, p in enumerate(a.chunk(3, dim=0))], 0), [(7, 2)]),
    ("where", lambda a, b: torch.where(torch.tensor(POS > 1.0), a, b), lambda a, b: tt.where(POS > 1.0, a, b),
     [(3, 4), (3, 4)]),
    ("where_broadcast", lambda a, b: torch.where(torch.tensor(POS > 1.0), a, b),
     lambda a, b: tt.where(POS > 1.0, a, b), [(3, 1), (4,)]),
    ("masked_fill", lambda a: a.masked_fill(torch.tensor(POS > 1.0), -3.0),
     lambda a: a.masked_fill(POS > 1.0, -3.0), [(3, 4)]),
    ("masked_fill_broadcast_mask", lambda a: a.masked_fill(torch.tensor([True, False, True, False]), 0.5),
     lambda a: a.masked_fill(np.array([True, False, True, False]), 0.5), [(3, 4)]),
    ("reused_tensor", lambda a: a * a + (a * 3.0).exp() / (a ** 2 + 1.0), lambda a: a * a + (a * 3.0).exp() /
     (a ** 2 + 1.0), [(3, 4)]),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("name,torch_fn,ours_fn,inputs", CASES, ids=IDS)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)], ids=["f64", "f32"])
def test_op_vs_torch(name, torch_fn, ours_fn, inputs, dtype, rtol):
    check_op(torch_fn, ours_fn, inputs, rtol=rtol, dtype=dtype)


@pytest.mark.parametrize("name,torch_fn,ours_fn,inputs", CASES, ids=IDS)
def test_op_finite_differences(name, torch_fn, ours_fn, inputs):
    arrays = _make_inputs(inputs, np.float64, seed=3)
    gradcheck(ours_fn, [tt.Tensor(a, requires_grad=True) for a in arrays])


def test_new_tensor_takes_dtype_from_the_tensor_as_torch():
    for dtype in (np.float32, np.float64):
        x = tt.Tensor(np.zeros(2, dtype=dtype), requires_grad=True)
        mask = np.array([True, False])
        ours, ref = x.new_tensor(mask), torch.zeros(2, dtype={np.float32: torch.float32, np.float64: torch.float64}[dtype]).new_tensor(mask)
        assert ours.dtype == dtype and not ours.requires_grad and ours.is_leaf
        np.testing.assert_array_equal(ours.numpy(), ref.numpy())
    assert x.new_tensor([3, 4], dtype=np.int64).dtype == np.int64


def test_cast_between_float_dtypes():
    check_op(lambda a: a.to(torch.float32) * 2.0, lambda a: a.to(np.float32) * 2.0, [(3, 4)], rtol=1e-6)
    check_op(lambda a: a.double(), lambda a: a.double(), [(3, 4)], rtol=0.0, dtype=np.float32)


def test_amax_ties_split_the_gradient_as_torch():
    tied = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    check_op(lambda a: a.amax(1), lambda a: a.amax(1), [tied])
    check_op(lambda a: a.amax(), lambda a: a.amax(), [tied])


def test_float32_stays_float32_with_python_scalars():
    x = tt.Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    y = (2.5 * x + 1.0) / 3.0 - x ** 2
    y.backward(np.ones((2, 2), np.float32))
    assert y.dtype == np.float32 and x.grad.dtype == np.float32


def test_integer_index_out_of_range_raises_clear_indexerror():
    x = tt.Tensor(np.zeros((3, 4)), requires_grad=True)
    with pytest.raises(IndexError, match=r"out of range for a tensor of shape \(3, 4\)"):
        x[np.array([0, 7])]
    with pytest.raises(IndexError, match="integer or boolean"):
        x[np.array([0.0, 1.0])]


def test_mixing_float32_and_float64_raises_typeerror():
    a = tt.Tensor(np.ones(3, np.float32))
    b = tt.Tensor(np.ones(3, np.float64))
    for op in (lambda: a + b, lambda: a * b, lambda: a @ b, lambda: tt.cat([a, b])):
        with pytest.raises(TypeError, match="dtype mismatch: float32 and float64"):
            op()
    with pytest.raises(TypeError, match="never upcasts silently"):
        a + np.ones(3)


def test_backward_twice_without_retain_graph_raises():
    x = tt.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()
    assert np.array_equal(x.grad.numpy(), [2.0, 4.0])  # the failed call added nothing


def test_backward_twice_with_retain_graph_accumulates():
    x = tt.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert np.array_equal(x.grad.numpy(), [4.0, 8.0])


def test_gradients_accumulate_across_backward_calls_into_leaves():
    x = tt.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    assert np.array_equal(x.grad.numpy(), 3.0 + 2 * x.numpy())
    x.zero_grad()
    assert x.grad is None


def test_no_grad_records_no_graph():
    x = tt.Tensor(np.ones(3), requires_grad=True)
    with tt.no_grad():
        y = (x * 2.0).exp().sum()
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()
    z = (x * 2.0).sum()  # recording resumes after the block
    assert z.requires_grad and not z.is_leaf


def test_deep_chain_has_no_recursion_limit():
    x = tt.Tensor(np.array([0.5]), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** 5000], rtol=1e-12)


def test_requires_grad_needs_a_float_dtype():
    with pytest.raises(TypeError, match="floating-point"):
        tt.Tensor(np.arange(3), requires_grad=True)


def test_leaf_gradients_never_alias_each_other_or_the_callers_arrays():
    """The engine keeps a gradient array as .grad without copying only when nothing else refers to it (torch's
    AccumulateGrad rule): two leaves fed by one op, the caller's upstream gradient, a view, and a leaf used twice
    each get their own buffer, so writing into one .grad changes no other array."""
    a, b = (tt.Tensor(np.ones(3), requires_grad=True) for _ in range(2))
    (a + b).backward(np.ones(3))  # Add hands the same upstream array to both parents
    assert not np.shares_memory(a.grad.numpy(), b.grad.numpy())
    upstream = np.full((2, 3), 2.0)
    x = tt.Tensor(np.ones((2, 3)), requires_grad=True)
    x.backward(upstream)  # the leaf itself: its gradient is the caller's array
    assert not np.shares_memory(x.grad.numpy(), upstream)
    y = tt.Tensor(np.ones((2, 3)), requires_grad=True)
    y.reshape(3, 2).backward(np.ones((3, 2)))  # Reshape's backward returns a view of the upstream gradient
    assert not np.shares_memory(y.grad.numpy(), upstream)
    z = tt.Tensor(np.ones(4), requires_grad=True)
    out = z * 3.0
    out.backward(np.ones(4))
    z.grad.data[0] = 99.0
    np.testing.assert_array_equal(z.grad.numpy(), [99.0, 3.0, 3.0, 3.0])
    w = tt.Tensor(np.ones(2), requires_grad=True)
    (w * w).backward(np.ones(2))
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 2.0])  # both uses summed, as before


def test_a_gradient_no_one_else_holds_is_kept_as_the_leafs_grad():
    """The other half of the rule above: the array an op's backward made, held by nothing else, becomes the leaf's
    .grad as it is (no copy), also when the leaf comes right after that op in the backward order."""
    made = []  # the id of the array backward returned (holding the array itself would be a second reference)

    class Twice(tt.Function):
        def forward(self, x):
            return 2.0 * x

        def backward(self, g):
            dx = 2.0 * g
            made.append(id(dx))
            return (dx,)

    x = tt.Tensor(np.ones(3), requires_grad=True)
    Twice.apply(x).backward(np.ones(3))
    assert id(x.grad.data) == made[0]  # the same array, alive as .grad (so its id cannot have been reused)
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0, 2.0])
