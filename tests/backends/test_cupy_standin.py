"""The cupy backend on the strict CuPy stand-in (tests/fakecupy, issue 19 part 1), on the CPU.

First the stand-in itself is held to CuPy's rules (a lenient fake would make every other test here vacuous). Then the
same seeded float64 work runs on numpy and on the stand-in: ops forward and backward with a random upstream gradient,
the book's attention classes, the whole model's gradients, the optimizers, the trainer (pretraining and a
classification objective), generation, fine-tuning, gradcheck and the CLI. Values agree to 1e-12 relative (1e-8 for
whole-model gradients and weights, with DESIGN §5's floor): the engines share every formula and differ only in the
order of a few float operations (NumPy's in-place GELU, its segment-sum embedding backward, its flat AdamW).
Then the device-to-host transfers are counted, as measured facts the code was made to meet: none inside a forward or
backward or an optimizer step; per training step one (the loss, for the log), plus one for the gradient norm that
clip_grad_norm returns as a float when clipping is on, whatever the accumulation; one per generated token (the last
position's logits, which the host-side sampler needs).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import backends
from gpt.classify import calc_loss_batch_classifier, replace_head, set_trainable
from gpt.generate import generate, generate_stream
from gpt.instruct import custom_collate_fn
from gpt.lora import lora_layers, replace_linear_with_lora
from gpt.model import GPTModel
from gpt.nn import to_numpy_any
from gpt.pretrain import calc_loss_batch
from gpt.training import corpus
from gpt.training.config import TrainConfig
from gpt.training.trainer import pretrainer

CFG = {"vocab_size": 61, "context_length": 12, "emb_dim": 16, "n_heads": 2, "n_layers": 2, "drop_rate": 0.0,
       "qkv_bias": True}
RTOL = 1e-12
RNG = np.random.default_rng(3)
IDS = RNG.integers(0, 61, size=(2, 10))


def close(a, b, rtol=RTOL, floor=1e-300):
    """a == b up to rtol relative to b's largest magnitude, or to `floor` where that is larger (DESIGN §5 trap 1:
    a mathematically zero gradient is rounding noise on both engines, compared against 1e-6 × the model's largest)."""
    a, b = to_numpy_any(a), to_numpy_any(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    scale = max(float(np.abs(b).max()), floor)
    err = float(np.abs(a - b).max()) / scale
    assert err <= rtol, f"relative error {err:.2e} > {rtol:.0e}"


def pair(build=None, cfg=CFG, dtype="float64"):
    """The same seeded model on numpy and on the stand-in cupy, with `build(model)` applied to each."""
    models = []
    for name in ("numpy", "cupy"):
        m = GPTModel(cfg, backend=backends.get_backend(name, dtype), seed=3)
        if build is not None:
            build(m)
        models.append(m)
    return models


def on_device(t) -> bool:
    return type(t.data).__module__ == "cupy"


# ---- the stand-in keeps CuPy's rules ---------------------------------------------------------------------------

def test_standin_refuses_implicit_host_conversion_as_cupy_does(fake_cupy):
    import cupy

    a = cupy.asarray(np.arange(6.0).reshape(2, 3))
    for convert in (np.asarray, np.array, lambda x: np.stack([x, x])[0] + np.zeros(3)):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed|Unsupported type"):
            convert(a)
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        a + np.ones(3)
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        np.ones(3) * a
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        a[0] = np.ones(3)
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        np.concatenate([a, np.ones((1, 3))])
    assert type(a.data).__name__ == "_MemoryPointer"   # .data is device memory, not an array
    assert fake_cupy.d2h == 0


def test_standin_counts_every_way_to_the_host(fake_cupy):
    import cupy

    a = cupy.asarray(np.arange(6.0).reshape(2, 3))
    assert fake_cupy.h2d == 1
    s = a.sum()
    assert type(s) is cupy.ndarray and s.ndim == 0 and fake_cupy.d2h == 0   # reductions stay on the device
    assert float(s) == 15.0 and fake_cupy.d2h == 1                          # float() of a 0-d array is a sync
    with pytest.raises(TypeError):
        float(a)                                                             # of a larger one it fails (NumPy's rule)
    rows = list(a)                                                           # iteration yields device rows, no copy
    assert all(type(r) is cupy.ndarray for r in rows) and fake_cupy.d2h == 2
    with pytest.raises(TypeError, match="iteration over a 0-d array"):
        iter(s)
    assert np.array_equal(cupy.asnumpy(a), np.arange(6.0).reshape(2, 3)) and fake_cupy.d2h == 3
    a[a > 2] = 0                                                             # a boolean mask reads its count back
    assert fake_cupy.d2h == 4 and a.get().tolist() == [[0, 1, 2], [0, 0, 0]] and fake_cupy.d2h == 5
    assert type(np.exp(a)) is cupy.ndarray                                   # np.<ufunc> dispatches to the device
    ids = cupy.asarray(np.array([0, 2, -1]))
    assert a[ids].get().tolist() == a[cupy.asarray(np.array([0, 0, 1]))].get().tolist()   # 2 wraps to 0, as CuPy


def test_standin_lives_only_as_long_as_its_test():
    import sys

    import fakecupy

    mp = pytest.MonkeyPatch()
    before = sys.modules.get("cupy")
    fakecupy.install(mp)
    assert sys.modules["cupy"] is fakecupy.cupy and sys.modules["cupyx.scipy.special"].erf is not None
    mp.undo()
    assert sys.modules.get("cupy") is before
    assert sys.modules.get("cupyx.scipy.special") is not fakecupy.cupyx.scipy.special


# ---- the backend -----------------------------------------------------------------------------------------------

def test_backend_round_trip_and_to_numpy_of_a_raw_device_array(fake_cupy):
    B = backends.get_backend("cupy", dtype="float64")
    a = np.arange(12.0).reshape(3, 4)
    t = B.tensor(a, requires_grad=True)
    assert on_device(t) and t.device == "cuda"
    (t * t).sum().backward()
    assert np.array_equal(B.to_numpy(t.grad), 2 * a)
    assert np.array_equal(B.to_numpy(t.grad.data), 2 * a)   # a raw cupy array, not only a Tensor
    p = B.parameter(np.zeros((2, 2)))
    B.assign(p, np.ones((2, 2)))
    assert np.array_equal(B.to_numpy(p), np.ones((2, 2)))
    with pytest.raises(ValueError, match="'cuda' or 'cuda:N'"):
        backends.get_backend("cupy", device="cpu")


def test_clip_and_adamw_through_the_interface_with_one_transfer(fake_cupy):
    B = backends.get_backend("cupy", dtype="float64")
    p = B.parameter(np.array([3.0, 4.0]))
    (p * p).sum().backward()
    fake_cupy.reset()
    norm = B.clip_grad_norm([p], 1.0)
    assert abs(norm - 10.0) < 1e-12 and fake_cupy.d2h == 1
    opt = B.AdamW([p], lr=0.1, weight_decay=0.0)
    opt.step()
    assert fake_cupy.d2h == 1
    np.testing.assert_allclose(B.to_numpy(p), [2.9, 3.9], rtol=1e-6)


@pytest.mark.parametrize("make", [lambda B, ps: B.AdamW([{"params": ps[:1], "weight_decay": 0.1},
                                                         {"params": ps[1:], "weight_decay": 0.0}], lr=0.05),
                                  lambda B, ps: B.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01)],
                         ids=["adamw-groups", "sgd-momentum"])
