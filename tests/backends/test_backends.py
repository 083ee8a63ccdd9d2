"""The backend interface: conformance of every backend to base.Backend, dtype/device rules, clear errors."""
import inspect
import sys

import numpy as np
import pytest

import backends
from backends.base import Backend

AVAILABLE = ["numpy", "torch", "cupy"]   # cupy: the CPU stand-in (tests/fakecupy) unless a real GPU is here


@pytest.fixture
def cupy_ready(request):
    """get_backend("cupy") works: a real CuPy with a GPU when there is one, else the strict CPU stand-in."""
    if not _has_real_cupy():
        request.getfixturevalue("fake_cupy")


def _has_real_cupy() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _public_methods(cls):
    return {n: m for n, m in inspect.getmembers(cls) if not n.startswith("_") and callable(m)}


def _params(fn):
    """Names, kinds and defaults of a signature (annotations may name each engine's own types)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def _backend_classes():
    from backends.cupy_backend import CupyBackend
    from backends.numpy_backend import NumpyBackend
    from backends.torch_backend import TorchBackend

    return [NumpyBackend, CupyBackend, TorchBackend]


@pytest.mark.parametrize("cls", _backend_classes(), ids=lambda c: c.__name__)
def test_every_backend_implements_the_interface_with_the_same_signatures(cls):
    assert issubclass(cls, Backend)
    assert not inspect.isabstract(cls), f"{cls.__name__} leaves abstract methods: {cls.__abstractmethods__}"
    for name, base_fn in _public_methods(Backend).items():
        impl = getattr(cls, name)
        assert _params(impl) == _params(base_fn), f"{cls.__name__}.{name} signature differs from Backend's"


@pytest.mark.parametrize("name", AVAILABLE)
def test_instances_expose_the_design_contract(name, cupy_ready):
    B = backends.get_backend(name, dtype="float64")
    for attr in ("tensor", "to_numpy", "F", "AdamW", "no_grad", "manual_seed", "clip_grad_norm", "autocast", "module"):
        assert hasattr(B, attr), attr
    for fn in ("linear", "embedding", "layer_norm", "gelu", "softmax", "log_softmax", "cross_entropy", "dropout",
               "scaled_dot_product_attention", "rms_norm", "silu"):
        assert callable(getattr(B.F, fn)), fn
    F_params = {fn: list(inspect.signature(getattr(B.F, fn)).parameters) for fn in ("cross_entropy", "dropout")}
    assert "ignore_index" in F_params["cross_entropy"] and "training" in F_params["dropout"]
    assert callable(B.rotary_embedding)


def _llama_ops(B, x, w, cos, sin, q, kv):
    """rms_norm, silu, rotary_embedding and grouped-query attention through the interface, as the Llama model calls
    them; returns the summed loss under fixed upstream gradients and the inputs' gradients."""
    ins = [B.tensor(a, requires_grad=True) for a in (x, w, q, kv)]
    tx, tw, tq, tkv = ins
    h = B.F.silu(B.F.rms_norm(tx, (x.shape[-1],), tw, 1e-6))
    r = B.rotary_embedding(tq, B.tensor(cos), B.tensor(sin))
    a = B.F.scaled_dot_product_attention(r, tkv, tkv, is_causal=True, enable_gqa=True)
    rng = np.random.default_rng(1)
    loss = (h * B.tensor(rng.standard_normal(h.shape))).sum() + (a * B.tensor(rng.standard_normal(a.shape))).sum()
    loss.backward()
    return [B.to_numpy(loss)] + [B.to_numpy(t.grad) for t in ins]


def test_llama_ops_agree_across_backends_in_float64(cupy_ready):
    rng = np.random.default_rng(0)
    angles = np.outer(np.arange(5), 10000.0 ** (-np.arange(0, 8, 2) / 8))
    cos, sin = np.cos(np.concatenate([angles] * 2, -1)), np.sin(np.concatenate([angles] * 2, -1))  # (5, 8)
    args = (rng.standard_normal((2, 5, 6)), rng.standard_normal(6), cos, sin, rng.standard_normal((2, 4, 5, 8)),
            rng.standard_normal((2, 2, 5, 8)))
    ref = _llama_ops(backends.get_backend("torch", dtype="float64"), *args)
    for name in ("numpy", "cupy"):
        ours = _llama_ops(backends.get_backend(name, dtype="float64"), *args)
        for a, b in zip(ours, ref):
            assert np.abs(a - b).max() <= 1e-10 * np.abs(b).max(), name


