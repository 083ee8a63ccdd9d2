"""erf/erfc (Cody's rational approximations, kernels/erf.py) against Python's math.erf/erfc in ulps over a dense
grid, the range boundaries and the extremes; the exact GELU's fused chunked pair against torch float64 (outputs and
gradients under a random upstream gradient, ≤ 1e-10), its reference pair, and float32 (≤ 1e-5)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from opcheck import check_op

import tinytensor as tt
import tinytensor.functional as F
from tinytensor.kernels import erf as kerf
from tinytensor.kernels import gelu as kgelu
from tinytensor.kernels import threads

ERF_MAX_ULP, ERFC_MAX_ULP = 4, 8  # measured: erf 3 ulp, erfc 7 ulp (middle range) over the grid below


def _grid() -> np.ndarray:
    """A dense grid over [−30, 30], both sides of every range boundary, tiny and huge magnitudes, ±0, ±inf."""
    edges = [kerf.SMALL, kerf.LARGE, 26.5, 27.2, kerf.HUGE]
    near = [np.nextafter(e, s) for e in edges for s in (-np.inf, np.inf)] + edges
    tiny = np.geomspace(1e-310, 1e-2, 500)
    x = np.concatenate([np.linspace(-30, 30, 300001), tiny, near, [0.0, 1e300, np.inf]])
    return np.concatenate([x, -x])


def _ulps(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|ours − ref| in units of ref's last place (0 where they are equal, including ±inf)."""
    diff = np.abs(ours - ref, where=ours != ref, out=np.zeros_like(ref))
    return diff / np.spacing(np.abs(ref))


@pytest.mark.parametrize("name, ours, ref, max_ulp", [("erf", kerf.erf, math.erf, ERF_MAX_ULP),
                                                     ("erfc", kerf.erfc, math.erfc, ERFC_MAX_ULP)])
def test_erf_within_a_few_ulp_of_libm(name, ours, ref, max_ulp):
    x = _grid()
    want = np.array([ref(v) for v in x])
    got = ours(x)
    u = _ulps(got, want)
    worst = int(np.argmax(u))
    assert u[worst] <= max_ulp, f"{name}({x[worst]!r}) = {got[worst]!r}, libm {want[worst]!r}: {u[worst]} ulp"


def test_erf_nan_propagates_sign_of_zero_and_dtype_are_kept():
    assert np.signbit(kerf.erf(np.array([-0.0])))[0]
    assert np.isnan(kerf.erf(np.array([np.nan]))).all() and np.isnan(kerf.erfc(np.array([np.nan]))).all()
    x32 = np.linspace(-6, 6, 1001, dtype=np.float32)
    got = kerf.erf(x32)
    assert got.dtype == np.float32
    assert np.abs(got - np.array([math.erf(v) for v in x32.astype(np.float64)])).max() <= 4e-7


def test_normal_cdf_keeps_relative_accuracy_in_the_lower_tail():
    x = -np.linspace(1, 37, 721)
    z = x * (-1.0 / math.sqrt(2.0))  # the argument normal_cdf passes to erfc, rounded the same way
    want = np.array([0.5 * math.erfc(v) for v in z])
    rel = np.abs(kerf.normal_cdf(x) - want) / want
    # ½·(1 + erf(x/√2)) would leave no correct digit past x = −8.3; the rounding of a² = z² would cost ~a² ulp in
    # e^(−a²) without Cody's split of the exponent (~7e-14 at x = −37, where Φ ~ 6e-300)
    assert rel.max() <= 4e-15