def test_optimizer_steps_equal_numpy_and_state_stays_on_the_device(fake_cupy, make):
    r = np.random.default_rng(6)
    init, grads = [r.normal(size=(4, 3)), r.normal(size=3)], [[r.normal(size=(4, 3)), r.normal(size=3)]
                                                            for _ in range(5)]
    final = {}
    for name in ("numpy", "cupy"):
        B = backends.get_backend(name, "float64")
        ps = [B.parameter(a) for a in init]
        opt = make(B, ps)
        fake_cupy.reset()
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad = B.tensor(g)
            opt.step()
        assert fake_cupy.d2h == 0, fake_cupy.where()
        assert all(on_device(p) == (name == "cupy") for p in ps)
        final[name] = [B.to_numpy(p) for p in ps]
    for got, want in zip(final["cupy"], final["numpy"]):
        close(got, want)


# ---- ops: numpy == stand-in, forward and backward --------------------------------------------------------------

def _op_cases():
    r = np.random.default_rng(0)
    x3, w, b = r.normal(size=(2, 5, 8)), r.normal(size=(6, 8)), r.normal(size=6)
    q, k, v = (r.normal(size=(2, 2, 5, 4)) for _ in range(3))
    ids, t = r.integers(0, 6, size=(2, 5)), r.integers(0, 6, size=10)
    t[3] = -100
    return {
        "linear": (lambda B, F, a: F.linear(a[0], a[1], a[2]), [x3, w, b]),
        "embedding": (lambda B, F, a: F.embedding(B.tensor(ids), a[0]), [w]),
        "layer_norm": (lambda B, F, a: F.layer_norm(a[0], (8,), a[1], a[2]), [x3, r.normal(size=8), r.normal(size=8)]),
        "gelu_tanh": (lambda B, F, a: F.gelu(a[0], approximate="tanh"), [x3]),
        "gelu_erf": (lambda B, F, a: F.gelu(a[0]), [x3]),
        "softmax": (lambda B, F, a: F.softmax(a[0], dim=-1), [x3]),
        "log_softmax": (lambda B, F, a: F.log_softmax(a[0], dim=1), [x3]),
        "cross_entropy": (lambda B, F, a: F.cross_entropy(a[0].reshape(10, 8)[:, :6], B.tensor(t)), [x3]),
        "sdpa_causal": (lambda B, F, a: F.scaled_dot_product_attention(*a, is_causal=True), [q, k, v]),
        "sdpa_mask": (lambda B, F, a: F.scaled_dot_product_attention(
            *a, attn_mask=B.tensor(np.tril(np.ones((5, 5), dtype=bool), -1))), [q, k, v]),   # row 0 fully masked
        "flash": (lambda B, F, a: F.flash_attention(*a, is_causal=True), [q, k, v]),
        "primitives": (lambda B, F, a: (B.cat([a[0], a[0] * 2], dim=1).max(dim=-1).values.exp()
                                        + B.stack([a[0][:, 0], a[0][:, 1]], dim=0).sum(0).amax(-1).unsqueeze(1)
                                        ).permute(1, 0).var(0).sqrt().log(), [x3]),
        "where_index": (lambda B, F, a: B.where(a[0] > 0, a[0], a[0] * 3)[:, B.tensor(ids[0] % 5), 1:]
                        .masked_fill(B.tensor(ids[1] > 2).unsqueeze(-1), 0.5).tanh(), [x3]),
    }


