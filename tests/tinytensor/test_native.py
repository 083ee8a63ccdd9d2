"""The native C kernels (tinytensor/kernels/native.py over tinytensor/csrc/native.c): against torch in float64
(≤ 1e-10) and float32 (≤ 1e-5, as the NumPy kernels), against the NumPy kernels, against finite differences
through the autograd wrappers, at the edges (±∞, nan, masked rows, huge inputs), bit for bit at 1 and 2 threads,
and the switch between them and the NumPy kernels. Under CI the library must have been built."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from opcheck import assert_close, check_op

import tinytensor as tt
import tinytensor.functional as F
from tinytensor.gradcheck import gradcheck
from tinytensor.kernels import gelu as np_gelu
from tinytensor.kernels import layer_norm as np_ln
from tinytensor.kernels import native, threads
from tinytensor.kernels import softmax as np_sm

if not native.available():
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI: the native kernels must be built here: {native.UNAVAILABLE}", pytrace=False)
    pytest.skip(f"native kernels unavailable: {native.UNAVAILABLE}", allow_module_level=True)

PRECISIONS = [(np.float64, 1e-10), (np.float32, 1e-5)]
P_IDS = ["f64", "f32"]
ROWS = [(1, 1), (3, 5), (37, 64), (2, 40, 768)]  # C = 1; odd sizes; rows not a multiple of LN_BLOCK; GPT-2's d


@pytest.fixture(autouse=True)
def whole_attention_at_every_length(monkeypatch):
    """The whole-attention kernel from one key up (its default floor, ATTENTION_MIN_T, is a speed choice), so that
    these tests reach its tails with small arrays."""
    monkeypatch.setattr(native, "ATTENTION_MIN_T", 1)


@pytest.fixture
def two_threads():
    """The pool on with 2 threads, no size threshold and no timing-based choice, so small arrays take the split
    paths."""
    before = threads.get_num_threads(), threads.MIN_PARALLEL, native.ADAPTIVE
    threads.set_num_threads(2)
    threads.MIN_PARALLEL, native.ADAPTIVE = 1, False
    yield
    threads.set_num_threads(before[0])
    threads.MIN_PARALLEL, native.ADAPTIVE = before[1:]


def _t(a):
    return torch.tensor(a, requires_grad=True)


@pytest.mark.parametrize("shape", ROWS, ids=str)
@pytest.mark.parametrize("affine", ["wb", "w", "b", "none"])
@pytest.mark.parametrize("dtype,rtol", PRECISIONS, ids=P_IDS)
def test_layer_norm_kernels_match_torch(shape, affine, dtype, rtol, two_threads):
    rng = np.random.default_rng(0)
    c = shape[-1]
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    w = rng.standard_normal(c).astype(dtype) if "w" in affine else None
    b = rng.standard_normal(c).astype(dtype) if "b" in affine else None
    dout = rng.standard_normal(shape).astype(dtype)
    out, mean, rstd = native.layer_norm_forward(x, w, b, 1e-5)
    dx, dw, db = native.layer_norm_backward(dout, x, w, mean, rstd)
    tx, tw, tb = _t(x), None if w is None else _t(w), None if b is None else _t(b)
    tout = TF.layer_norm(tx, (c,), tw, tb, 1e-5)
    (tout * torch.tensor(dout)).sum().backward()
    assert out.dtype == dx.dtype == dtype and mean.shape == shape[:-1] + (1,)
    assert_close("out", out, tout.detach().numpy(), rtol)
    assert_close("db", db, dout.reshape(-1, c).sum(0), rtol)  # Σ_rows dout, with or without a bias
    if c == 1:  # x̂ ≡ 0, so dx and dw are exactly 0 (torch's are its rounding noise times rstd = 1/√eps)
        assert not dx.any() and (dw is None or not dw.any())
        return
    assert_close("dx", dx, tx.grad.numpy(), rtol)
    if w is not None:
        assert_close("dw", dw, tw.grad.numpy(), rtol)
    else:
        assert dw is None


@pytest.mark.parametrize("dtype,rtol", PRECISIONS, ids=P_IDS)
def test_layer_norm_kernels_match_the_numpy_pair(dtype, rtol):
    rng = np.random.default_rng(1)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in [(70, 96), (96,), (96,)])
    dout = rng.standard_normal(x.shape).astype(dtype)
    ours = native.layer_norm_forward(x, w, b)
    ref = np_ln.layer_norm_forward(x, w, b)
    for a, r, n in zip(ours, ref, ["out", "mean", "rstd"]):
        assert_close(n, a, r, rtol)
    for a, r, n in zip(native.layer_norm_backward(dout, x, w, *ours[1:]), np_ln.layer_norm_backward(dout, x, w,
                                                                                                     *ref[1:]),
                       ["dx", "dw", "db"]):
        assert_close(n, a, r, rtol)


@pytest.mark.parametrize("shape", [(1, 1), (4, 7), (3, 2, 256), (5, 1000)], ids=str)
@pytest.mark.parametrize("dtype,rtol", PRECISIONS, ids=P_IDS)
def test_softmax_kernels_match_torch(shape, dtype, rtol, two_threads):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    p = native.softmax_forward(x)
    dx = native.softmax_backward(dout, p)
    tx = _t(x)
    tp = torch.softmax(tx, -1)
    (tp * torch.tensor(dout)).sum().backward()
    assert_close("p", p, tp.detach().numpy(), rtol)
    assert_close("dx", dx, tx.grad.numpy(), rtol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=P_IDS)
def test_softmax_edges_as_torch(dtype):
    inf, nan = np.inf, np.nan
    x = np.array([[-inf, -inf, -inf], [0.0, -inf, 1.0], [1e4, -1e4, 0.0], [nan, 0.0, 1.0], [inf, 0.0, 1.0],
                  [-1e30, 3e38 if dtype == np.float32 else 1e300, 0.0], [-120.0, 0.0, -90.0]], dtype=dtype)
    ours = native.softmax_forward(x)
    ref = torch.softmax(torch.tensor(x), -1).numpy()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))  # a −∞ row, a nan, +∞: nan, as torch
    fin = ~np.isnan(ref)
    assert_close("p", ours[fin], ref[fin], 1e-6 if dtype == np.float32 else 1e-15)
    assert ours[1, 1] == 0.0  # e^(−∞) is exactly 0, as torch's


@pytest.mark.parametrize("approximate", ["tanh", "none"])
@pytest.mark.parametrize("dtype,rtol", PRECISIONS, ids=P_IDS)
def test_gelu_kernels_match_torch(approximate, dtype, rtol, two_threads):
    x = np.concatenate([np.linspace(-12, 12, 4001), np.random.default_rng(3).standard_normal(5000) * 3]).astype(dtype)
    dout = np.random.default_rng(4).standard_normal(x.shape).astype(dtype)
    if approximate == "tanh":
        out = native.gelu_tanh_forward(x)
        dx = native.gelu_tanh_backward(dout, x)
    else:
        out, deriv = native.gelu_erf_forward(x)
        dx = native.gelu_erf_backward(dout, deriv)
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)  # float64 truth for both dtypes
    tout = TF.gelu(tx, approximate=approximate)
    (tout * torch.tensor(dout.astype(np.float64))).sum().backward()
    assert out.dtype == dx.dtype == dtype
    assert_close("out", out, tout.detach().numpy(), rtol)
    assert_close("dx", dx, tx.grad.numpy(), rtol)


def test_gelu_tanh_float32_keeps_relative_accuracy_in_the_negative_tail():
    """x·σ(2u) keeps relative accuracy where ½x(1 + tanh u) cancels (to 0 in float32, and in float64 too beyond
    x ≈ −6), so the reference is the same identity, ½(1 + tanh u) = σ(2u), evaluated in float64."""
    x = np.linspace(-9.0, -2.0, 701).astype(np.float32)
    x64 = x.astype(np.float64)
    u = np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64 ** 3)
    ref = x64 / (1.0 + np.exp(-2.0 * u))
    rel = np.abs(native.gelu_tanh_forward(x) - ref) / np.abs(ref)
    # float32 rounds u = c·(x + k x³) to an ulp or two, and e^(−2u) turns that into |2u| times as much: the bound
    # is that conditioning (|2u| = 66 at x = −9) plus a few ulp for the rest
    bound = (np.abs(2 * u) + 4) * 2.0 ** -23
    assert (rel <= bound).all(), (rel / bound).max()


def test_gelu_erf_float32_derivative_and_the_forward_without_it():
    """float32's dout/dx = Φ + x·φ takes φ from the fitted Φ's own derivative (one exponential for both): within
    4.5e-7 of the exact value over [−12, 12] in exact arithmetic, 7e-7 once rounded to float32 (2 ulp of values up
    to 1.13 on top); without a gradient the same outputs and no derivative."""
    x = np.linspace(-12, 12, 200001).astype(np.float32)
    out, deriv = native.gelu_erf_forward(x)
    x64 = torch.tensor(x.astype(np.float64))
    exact = (0.5 * torch.special.erfc(-x64 / np.sqrt(2)) + x64 * torch.exp(-x64 * x64 / 2) / np.sqrt(2 * np.pi))
    assert np.abs(deriv - exact.numpy()).max() <= 7e-7
    out2, none = native.gelu_erf_forward(x, need_grad=False)
    assert none is None
    np.testing.assert_array_equal(out2, out)
    xt = tt.Tensor(x)  # no gradient asked: the functional op skips the derivative
    np.testing.assert_array_equal(F.gelu(xt).numpy(), out)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=P_IDS)
def test_gelu_edges(dtype):
    x = np.array([-np.inf, -1e30, -100.0, -0.0, 0.0, 100.0, 1e30, np.inf, np.nan], dtype=dtype)
    for approximate in ("tanh", "none"):
        out = native.gelu_tanh_forward(x) if approximate == "tanh" else native.gelu_erf_forward(x)[0]
        with np.errstate(all="ignore"):  # float64 torch: its float32 erf form gives nan at +∞, where x·Φ(x) → ∞
            ref = TF.gelu(torch.tensor(x.astype(np.float64)), approximate=approximate).numpy().astype(dtype)
        np.testing.assert_array_equal(np.isnan(out), np.isnan(ref), err_msg=approximate)
        fin = ~np.isnan(ref)
        np.testing.assert_array_equal(out[fin], ref[fin], err_msg=approximate)


def test_exp32_over_the_float32_range():
    x = np.concatenate([np.linspace(-110, 90, 200001), [-np.inf, np.inf, np.nan, -0.0, 88.72, 88.73, -87.4,
                                                        -103.9, -104.5]]).astype(np.float32)
    ours = native.exp32(x)
    with np.errstate(over="ignore"):
        ref = np.exp(x.astype(np.float64)).astype(np.float32)  # float64 e^x rounded once: the ideal float32
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(x))
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(ref))
    normal = (ref >= np.finfo(np.float32).tiny) & np.isfinite(ref)
    rel = np.abs(ours[normal].astype(np.float64) - ref[normal]) / ref[normal]
    assert rel.max() <= 2.5e-7, rel.max()  # ≤ 2 ulp (float32's spacing is 6e-8..1.2e-7 of a value)
    sub = ~normal & np.isfinite(ref)  # denormals and underflow: within one denormal step of the ideal
    assert np.abs(ours[sub].astype(np.float64) - ref[sub]).max() <= 1.5e-45


def _on_one_and_two_threads(run):
    """run() on one thread, then on two with every size split: both results, for a bit-for-bit comparison."""
    before = threads.get_num_threads(), threads.MIN_PARALLEL, native.ADAPTIVE
    try:
        threads.set_num_threads(1)
        one = run()
        threads.set_num_threads(2)
        threads.MIN_PARALLEL, native.ADAPTIVE = 1, False
        return one, run()
    finally:
        threads.set_num_threads(before[0])
        threads.MIN_PARALLEL, native.ADAPTIVE = before[1:]


@pytest.mark.parametrize("op", ["layer_norm", "gelu_tanh", "gelu_erf", "softmax"])
def test_bits_repeat_at_one_and_two_threads(op):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 768)).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    w, b = rng.standard_normal(768).astype(np.float32), rng.standard_normal(768).astype(np.float32)

    def run():
        if op == "layer_norm":
            out, m, r = native.layer_norm_forward(x, w, b)
            return (out,) + native.layer_norm_backward(dout, x, w, m, r)
        if op == "softmax":
            p = native.softmax_forward(x)
            return p, native.softmax_backward(dout, p)
        if op == "gelu_tanh":
            return native.gelu_tanh_forward(x), native.gelu_tanh_backward(dout, x)
        out, d = native.gelu_erf_forward(x)
        return out, native.gelu_erf_backward(dout, d)

    one, two = _on_one_and_two_threads(run)
    for a, b2 in zip(one, two):
        np.testing.assert_array_equal(a, b2)


CASES = [
    ("layer_norm", lambda x, w, b: TF.layer_norm(x, (6,), w, b), lambda x, w, b: F.layer_norm(x, (6,), w, b),
     [(2, 3, 6), (6,), (6,)]),
    ("gelu_none", TF.gelu, F.gelu, [(3, 7)]),
    ("gelu_tanh", lambda x: TF.gelu(x, approximate="tanh"), lambda x: F.gelu(x, approximate="tanh"), [(3, 7)]),
    ("softmax_last", lambda x: TF.softmax(x, dim=-1), lambda x: F.softmax(x, dim=-1), [(2, 3, 5)]),
]


@pytest.mark.parametrize("name,torch_fn,ours_fn,inputs", CASES, ids=[c[0] for c in CASES])
def test_functional_ops_on_both_kernels(name, torch_fn, ours_fn, inputs, kernels):
    """The autograd wrappers route to the C pair or, switched off, to the NumPy pair; both agree with torch and
    with finite differences (test_functional.py runs its whole table on both too)."""
    for dtype, rtol in PRECISIONS:
        check_op(torch_fn, ours_fn, inputs, rtol=rtol, dtype=dtype)
    rng = np.random.default_rng(6)
    gradcheck(ours_fn, [tt.Tensor(rng.standard_normal(s), requires_grad=True) for s in inputs])


def test_the_switch_routes_to_each_pair(numpy_kernels):
    x = np.random.default_rng(7).standard_normal((4, 300)).astype(np.float32)
    numpy_out = F.gelu(tt.Tensor(x), approximate="tanh").numpy()
    np.testing.assert_array_equal(numpy_out, np_gelu.gelu_tanh_forward_inplace(x)[0])
    np.testing.assert_array_equal(F.softmax(tt.Tensor(x), -1).numpy(), np_sm.softmax_forward(x))
    native.set_native_kernels(True)
    assert native.native_kernels()
    np.testing.assert_array_equal(F.gelu(tt.Tensor(x), approximate="tanh").numpy(), native.gelu_tanh_forward(x))
    np.testing.assert_array_equal(F.softmax(tt.Tensor(x), -1).numpy(), native.softmax_forward(x))
    np.testing.assert_array_equal(F.layer_norm(tt.Tensor(x), 300).numpy(), native.layer_norm_forward(x)[0])


def test_softmax_over_another_dim_and_mixed_gradient_dtype():
    x = np.random.default_rng(8).standard_normal((3, 4, 5))
    np.testing.assert_array_equal(F.softmax(tt.Tensor(x), 1).numpy(), np_sm.softmax_forward(x, 1))  # NumPy pair
    x32 = x.astype(np.float32)
    p = native.softmax_forward(x32)
    g = np.random.default_rng(9).standard_normal(x.shape)  # a float64 gradient is cast to the saved dtype
    np.testing.assert_array_equal(native.softmax_backward(g, p), native.softmax_backward(g.astype(np.float32), p))


def test_switching_on_without_the_library_names_the_cause(monkeypatch):
    monkeypatch.setattr(native, "_FNS", {})
    monkeypatch.setattr(native, "UNAVAILABLE", "the native library was not built (test)")
    with pytest.raises(RuntimeError, match="not built"):
        native.set_native_kernels(True)
    assert not native.available()


@pytest.mark.parametrize("dtype,rtol", PRECISIONS, ids=P_IDS)
def test_causal_attention_kernel_with_dropout_and_groups_matches_the_numpy_path(dtype, rtol, two_threads):
    """The fused causal softmax (scale, mask and softmax; its backward with the dropout scale folded in) against
    the NumPy path with the same keep-mask, grouped-query heads and fewer queries than keys (a KV cache)."""
    from tinytensor.kernels import attention as katt

    rng = np.random.default_rng(10)
    q = rng.standard_normal((2, 4, 5, 8)).astype(dtype)
    k, v = (rng.standard_normal((2, 2, 7, 8)).astype(dtype) for _ in range(2))
    keep = rng.random((2, 4, 5, 7)) > 0.25
    dout = rng.standard_normal((2, 4, 5, 8)).astype(dtype)
    results = {}
    for on in (True, False):
        native.set_native_kernels(on)
        try:
            out, saved = katt.attention_forward(q, k, v, is_causal=True, scale=0.7, dropout_keep=keep,
                                                dropout_p=0.25, enable_gqa=True)
            assert saved["fused"] is on
            results[on] = (out,) + katt.attention_backward(dout, saved)
        finally:
            native.set_native_kernels(True)
    for name, a, b in zip(["out", "dq", "dk", "dv"], results[True], results[False]):
        assert_close(name, a, b, rtol)


def test_causal_softmax_rows_longer_than_the_stack_buffer_and_overflowing_rows():
    """Rows of more than STACK_ROW keys take a heap buffer; a row whose scores overflow the diagonal shift is redone
    with the maximum from the intact scores, also in place. Both against torch in float64."""
    from tinytensor.kernels import attention as katt

    rng = np.random.default_rng(12)
    q = rng.standard_normal((1, 2, 3, 4))
    k, v = rng.standard_normal((1, 2, 2100, 4)), rng.standard_normal((1, 2, 2100, 4))
    q[0, 0, 2] *= 3000.0  # scores of ~±10^4: e^(s·S − s·S_ii) overflows float64 for this row
    out, saved = katt.attention_forward(q, k, v, is_causal=True)
    assert saved["fused"]
    want = TF.scaled_dot_product_attention(*(torch.tensor(a) for a in (q, k, v)), is_causal=True).numpy()
    assert_close("out", out, want, 1e-10)


def _model_heads(rng, lead: tuple, t: int, e: int, dtype, strided: bool) -> np.ndarray:
    """Heads (.., h, t, e): views of a (b, t, 3, h, e) projection, as the model's, or contiguous arrays."""
    if not strided:
        return rng.standard_normal(lead + (t, e)).astype(dtype)
    if len(lead) == 1:  # (h, t, e) from (t, 3, h, e)
        return rng.standard_normal((t, 3) + lead + (e,)).astype(dtype)[:, 1].transpose(1, 0, 2)
    return rng.standard_normal((lead[0], t, 3, lead[1], e)).astype(dtype)[:, :, 1].transpose(0, 2, 1, 3)