def _gelu_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x·Φ(x) and Φ(x) + x·φ(x) element by element from math.erfc (the exact lower tail)."""
    cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in x])
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return x * cdf, cdf + x * pdf


@pytest.mark.parametrize("nthreads", [1, 2])
def test_fused_gelu_erf_pair_matches_libm_everywhere(nthreads, monkeypatch):
    monkeypatch.setattr(threads, "MIN_PARALLEL", 1)
    monkeypatch.setattr(kgelu, "_CHUNK", 4096)  # several chunks, some with no far-tail or small-range element
    before = threads.get_num_threads()
    threads.set_num_threads(nthreads)
    try:
        x = np.concatenate([np.linspace(-12, 12, 24001), np.full(5000, 0.1), np.full(5000, -9.0), [0.0, -0.0]])
        out, deriv = kgelu.gelu_erf_forward_inplace(x)
    finally:
        threads.set_num_threads(before)
    want, dwant = _gelu_reference(x)
    assert np.abs(out - want).max() <= 4 * np.spacing(12.0)
    assert np.abs(deriv - dwant).max() <= 4e-16
    # relative error, lower tail included: the fused kernel does not split e^(−x²/2)'s exponent, so the rounding of
    # x²/2 (and of x/√2) costs ~x² ulp there, where outputs are below 1e-18 (3e-14 measured at x = −12)
    rel = np.abs(out - want) / np.maximum(np.abs(want), 1e-300)
    assert rel.max() <= (2 + x * x).max() * np.finfo(np.float64).eps
    assert rel[np.abs(x) <= 3].max() <= 4e-15


def test_fused_gelu_erf_extremes_follow_torch():
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e300, -1e300, 40.0, -40.0])
    out, deriv = kgelu.gelu_erf_forward_inplace(x)
    xt = torch.tensor(x, requires_grad=True)
    ot = TF.gelu(xt)
    ot.backward(torch.ones_like(xt))
    np.testing.assert_array_equal(out, ot.detach().numpy())
    np.testing.assert_array_equal(deriv[3:], xt.grad.numpy()[3:])  # torch: nan at ±inf (inf·0), we agree on x=nan
    assert np.isnan(deriv[2])


@pytest.mark.parametrize("shape, scale", [((3, 7), 1.0), ((4, 50, 33), 3.0), ((2, 9000), 8.0)])
def test_gelu_erf_matches_torch_float64_with_random_upstream_gradient(shape, scale):
    x = np.random.default_rng(3).standard_normal(shape) * scale
    check_op(TF.gelu, F.gelu, [x], rtol=1e-10)


def test_gelu_erf_float32_matches_torch():
    x = (np.random.default_rng(4).standard_normal((64, 300)) * 4).astype(np.float32)
    check_op(TF.gelu, F.gelu, [x], rtol=1e-5, dtype=np.float32)


def test_fused_and_reference_gelu_erf_agree():
    x = np.random.default_rng(5).standard_normal((17, 301)) * 5
    g = np.random.default_rng(6).standard_normal(x.shape)
    out, deriv = kgelu.gelu_erf_forward_inplace(x)
    assert np.abs(out - kgelu.gelu_erf_forward(x)).max() <= 1e-14
    assert np.abs(kgelu.gelu_erf_backward_inplace(g, deriv) - kgelu.gelu_erf_backward(g, x)).max() <= 1e-14


def test_gelu_erf_autograd_uses_the_saved_derivative():
    x = tt.Tensor(np.linspace(-4, 4, 9), requires_grad=True)
    F.gelu(x).backward(np.full(9, 2.0))
    _, dwant = _gelu_reference(np.linspace(-4, 4, 9))
    assert np.abs(x.grad.numpy() - 2.0 * dwant).max() <= 1e-15


def test_float32_gelu_fit_error_and_tail_sign():
    """The odd polynomial g(x) of the float32 path: |Φ error| <= 3e-8 on [0, 30] in float64 arithmetic, and
    positive and increasing past the fitted range (so tanh saturates instead of turning back)."""
    x = np.linspace(0.0, 30.0, 300001)
    w = x * x
    g = x * np.polyval(kgelu.G[::-1], w)
    phi = np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in x])
    assert np.abs(0.5 * (1.0 + np.tanh(g)) - phi).max() <= 3e-8
    beyond = np.linspace(5.5, 1e4, 100001)
    p = np.polyval(kgelu.G[::-1], beyond * beyond)
    assert (p > 0).all() and (np.diff(beyond * p) > 0).all()


@pytest.mark.parametrize("nthreads", [1, 2])
def test_float32_gelu_erf_pair_within_float32_rounding(nthreads, monkeypatch):
    """float32 out and derivative against the float64 truth on a dense grid: absolute errors below torch's own
    float32 kernel's on the same grid (ours: 1.3e-7·max(1, |x|) and 2.0e-7 measured; torch: 3.5e-7 and 2.6e-7)."""
    monkeypatch.setattr(threads, "MIN_PARALLEL", 1)
    monkeypatch.setattr(kgelu, "_CHUNK32", 4096)
    before = threads.get_num_threads()
    threads.set_num_threads(nthreads)
    try:
        x32 = np.linspace(-20, 20, 400001).astype(np.float32)
        out, deriv = kgelu.gelu_erf_forward_inplace(x32)
    finally:
        threads.set_num_threads(before)
    assert out.dtype == deriv.dtype == np.float32
    want, dwant = _gelu_reference(x32.astype(np.float64))
    assert (np.abs(out - want) / np.maximum(1.0, np.abs(x32))).max() <= 2e-7
    assert np.abs(deriv - dwant).max() <= 3e-7


def test_float32_gelu_erf_extremes_follow_torch():
    x = np.array([-np.inf, np.nan, 0.0, -0.0, 1e30, -1e30, 40.0, -40.0, 1e4, -1e4, -3e38], dtype=np.float32)
    out, deriv = kgelu.gelu_erf_forward_inplace(x)
    xt = torch.tensor(x, requires_grad=True)
    ot = TF.gelu(xt)
    ot.backward(torch.ones_like(xt))
    np.testing.assert_array_equal(out, ot.detach().numpy())
    np.testing.assert_array_equal(deriv, xt.grad.numpy())
    # where torch's float32 kernel overflows or forms inf·0, ours keeps the limit: gelu(x) = x for huge x
    big, _ = kgelu.gelu_erf_forward_inplace(np.array([np.inf, 3e38], dtype=np.float32))
    np.testing.assert_array_equal(big, np.array([np.inf, 3e38], dtype=np.float32))


def test_float32_gelu_erf_backward_broadcast_and_threads():
    x = np.random.default_rng(7).standard_normal((3, 70000)).astype(np.float32)
    g = np.random.default_rng(8).standard_normal(x.shape).astype(np.float32)
    out, deriv = kgelu.gelu_erf_forward_inplace(x)
    np.testing.assert_array_equal(kgelu.gelu_erf_backward_inplace(g, deriv), g * deriv)
    np.testing.assert_array_equal(kgelu.gelu_erf_backward_inplace(np.float32(2.0), deriv), 2 * deriv)