@pytest.mark.parametrize("case", list(_op_cases()))
def test_ops_forward_and_backward_equal_numpy_without_a_transfer(case, fake_cupy):
    fn, arrays = _op_cases()[case]
    results = []
    for name in ("numpy", "cupy"):
        B = backends.get_backend(name, "float64")
        xs = [B.tensor(a, requires_grad=True) for a in arrays]
        fake_cupy.reset()
        out = fn(B, B.F, xs)
        dout = np.random.default_rng(1).normal(size=out.shape)
        (out * B.tensor(dout)).sum().backward()
        assert fake_cupy.d2h == 0, fake_cupy.where()
        assert on_device(out) == (name == "cupy")
        results.append([B.to_numpy(out)] + [B.to_numpy(x.grad) for x in xs])
    for got, want in zip(*reversed(results)):
        close(got, want)


def test_finite_difference_gradcheck_runs_on_the_device(fake_cupy):
    from tinytensor.gradcheck import gradcheck

    B = backends.get_backend("cupy", "float64")
    r = np.random.default_rng(2)
    x, w, b = (B.tensor(r.normal(size=s), requires_grad=True) for s in ((3, 5), (5,), (5,)))
    report = gradcheck(lambda x, w, b: B.F.layer_norm(x, (5,), w, b), (x, w, b))
    assert report.ok and on_device(x)


def test_out_of_range_ids_raise_on_the_host_and_give_nan_on_the_device(fake_cupy):
    B = backends.get_backend("cupy", "float64")
    w = B.tensor(np.ones((5, 3)), requires_grad=True)
    with pytest.raises(IndexError, match="token id 9 is out of range for an embedding of 5 rows"):
        B.F.embedding(np.array([1, 9]), w)
    out = B.to_numpy(B.F.embedding(B.tensor(np.array([1, 9, -1])), w))
    assert np.isnan(out[1:]).all() and np.array_equal(out[0], np.ones(3))
    logits = B.tensor(np.zeros((2, 4)))
    with pytest.raises(IndexError, match="Target 7 is out of bounds for 4 classes"):
        B.F.cross_entropy(logits, np.array([0, 7]))
    fake_cupy.reset()
    loss = B.F.cross_entropy(logits, B.tensor(np.array([0, 7])))
    assert fake_cupy.d2h == 0 and math.isnan(loss.item())
    per_row = B.to_numpy(B.F.cross_entropy(logits, B.tensor(np.array([0, 7])), reduction="none"))
    assert per_row[0] == pytest.approx(math.log(4)) and np.isnan(per_row[1])