def _poison_heap() -> None:
    """Free NaN-filled blocks of many sizes, so that the C kernel's scratch (malloc'd per call) likely starts as NaN:
    a read of scratch the kernel never wrote then shows in its results instead of passing on whatever was there (a
    float64 row read past its computed columns did, caught only by chance once)."""
    junk = [np.full(n, np.nan) for n in (2 ** np.arange(7, 16)).tolist() for _ in range(4)]
    del junk


def _torch_causal(q, k, v, scale: float, keep=None, c: float = 1.0, groups: int = 1):
    """torch float64: O = (c·D ⊙ softmax(s·QKᵀ + causal mask)) V, P, and the leaf tensors (for their .grad); with
    groups > 1 each key/value head serves that many query heads (torch's repeat_interleave, as enable_gqa)."""
    tq, tk, tv = (torch.tensor(np.ascontiguousarray(a), dtype=torch.float64, requires_grad=True) for a in (q, k, v))
    rk, rv = (t.repeat_interleave(groups, dim=-3) for t in (tk, tv))
    scores = (tq @ rk.transpose(-1, -2) * scale).masked_fill(
        ~torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril(), float("-inf"))
    probs = scores.softmax(-1)
    weights = probs if keep is None else probs * torch.tensor(keep) * c
    return weights @ rv, probs, (tq, tk, tv)


