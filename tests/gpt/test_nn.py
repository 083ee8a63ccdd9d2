"""gpt/nn.py: the Module walk (names, order, tied weights, modes), state_dict I/O and its errors, and each layer
on numpy against torch in float64 (forward and backward with a random upstream gradient)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import backends
from gpt.nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, Sequential, to_numpy_any

NP = backends.get_backend("numpy", dtype="float64")
TORCH = backends.get_backend("torch", dtype="float64")


def rel_err(a, b) -> float:
    a, b = to_numpy_any(a), to_numpy_any(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


class Tiny(Module):
    """A module exercising attributes, lists, dicts, a nested Sequential and a tied weight."""

    def __init__(self, B, rng):
        self.B = B
        self.first = Linear(B, 3, 4, rng=rng)
        self.raw = B.parameter(np.ones(2))
        self.blocks = ModuleList([Linear(B, 4, 4, rng=rng) for _ in range(2)])
        self.by_name = {"a": LayerNorm(B, 4)}
        self.seq = Sequential(Linear(B, 4, 5, rng=rng), Dropout(B, 0.5), Linear(B, 5, 3, bias=False, rng=rng))
        self.tied = Linear(B, 5, 3, bias=False, weight=self.seq[2].weight)


EXPECTED = ["first.weight", "first.bias", "raw", "blocks.0.weight", "blocks.0.bias", "blocks.1.weight",
            "blocks.1.bias", "by_name.a.scale", "by_name.a.shift", "seq.0.weight", "seq.0.bias", "seq.2.weight"]


@pytest.mark.parametrize("B", [NP, TORCH], ids=["numpy", "torch"])
def test_named_parameters_walk_definition_order_and_dedupe_tied(B):
    m = Tiny(B, np.random.default_rng(0))
    assert [n for n, _ in m.named_parameters()] == EXPECTED
    assert "tied.weight" in [n for n, _ in m.named_parameters(remove_duplicate=False)]
    assert m.num_parameters() == (12 + 4) + 2 + 2 * (16 + 4) + 8 + (20 + 5) + 15  # seq.2 counted once
    assert list(m.state_dict()) == EXPECTED
    assert [n for n, _ in m.named_modules()][:3] == ["", "first", "blocks"]
    m.raw.requires_grad_(False)
    assert "raw" in m.state_dict()  # frozen parameters stay in state_dict
    assert m.num_parameters(trainable_only=True) == m.num_parameters() - 2


def test_train_eval_recurse_into_lists_dicts_and_sequential():
    m = Tiny(NP, np.random.default_rng(0))
    assert m.eval() is m
    assert all(not sub.training for _, sub in m.named_modules())
    m.train()
    assert all(sub.training for _, sub in m.named_modules())
    assert m.seq[1].training


def test_same_rng_gives_bit_identical_layers_on_both_backends():
    for dtype in ("float32", "float64"):
        a = Tiny(backends.get_backend("numpy", dtype), np.random.default_rng(7)).state_dict()
        b = Tiny(backends.get_backend("torch", dtype), np.random.default_rng(7)).state_dict()
        for k in a:
            assert np.array_equal(to_numpy_any(a[k]), to_numpy_any(b[k])), k
            assert to_numpy_any(a[k]).dtype == np.dtype(dtype)


def test_load_state_dict_from_every_kind_of_tensor():
    src = Tiny(TORCH, np.random.default_rng(1))
    dst = Tiny(NP, np.random.default_rng(2))
    dst.load_state_dict(src.state_dict())  # torch tensors
    for (k, a), b in zip(dst.state_dict().items(), src.state_dict().values()):
        assert np.array_equal(to_numpy_any(a), to_numpy_any(b)), k
    back = Tiny(TORCH, np.random.default_rng(3))
    back.load_state_dict(dst.state_dict())  # tinytensor tensors
    back.load_state_dict({k: to_numpy_any(v) for k, v in dst.state_dict().items()})  # numpy arrays
    assert rel_err(back.first.weight, src.first.weight) == 0.0
    # the tied parameter's second name is accepted too, and loads the shared tensor
    sd = {k: to_numpy_any(v) for k, v in src.state_dict().items()}
    sd["tied.weight"] = sd.pop("seq.2.weight")
    back.load_state_dict(sd)
    assert back.tied.weight is back.seq[2].weight
    assert rel_err(back.seq[2].weight, src.seq[2].weight) == 0.0


def test_to_numpy_any_handles_bfloat16_and_plain_lists():
    t = torch.arange(4, dtype=torch.bfloat16)
    assert to_numpy_any(t).dtype == np.float32
    assert to_numpy_any([1, 2]).tolist() == [1, 2]
    assert to_numpy_any(NP.tensor(np.ones(2))).tolist() == [1.0, 1.0]


def test_load_state_dict_errors_name_the_key():
    m = Tiny(NP, np.random.default_rng(0))
    sd = {k: to_numpy_any(v).copy() for k, v in m.state_dict().items()}
    missing = dict(sd)
    del missing["first.bias"]
    with pytest.raises(KeyError, match=r"missing keys \['first.bias'\]"):
        m.load_state_dict(missing)
    with pytest.raises(KeyError, match=r"unexpected keys \['bogus'\]"):
        m.load_state_dict({**sd, "bogus": np.zeros(1)})
    before = to_numpy_any(m.first.weight).copy()
    bad = {**sd, "first.weight": sd["first.weight"] + 1, "blocks.1.weight": np.zeros((4, 3))}
    with pytest.raises(ValueError, match=r"blocks.1.weight: expected \(4, 4\), got \(4, 3\)"):
        m.load_state_dict(bad)
    assert np.array_equal(to_numpy_any(m.first.weight), before)  # a failed load changes nothing
    m.load_state_dict({"first.bias": np.full(4, 2.0), "bogus": 1}, strict=False)
    assert to_numpy_any(m.first.bias).tolist() == [2.0] * 4
    with pytest.raises(ValueError, match="first.bias: expected"):
        m.load_state_dict({"first.bias": np.zeros(5)}, strict=False)


def test_zero_grad_clears_gradients():
    m = Linear(NP, 3, 2, rng=np.random.default_rng(0))
    m(NP.tensor(np.ones((1, 3)))).sum().backward()
    assert m.weight.grad is not None
    m.zero_grad()
    assert m.weight.grad is None and m.bias.grad is None


def test_shared_weight_of_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"needs \(3, 4\)"):
        Linear(NP, 4, 3, weight=NP.parameter(np.zeros((4, 3))))


def test_dropout_probability_is_checked():
    with pytest.raises(ValueError, match="p=1.5"):
        Dropout(NP, 1.5)


def _run_layer(B, make, x, dout):
    layer = make(B)
    xt = B.tensor(x, requires_grad=True) if x.dtype.kind == "f" else B.tensor(x)
    out = layer(xt)
    (out * B.tensor(dout)).sum().backward()
    grads = {n: p.grad for n, p in layer.named_parameters()}
    if x.dtype.kind == "f":
        grads["input"] = xt.grad
    return out, grads


@pytest.mark.parametrize("name,make,x", [
    ("linear", lambda B: Linear(B, 6, 5, rng=np.random.default_rng(0)),
     np.random.default_rng(1).normal(size=(2, 3, 6))),
    ("embedding", lambda B: Embedding(B, 11, 4, rng=np.random.default_rng(0)), np.array([[1, 3, 3], [10, 0, 3]])),
    ("layer_norm", lambda B: LayerNorm(B, 6), np.random.default_rng(1).normal(size=(2, 3, 6))),
])
def test_layers_match_torch_in_float64(name, make, x):
    out_shape = {"linear": (2, 3, 5), "embedding": (2, 3, 4), "layer_norm": (2, 3, 6)}[name]
    dout = np.random.default_rng(2).normal(size=out_shape)
    out_np, g_np = _run_layer(NP, make, x, dout)
    out_t, g_t = _run_layer(TORCH, make, x, dout)
    assert out_np.shape == tuple(out_t.shape) == out_shape
    assert rel_err(out_np, out_t) <= 1e-12
    assert g_np.keys() == g_t.keys()
    for k in g_np:
        assert rel_err(g_np[k], g_t[k]) <= 1e-12, f"{name} gradient of {k}"


def test_linear_and_layernorm_are_torch_nn_layers():
    lin = Linear(TORCH, 4, 3, rng=np.random.default_rng(0))
    ref = torch.nn.Linear(4, 3).double()
    ref.load_state_dict({"weight": lin.weight.detach(), "bias": lin.bias.detach()})
    x = torch.randn(2, 4, dtype=torch.float64)
    assert torch.equal(lin(x), ref(x))
    ln = LayerNorm(TORCH, 4)
    assert torch.allclose(ln(x), torch.nn.LayerNorm(4).double()(x), rtol=0, atol=1e-14)


def test_dropout_module_follows_the_mode():
    d = Dropout(NP, 0.5)
    x = NP.tensor(np.ones((64, 64)))
    assert not np.array_equal(to_numpy_any(d(x)), np.ones((64, 64)))
    d.eval()
    assert np.array_equal(to_numpy_any(d(x)), np.ones((64, 64)))