# ---- the model, training, generation, fine-tuning ----------------------------------------------------------------

def compare_model(m_np, m_cp, grads=True):
    """Every gradient (or weight) of the stand-in model equals numpy's: the whole-model bar 1e-8 with the floor."""
    pick = (lambda p: p.grad) if grads else (lambda p: p)
    pairs = [(n, pick(p), pick(p_c)) for (n, p), (n_c, p_c) in zip(m_np.named_parameters(), m_cp.named_parameters())
             if n == n_c]
    assert len(pairs) == len(list(m_np.named_parameters()))
    floor = 1e-6 * max(float(np.abs(to_numpy_any(a)).max()) for _, a, _ in pairs if a is not None)
    for n, a, a_c in pairs:
        assert (a is None) == (a_c is None), n
        if a is not None:
            assert on_device(a_c), n
            close(a_c, a, rtol=1e-8, floor=floor)


@pytest.mark.parametrize("variant", [{}, {"flash_attention": True}, {"tie_weights": True, "pad_vocab_multiple": 64}],
                         ids=["plain", "flash", "tied-padded"])
def test_model_logits_and_every_gradient_equal_numpy_with_no_transfer(fake_cupy, variant):
    m_np, m_cp = pair(cfg={**CFG, **variant})
    targets = np.roll(IDS, -1, axis=1)
    for m in (m_np, m_cp):
        fake_cupy.reset()
        loss = calc_loss_batch(IDS, targets, m)
        loss.backward()
        assert fake_cupy.d2h == 0, fake_cupy.where()
    close(m_cp(IDS), m_np(IDS))
    compare_model(m_np, m_cp)


def test_ids_already_on_the_device_are_not_read_back(fake_cupy):
    m_np, m_cp = (m.eval() for m in pair())
    ids = m_cp.B.tensor(IDS)
    fake_cupy.reset()
    logits = m_cp(ids)
    assert fake_cupy.d2h == 0 and fake_cupy.h2d == 1, fake_cupy.where("h2d")   # only the positions go up
    close(logits, m_np(IDS))
    with pytest.raises(TypeError, match="token ids must be integers"):
        m_cp(m_cp.B.tensor(np.zeros((1, 3))))
    with pytest.raises(ValueError, match=r"shape \(batch, seq\)"):
        m_cp(m_cp.B.tensor(np.array([1, 2])))
    with pytest.raises(ValueError, match="token id 61 is out of range for vocab_size=61"):
        m_cp(np.array([[1, 61]]))   # host ids are still checked
    assert np.isnan(m_cp.B.to_numpy(m_cp(m_cp.B.tensor(np.array([[1, 61]])))[0, 1])).all()   # device: NaN


def test_dropout_runs_on_the_device_without_a_transfer(fake_cupy):
    B = backends.get_backend("cupy", "float64")
    m = GPTModel({**CFG, "drop_rate": 0.5}, backend=B, seed=3)
    B.manual_seed(0)
    fake_cupy.reset()
    loss = calc_loss_batch(IDS, np.roll(IDS, -1, axis=1), m)
    loss.backward()
    assert fake_cupy.d2h == 0, fake_cupy.where()
    assert math.isfinite(loss.item())
    x = B.tensor(np.ones((200, 50)))
    kept = B.to_numpy(B.F.dropout(x, p=0.5))
    assert set(np.unique(kept)) == {0.0, 2.0} and abs((kept == 0).mean() - 0.5) < 0.02   # inverted dropout


@pytest.mark.parametrize("cls,kw", [("SelfAttention_v1", {}), ("SelfAttention_v2", {"qkv_bias": True}),
                                    ("CausalAttention", {"context_length": 6, "dropout": 0.0}),
                                    ("MultiHeadAttentionWrapper", {"context_length": 6, "dropout": 0.0,
                                                                   "num_heads": 2}),
                                    ("MultiHeadAttention", {"context_length": 6, "dropout": 0.0, "num_heads": 2,
                                                            "use_sdpa": False})])