# (lead, tq, tk, E, Ev): the model's layout; one query block and key tile exactly; fewer queries than keys (a
# cache's top-left mask); 3-D heads; E, Ev and T off the tiles' 6 rows and 16 (float64: 8) columns
WHOLE_CASES = [((12, 4), 64, 64, 32, 32), ((1, 2), 6, 16, 16, 8), ((2, 3), 5, 7, 8, 8), ((3,), 37, 40, 17, 5),
               ((1, 2), 100, 128, 64, 64)]


@pytest.mark.parametrize("case", WHOLE_CASES, ids=str)
@pytest.mark.parametrize("dtype,rtol", PRECISIONS, ids=P_IDS)
@pytest.mark.parametrize("strided", [True, False], ids=["strided", "contiguous"])
def test_whole_attention_kernel_matches_torch(case, dtype, rtol, strided, two_threads):
    """The whole causal attention in C (forward in one call, its hand-derived backward in another): O, the saved P
    and dQ, dK, dV against torch in float64, through attention_forward / attention_backward (the path the model
    takes), on heads strided as the model's and contiguous ones; with and without dropout's keep-mask."""
    from tinytensor.kernels import attention as katt

    lead, tq, tk, e, ev = case
    rng = np.random.default_rng(20)
    q = _model_heads(rng, lead, tq, e, dtype, strided)
    k, v = _model_heads(rng, lead, tk, e, dtype, strided), _model_heads(rng, lead, tk, ev, dtype, strided)
    dout = rng.standard_normal(lead + (tq, ev)).astype(dtype)
    for keep in (None, rng.random(lead + (tq, tk)) > 0.3):
        _poison_heap()
        out, saved = katt.attention_forward(q, k, v, is_causal=True, scale=0.3, dropout_keep=keep, dropout_p=0.3)
        assert saved["whole"]
        _poison_heap()
        dq, dk, dv = katt.attention_backward(dout, saved)
        want, probs, leaves = _torch_causal(q, k, v, 0.3, keep, 1 / 0.7)
        want.backward(torch.tensor(dout, dtype=torch.float64))
        for name, ours, ref in [("out", out, want), ("P", saved["probs"], probs), ("dq", dq, leaves[0].grad),
                                ("dk", dk, leaves[1].grad), ("dv", dv, leaves[2].grad)]:
            assert ours.dtype == dtype and ours.shape == tuple(ref.shape), name
            assert_close(name, ours, ref.detach().numpy(), rtol)
        np.testing.assert_array_equal(np.triu(saved["probs"], 1), 0)  # P is 0 above the diagonal, as the path saves it