@pytest.mark.parametrize("name", AVAILABLE)
def test_rotary_embedding_bad_tables_raise_the_same_error(name, cupy_ready):
    B = backends.get_backend(name, dtype="float64")
    with pytest.raises(ValueError, match=r"cos/sin of shape \(6, 8\) do not broadcast to x of shape \(1, 2, 5, 8\)"):
        B.rotary_embedding(B.tensor(np.zeros((1, 2, 5, 8))), B.tensor(np.zeros((6, 8))), B.tensor(np.zeros((6, 8))))
    with pytest.raises(ValueError, match="must be even"):
        B.rotary_embedding(B.tensor(np.zeros((5, 7))), B.tensor(np.zeros((5, 7))), B.tensor(np.zeros((5, 7))))


@pytest.mark.parametrize("name", AVAILABLE)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tensor_dtypes_and_round_trip(name, dtype, cupy_ready):
    B = backends.get_backend(name, dtype=dtype)
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = B.tensor(a)
    out = B.to_numpy(t)
    assert out.dtype == np.dtype(dtype) and np.array_equal(out, a)
    ids = B.to_numpy(B.tensor(np.array([[1, 2]], dtype=np.int32)))
    assert ids.dtype == np.int64
    assert B.to_numpy(B.tensor(np.array([True, False]))).dtype == np.bool_
    z = B.zeros((2, 4))
    assert B.to_numpy(z).shape == (2, 4) and not B.to_numpy(z).any()


@pytest.mark.parametrize("name", AVAILABLE)
def test_parameters_are_native_and_assignable(name, cupy_ready):
    B = backends.get_backend(name, dtype="float64")
    p = B.parameter(np.ones((2, 2)))
    assert B.is_parameter(p) and not B.is_parameter(B.tensor(np.ones(2)))
    B.assign(p, np.full((2, 2), 3.0))
    assert np.array_equal(B.to_numpy(p), np.full((2, 2), 3.0))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        B.assign(p, np.zeros(3))
    frozen = B.parameter(np.ones(2), requires_grad=False)
    assert B.is_parameter(frozen) and not frozen.requires_grad


def test_same_seed_same_arrays_on_every_backend(cupy_ready):
    draws = []
    for name in AVAILABLE:
        B = backends.get_backend(name, dtype="float64")
        rng = np.random.default_rng(123)
        draws.append(B.to_numpy(B.parameter(rng.normal(0, 0.02, (4, 5)))))
    assert all(np.array_equal(draws[0], d) for d in draws[1:])


def test_unknown_backend_lists_the_choices():
    with pytest.raises(ValueError, match="unknown backend 'jax'; choose one of numpy, cupy, torch"):
        backends.get_backend("jax")


def test_unsupported_dtype_and_device_are_clear():
    with pytest.raises(ValueError, match="bfloat16.*not supported by the numpy backend"):
        backends.get_backend("numpy", dtype="bfloat16")
    with pytest.raises(ValueError, match="CPU only"):
        backends.get_backend("numpy", device="cuda")
    with pytest.raises(ValueError, match="torch backend only"):
        backends.get_backend("numpy").autocast("bfloat16")


def test_cupy_missing_or_no_gpu_is_one_clear_sentence(monkeypatch):
    try:
        import cupy  # noqa: F401
        has_cupy = True
    except ImportError:
        has_cupy = False
    if has_cupy:
        pytest.skip("CuPy is installed here; the missing-CuPy message cannot be observed")
    with pytest.raises(ImportError, match=r'pip install "tinygpt\[cupy\]"'):
        backends.get_backend("cupy")


def test_torch_missing_is_one_clear_sentence(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "tinygpt\[torch\]"'):
        backends.get_backend("torch")


def test_torch_cuda_without_a_device_is_clear():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        backends.get_backend("torch", device="cuda")


@pytest.mark.parametrize("name", AVAILABLE)
def test_no_grad_and_clip_and_adamw_through_the_interface(name, cupy_ready):
    B = backends.get_backend(name, dtype="float64")
    p = B.parameter(np.array([3.0, 4.0]))
    with B.no_grad():
        y = (p * p).sum()
    assert not y.requires_grad
    loss = (p * p).sum()
    loss.backward()
    norm = B.clip_grad_norm([p], 1.0)
    assert abs(norm - 10.0) < 1e-12
    np.testing.assert_allclose(B.to_numpy(p.grad), [0.6, 0.8], rtol=1e-6)
    opt = B.AdamW([p], lr=0.1, weight_decay=0.0)
    opt.step()
    np.testing.assert_allclose(B.to_numpy(p), [2.9, 3.9], rtol=1e-6)


@pytest.mark.gpu
def test_cupy_backend_round_trip_on_the_gpu():
    B = backends.get_backend("cupy", dtype="float64")
    a = np.arange(12.0).reshape(3, 4)
    t = B.tensor(a, requires_grad=True)
    (t * t).sum().backward()
    assert np.array_equal(B.to_numpy(t.grad), 2 * a)