def test_the_books_attention_classes_equal_numpy(fake_cupy, cls, kw):
    import gpt.attention as attention

    x = np.random.default_rng(4).normal(size=(2, 6, 8))
    grads = []
    for name in ("numpy", "cupy"):
        B = backends.get_backend(name, "float64")
        layer = getattr(attention, cls)(B, 8, 4, rng=np.random.default_rng(1), **kw)
        xt = B.tensor(x, requires_grad=True)
        fake_cupy.reset()
        out = layer(xt)
        (out * B.tensor(np.random.default_rng(5).normal(size=out.shape))).sum().backward()
        assert fake_cupy.d2h == 0, fake_cupy.where()
        grads.append([B.to_numpy(out), B.to_numpy(xt.grad)] + [B.to_numpy(p.grad) for p in layer.parameters()])
    floor = 1e-6 * max(float(np.abs(g).max()) for g in grads[0])  # W_key.bias's gradient is 0 (softmax's shift)
    for got, want in zip(grads[1], grads[0]):
        close(got, want, floor=floor)


def _trainer(name, out_dir=None, **kw):
    """A tiny byte-level trainer; no dropout, since each engine draws its own masks (tinytensor.random)."""
    text = "the quick brown fox jumps over the lazy dog. " * 30
    ids = np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int64)
    model = GPTModel({**CFG, "vocab_size": 256}, backend=backends.get_backend(name, "float64"), seed=0)
    tc = TrainConfig(**{**dict(max_steps=4, batch_size=2, lr=3e-3, min_lr=3e-4, warmup_steps=1, eval_interval=2,
                               eval_iters=1, sample_tokens=3, sample_prompt="the", plot=False), **kw})
    return pretrainer(model, ids[:1200], ids[1200:], tc, tokenizer=corpus.bytes_tokenizer(), out_dir=out_dir)


@pytest.mark.parametrize("grad_clip,grad_accum,d2h", [(1.0, 1, 2), (0.0, 1, 1), (1.0, 2, 2)])
def test_training_steps_equal_numpy_and_transfer_only_the_loss_and_norm(fake_cupy, grad_clip, grad_accum, d2h):
    trainers = {name: _trainer(name, grad_clip=grad_clip, grad_accum=grad_accum) for name in ("numpy", "cupy")}
    losses = {}
    for name, tr in trainers.items():
        losses[name] = []
        for _ in range(3):
            fake_cupy.reset()
            losses[name].append(tr.train_step())
            assert fake_cupy.d2h == (d2h if name == "cupy" else 0), fake_cupy.where()
    np.testing.assert_allclose(losses["cupy"], losses["numpy"], rtol=RTOL)
    compare_model(trainers["numpy"].model, trainers["cupy"].model, grads=False)


def test_trainer_run_writes_the_same_metrics_and_resumes_on_the_device(fake_cupy, tmp_path):
    runs = {}
    for name in ("numpy", "cupy"):
        _trainer(name, tmp_path / name).run()
        runs[name] = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in runs["cupy"]] == [r["step"] for r in runs["numpy"]] == [0, 1, 2, 2, 3, 4, 4]
    for a, b in zip(runs["cupy"], runs["numpy"]):
        for key in ("train_loss", "val_loss"):
            assert (a.get(key) is None) == (b.get(key) is None)
            if a.get(key) is not None:
                assert a[key] == pytest.approx(b[key], rel=RTOL)
        assert a.get("sample") == b.get("sample")
    resumed = _trainer("cupy", tmp_path / "cupy", max_steps=6)
    assert resumed.resume() == 4
    assert all(on_device(p) for p in resumed.model.parameters())
    assert all(type(st["exp_avg"]).__module__ == "cupy" for st in resumed.optimizer.state.values())
    fresh = _trainer("numpy", tmp_path / "numpy", max_steps=6)
    fresh.resume()
    for _ in range(2):
        assert resumed.train_step() == pytest.approx(fresh.train_step(), rel=RTOL)