# (query lead, key/value heads, tq, tk, E): 2 and 3 query heads per key head; 3-D heads all sharing one
GQA_CASES = [((2, 4), 2, 64, 64, 32), ((1, 6), 2, 13, 13, 16), ((6,), 1, 9, 11, 8)]


@pytest.mark.parametrize("case", GQA_CASES, ids=str)
@pytest.mark.parametrize("dtype,rtol", PRECISIONS, ids=P_IDS)
def test_whole_attention_kernel_with_grouped_heads_matches_torch(case, dtype, rtol, two_threads):
    """Grouped-query attention in the whole kernel: query head h reads key/value head h // g, and dK, dV sum the
    group's g heads (in one fixed order); against torch's repeat_interleave in float64, with and without dropout."""
    from tinytensor.kernels import attention as katt

    lead, hkv, tq, tk, e = case
    rng = np.random.default_rng(24)
    kv_lead = lead[:-1] + (hkv,)
    q = _model_heads(rng, lead, tq, e, dtype, True)
    k, v = _model_heads(rng, kv_lead, tk, e, dtype, True), _model_heads(rng, kv_lead, tk, e, dtype, True)
    dout = rng.standard_normal(lead + (tq, e)).astype(dtype)
    for keep in (None, rng.random(lead + (tq, tk)) > 0.2):
        _poison_heap()
        out, saved = katt.attention_forward(q, k, v, is_causal=True, dropout_keep=keep, dropout_p=0.2,
                                            enable_gqa=True)
        assert saved["whole"]
        _poison_heap()
        dq, dk, dv = katt.attention_backward(dout, saved)
        want, probs, leaves = _torch_causal(q, k, v, 1 / np.sqrt(e), keep, 1 / 0.8, lead[-1] // hkv)
        want.backward(torch.tensor(dout, dtype=torch.float64))
        for name, ours, ref in [("out", out, want), ("P", saved["probs"], probs), ("dq", dq, leaves[0].grad),
                                ("dk", dk, leaves[1].grad), ("dv", dv, leaves[2].grad)]:
            assert ours.shape == tuple(ref.shape), name
            assert_close(name, ours, ref.detach().numpy(), rtol)


def test_whole_attention_bits_repeat_at_one_and_two_threads_and_heads_merge_free():
    """Each head is one sequence of fixed-order sums, whichever thread runs it: the same bits on 1 and 2 threads.
    The output and dQ are (b, h, t, e) views of (b, t, h, e) blocks, so merging the heads back is a free reshape."""
    rng = np.random.default_rng(21)
    q, k, v = (_model_heads(rng, (6, 4), 64, 32, np.float32, True) for _ in range(3))
    dout = rng.standard_normal(q.shape).astype(np.float32)

    def run():
        out, probs = native.causal_attention_forward(q, k, v, 0.2)
        gqa_out, gqa_probs = native.causal_attention_forward(q, k[:, :2], v[:, :2], 0.2, groups=2)
        return (out, probs, gqa_out) + native.causal_attention_backward(dout, q, k, v, probs, 0.2) + \
            native.causal_attention_backward(dout, q, k[:, :2], v[:, :2], gqa_probs, 0.2, groups=2)

    one, two = _on_one_and_two_threads(run)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    assert one[0].transpose(0, 2, 1, 3).flags.c_contiguous and one[3].transpose(0, 2, 1, 3).flags.c_contiguous


def test_whole_attention_takes_only_what_it_fits():
    """More keys than ATTENTION_MAX_T, heads over ATTENTION_MAX_E, a broadcast keep-mask, key batches that
    broadcast, keys and values with different head counts and the NumPy kernels switched off all take the
    batched-product path; GQA heads take the kernel."""
    from tinytensor.kernels import attention as katt

    rng = np.random.default_rng(22)
    q = rng.standard_normal((2, 4, 8, 16))
    assert native.whole_attention_fits(q, q, q) and native.whole_attention_fits(q, q, q, np.ones((2, 4, 8, 8), bool))
    assert native.whole_attention_fits(q, q[:, :2], q[:, :2], groups=2)  # GQA
    assert not native.whole_attention_fits(q, q[:, :2], q[:, :2])  # GQA heads without their group size
    assert not native.whole_attention_fits(q, q[:1], q[:1])  # a broadcast batch
    assert not native.whole_attention_fits(q, q, q, np.ones((1, 1, 8, 8), bool))  # a broadcast mask
    strided = q[..., ::2]  # a strided last axis is copied to contiguous rows first: the same bits
    assert native.whole_attention_fits(strided, strided, strided)
    contiguous = np.ascontiguousarray(strided)
    np.testing.assert_array_equal(native.causal_attention_forward(strided, strided, strided, 0.5)[0],
                                  native.causal_attention_forward(contiguous, contiguous, contiguous, 0.5)[0])
    assert not native.whole_attention_fits(q[:, :, :, :8], q, q)  # E of q and k differ (the wrapper refuses it)
    long = rng.standard_normal((1, 1, 4, native.ATTENTION_MAX_T + 1, 8))[0]
    assert not native.whole_attention_fits(long, long, long)
    native.ATTENTION_MIN_T = 9  # the fixture's 1 put back to a floor above these 8 keys
    assert not native.whole_attention_fits(q, q, q)
    native.ATTENTION_MIN_T = 1
    wide = rng.standard_normal((1, 1, 4, native.ATTENTION_MAX_E + 1))
    assert not native.whole_attention_fits(wide, wide, wide)
    out, saved = katt.attention_forward(q, q[:, :2], q[:, :1], is_causal=True, enable_gqa=True)
    assert saved["fused"] and not saved.get("whole")  # 2 key heads, 1 value head
    native.set_native_kernels(False)
    try:
        assert not native.whole_attention_fits(q, q, q)
    finally:
        native.set_native_kernels(True)


def test_whole_attention_gradients_by_finite_differences():
    """Through F.scaled_dot_product_attention (the autograd op the model calls), float64, with the whole kernel."""
    rng = np.random.default_rng(23)
    heads = [tt.Tensor(_model_heads(rng, (2, 2), 7, 5, np.float64, True), requires_grad=True) for _ in range(3)]
    assert native.whole_attention_fits(*(t.data for t in heads))
    gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.8), heads)


@pytest.mark.parametrize("dtype,rtol", PRECISIONS, ids=P_IDS)
def test_cross_entropy_rows_match_torch_and_refuse_targets_out_of_range(dtype, rtol, two_threads):
    rng = np.random.default_rng(14)
    logits = (rng.standard_normal((300, 257)) * 5).astype(dtype)
    logits[3, :] = -np.inf
    logits[3, 7] = 2.0  # a row with one finite logit: loss 0 at its target
    targets = rng.integers(0, 257, 300)
    targets[3] = 7
    probs, losses = np.empty_like(logits), np.empty(300, dtype)
    native.cross_entropy_rows(logits, targets, probs, losses)
    want = TF.cross_entropy(torch.tensor(logits), torch.tensor(targets), reduction="none").numpy()
    assert_close("losses", losses, want, rtol)
    assert_close("probs", probs, torch.softmax(torch.tensor(logits), -1).numpy(), rtol)
    for bad in (257, -1):
        targets[5] = bad
        with pytest.raises(IndexError, match=r"\[0, 257\)"):
            native.cross_entropy_rows(logits, targets, probs, losses)


def test_the_timed_choice_between_one_thread_and_the_pool_keeps_the_bits(monkeypatch):
    """Above the size threshold each kernel runs on one thread or on the pool, whichever its own timings say is
    faster (threads.WayTimer); both ways are taken while it learns, and every call gives the same bits."""
    monkeypatch.setattr(native, "ADAPTIVE", True)
    monkeypatch.setattr(native, "_TIMER", threads.WayTimer())
    monkeypatch.setattr(threads, "WAKE_INLINE", 0)  # a sleeping worker takes its range too (not inline + woken)
    before = threads.get_num_threads()
    threads.set_num_threads(2)
    try:
        x = np.random.default_rng(5).standard_normal((64, 4096)).astype(np.float32)  # above the threshold
        outs = [native.gelu_tanh_forward(x) for _ in range(6)]
    finally:
        threads.set_num_threads(before)
    (key, st), = native._TIMER.stats.items()
    assert key[0] == "gelu_tanh_fwd" and st[2] == 6 and st[3] >= 2 and st[4] >= 2  # both ways timed twice or more
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