def test_a_classification_step_equals_numpy_and_reads_back_only_its_loss(fake_cupy):
    from gpt.classify import SpamDataset
    from gpt.training.objectives import Classification
    from gpt.training.trainer import Trainer

    tok = corpus.bytes_tokenizer()
    rows = [(f"message {i} " + "win a prize now! " * (i % 3), i % 2) for i in range(12)]
    data = SpamDataset(rows, tok, max_length=CFG["context_length"], pad_token_id=256)
    trainers = {}
    for name in ("numpy", "cupy"):
        model = GPTModel({**CFG, "vocab_size": 257}, backend=backends.get_backend(name, "float64"), seed=3)
        replace_head(model, 2, seed=1)
        set_trainable(model, "last-block")
        tc = TrainConfig(max_steps=3, batch_size=4, lr=1e-3, grad_clip=0.0, eval_iters=1, plot=False)
        trainers[name] = Trainer(model, Classification(data, data, pad_token_id=256), tc)
    losses = {name: [] for name in trainers}
    for name, tr in trainers.items():
        for _ in range(3):
            fake_cupy.reset()
            losses[name].append(tr.train_step())
            assert fake_cupy.d2h == (1 if name == "cupy" else 0), fake_cupy.where()
    np.testing.assert_allclose(losses["cupy"], losses["numpy"], rtol=RTOL)
    compare_model(trainers["numpy"].model, trainers["cupy"].model, grads=False)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.8, "top_k": 5, "seed": 2},
                                      {"temperature": 1.0, "top_p": 0.9, "seed": 4}], ids=["greedy", "top_k", "top_p"])
def test_generation_gives_numpy_tokens_with_one_transfer_per_token(fake_cupy, use_cache, sampling):
    m_np, m_cp = (m.eval() for m in pair())
    prompt = IDS[:1, :4]
    n = 14   # past context_length 12: the cache slides and re-prefills
    want = generate(m_np, prompt, n, CFG["context_length"], use_cache=use_cache, **sampling)
    fake_cupy.reset()
    got = generate(m_cp, prompt, n, CFG["context_length"], use_cache=use_cache, **sampling)
    assert np.array_equal(got, want)
    assert fake_cupy.d2h == n, fake_cupy.where()
    fake_cupy.reset()
    assert list(generate_stream(m_cp, prompt, 5, CFG["context_length"], use_cache=use_cache, **sampling)) == \
        want[0, 4:9].tolist()
    assert fake_cupy.d2h == 5


def test_classifier_and_lora_and_instruction_gradients_equal_numpy(fake_cupy):
    pad = 60
    ids = IDS.copy()
    ids[1, 6:] = pad

    def classifier(m):
        replace_head(m, 2, seed=1)
        set_trainable(m, "last-block")

    m_np, m_cp = pair(classifier)
    for m in (m_np, m_cp):
        fake_cupy.reset()
        calc_loss_batch_classifier(ids, np.array([1, 0]), m, pad_token_id=pad).backward()
        assert fake_cupy.d2h == 0, fake_cupy.where()
    compare_model(m_np, m_cp)

    def lora(m):
        replace_linear_with_lora(m, rank=2, alpha=2.0, rng=np.random.default_rng(9))
        for _, layer in lora_layers(m):
            m.B.assign(layer.lora.lora_B, np.random.default_rng(1).normal(0, 0.05, size=layer.lora.lora_B.shape))

    m_np, m_cp = pair(lora)
    items = [list(RNG.integers(0, pad, size=n)) for n in (9, 4)]
    inputs, targets = custom_collate_fn(items, pad_token_id=pad, allowed_max_length=CFG["context_length"])
    for m in (m_np, m_cp):
        calc_loss_batch(inputs, targets, m).backward()
    compare_model(m_np, m_cp)


# ---- the CLI ---------------------------------------------------------------------------------------------------

def test_cli_trains_and_generates_with_backend_cupy(fake_cupy, tmp_path, capsys):
    from gpt.cli import main

    data = tmp_path / "cats.txt"
    data.write_text("the cat sat on the mat. the dog sat on the log. " * 40, encoding="utf-8")
    tiny = ["--tokenizer", "bytes", "--context-length", "16", "--emb-dim", "16", "--n-heads", "2", "--n-layers", "1",
            "--batch-size", "4", "--max-steps", "4", "--eval-interval", "2", "--eval-iters", "1", "--drop-rate", "0.0",
            "--no-plot", "--sample-prompt", "the ", "--dtype", "float64"]
    runs = {}
    for name in ("numpy", "cupy"):
        assert main(["train", "--data", str(data), "--out", str(tmp_path / name), "--backend", name, *tiny]) == 0
        runs[name] = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(runs["cupy"], runs["numpy"]):
        assert a["step"] == b["step"] and a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-12)
    capsys.readouterr()
    texts = {}
    for name in ("numpy", "cupy"):
        assert main(["generate", "--checkpoint", str(tmp_path / "cupy"), "--prompt", "the ", "--max-new-tokens", "8",
                     "--seed", "5", "--backend", name, "--dtype", "float64"]) == 0
        texts[name] = capsys.readouterr().out
    assert texts["cupy"] == texts["numpy"] and len(texts["cupy"]) > 4