@pytest.mark.skipif(threads._pool is None, reason="the C pool needs the native library on a POSIX system")
def test_c_pool_worker_sleeps_when_idle_small_calls_stay_inline_large_ones_wake_it(monkeypatch):
    """A C-pool worker spins SPIN_S after its last task, then sleeps; a small kernel that finds it asleep runs
    inline (waking it would cost more than the split saves), a large one splits and wakes it; the same bits."""
    # long enough that the test thread, descheduled on 2 busy cores (CI runs two test processes), still sees the
    # woken worker spin: 20 ms was not (a CI run of 12-03 found it asleep again)
    monkeypatch.setattr(threads, "SPIN_S", 0.5)
    monkeypatch.setattr(native, "ADAPTIVE", False)
    before = threads.get_num_threads()
    threads.set_num_threads(2)  # fresh workers, which read SPIN_S when they wait
    try:
        rng = np.random.default_rng(6)
        small = rng.standard_normal((64, 1024)).astype(np.float32)  # above the native threshold, below WAKE_INLINE
        large = rng.standard_normal((512, 1024)).astype(np.float32)  # above WAKE_INLINE
        want_small, want_large = native.gelu_tanh_forward(small), native.gelu_tanh_forward(large)  # starts it
        pool, w = threads._pool, threads._workers[0].index

        def wait_for(asleep: bool) -> bool:
            deadline = time.monotonic() + 5
            while bool(pool.pool_asleep(w)) != asleep and time.monotonic() < deadline:
                time.sleep(0.001)
            return bool(pool.pool_asleep(w)) == asleep

        assert wait_for(True)  # idle past SPIN_S: asleep
        np.testing.assert_array_equal(native.gelu_tanh_forward(small), want_small)
        assert pool.pool_asleep(w)  # inline: not woken
        got = native.gelu_tanh_forward(large)
        assert not pool.pool_asleep(w)  # split: woken, and spinning after its range (for SPIN_S)
        np.testing.assert_array_equal(got, want_large)
    finally:
        threads.set_num_threads(before)
