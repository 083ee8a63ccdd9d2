"""gpt/model.py: the whole GPT on numpy against torch (logits, loss, every gradient, 10 AdamW steps; float64 and
float32), bit-identical initial weights, the book's own ch. 4 GPTModel as a reference for names, shapes and logits,
the KV cache at model level, input errors, weight tying and configs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as tnn

import backends
from gpt.model import GPT_CONFIG_124M, GPT_CONFIGS, GPTConfig, GPTModel
from gpt.nn import to_numpy_any

CFG = {"vocab_size": 97, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2, "drop_rate": 0.0,
       "qkv_bias": True}
BATCH = np.random.default_rng(0).integers(0, 97, size=(3, 18))
INPUTS, TARGETS = BATCH[:, :16], BATCH[:, 1:17]  # (3, 16): the full context, so every pos_emb row gets a gradient


def pair(dtype: str, **overrides):
    cfg = {**CFG, **overrides}
    return (GPTModel(cfg, backend=backends.get_backend("numpy", dtype), seed=5),
            GPTModel(cfg, backend=backends.get_backend("torch", dtype), seed=5))


def loss_of(model, inputs=INPUTS, targets=TARGETS):
    """The book's calc_loss_batch: cross entropy of the flattened logits."""
    B = model.B
    logits = model(inputs)
    return B.F.cross_entropy(logits.flatten(0, 1), B.tensor(targets.reshape(-1))), logits


def worst(named_a: dict, named_b: dict, floor_frac: float = 1e-6) -> tuple[str, float]:
    """(name, error) of the worst tensor: max|a − b| / max(max|b|, floor_frac × the largest |b| of them all).

    The floor is DESIGN §5 trap (1): a tensor that is mathematically zero (W_key's bias gradient) holds rounding
    noise on both sides, so it is measured against the model's scale instead of against its own noise.
    """
    a = {k: to_numpy_any(v).astype(np.float64) for k, v in named_a.items()}
    b = {k: to_numpy_any(v).astype(np.float64) for k, v in named_b.items()}
    assert a.keys() == b.keys()
    floor = floor_frac * max(np.abs(v).max() for v in b.values())
    errs = {k: float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), floor)) for k in b}
    name = max(errs, key=errs.get)
    return name, errs[name]


TOLS = [("float64", 1e-10, 1e-8), ("float32", 1e-4, 1e-4)]  # (dtype, logits/loss bar, gradient/parameter bar)


@pytest.mark.parametrize("qkv_bias", [True, False])
@pytest.mark.parametrize("dtype,tol,grad_tol", TOLS)
def test_whole_model_matches_torch_forward_and_backward(dtype, tol, grad_tol, qkv_bias):
    m_np, m_t = pair(dtype, qkv_bias=qkv_bias)
    loss_np, logits_np = loss_of(m_np)
    loss_t, logits_t = loss_of(m_t)
    assert to_numpy_any(logits_np).dtype == np.dtype(dtype)
    name, err = worst({"logits": logits_np}, {"logits": logits_t})
    assert err <= tol, f"logits rel err {err:.2e}"
    assert abs(loss_np.item() - loss_t.item()) <= tol * abs(loss_t.item())
    loss_np.backward()
    loss_t.backward()
    g_np = {k: p.grad for k, p in m_np.named_parameters()}
    g_t = {k: p.grad for k, p in m_t.named_parameters()}
    assert len(g_t) == 2 + 2 * (13 + 3 * qkv_bias) + 3
    name, err = worst(g_np, g_t)
    assert err <= grad_tol, f"worst gradient: {name} rel err {err:.2e}"


@pytest.mark.parametrize("dtype,tol,grad_tol", TOLS)
def test_ten_adamw_steps_match_torch(dtype, tol, grad_tol):
    """Weight decay on. Without qkv_bias: W_key's bias has a mathematically zero gradient (trap (1)), and AdamW
    divides that rounding noise by √v + eps, so its trajectory is amplified noise on both engines, not a quantity
    with a reference value; the gradient test above covers it with the floor."""
    m_np, m_t = pair(dtype, qkv_bias=False)
    opts = [m.B.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1) for m in (m_np, m_t)]
    for step in range(10):
        for m, opt in zip((m_np, m_t), opts):
            m.zero_grad()
            o = step % 2  # alternate two windows of the batch
            loss_of(m, BATCH[:, o:o + 16], BATCH[:, o + 1:o + 17])[0].backward()
            opt.step()
    name, err = worst(dict(m_np.named_parameters()), dict(m_t.named_parameters()))
    assert err <= grad_tol, f"after 10 AdamW steps, worst parameter: {name} rel err {err:.2e}"
    assert worst({"l": m_np(INPUTS)}, {"l": m_t(INPUTS)})[1] <= tol
    assert not np.array_equal(to_numpy_any(m_np.tok_emb.weight), to_numpy_any(pair(dtype)[0].tok_emb.weight))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_gives_bit_identical_initial_weights(dtype):
    m_np, m_t = pair(dtype)
    sd_np, sd_t = m_np.state_dict(), m_t.state_dict()
    assert list(sd_np) == list(sd_t)
    for k in sd_np:
        assert np.array_equal(to_numpy_any(sd_np[k]), to_numpy_any(sd_t[k])), k
    other = GPTModel(CFG, backend=backends.get_backend("numpy", dtype), seed=6)
    assert not np.array_equal(to_numpy_any(other.tok_emb.weight), to_numpy_any(m_np.tok_emb.weight))


def test_init_follows_gpt2():
    m = GPTModel({**CFG, "n_layers": 8, "emb_dim": 64}, backend="numpy", seed=0)
    std = lambda p: float(to_numpy_any(p).std())  # noqa: E731
    assert 0.018 < std(m.tok_emb.weight) < 0.022
    assert 0.018 < std(m.trf_blocks[0].att.W_query.weight) < 0.022
    resid = 0.02 / np.sqrt(2 * 8)
    for p in (m.trf_blocks[3].att.out_proj.weight, m.trf_blocks[3].ff.layers[2].weight):
        assert 0.9 * resid < std(p) < 1.1 * resid
    assert np.all(to_numpy_any(m.trf_blocks[0].ff.layers[0].bias) == 0)
    assert np.all(to_numpy_any(m.final_norm.scale) == 1) and np.all(to_numpy_any(m.final_norm.shift) == 0)


def test_dropout_zero_train_equals_eval():
    for m in pair("float64"):
        assert np.array_equal(to_numpy_any(m.train()(INPUTS)), to_numpy_any(m.eval()(INPUTS)))
    m = GPTModel({**CFG, "drop_rate": 0.3}, backend="numpy")
    assert not np.array_equal(to_numpy_any(m.train()(INPUTS)), to_numpy_any(m.eval()(INPUTS)))
    assert np.array_equal(to_numpy_any(m.eval()(INPUTS)), to_numpy_any(m(INPUTS)))


# ---- the book's ch. 4 GPTModel, in the book's structure, as the reference for names, shapes and logits ----
class BookMultiHeadAttention(tnn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.W_query = tnn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = tnn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = tnn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = tnn.Linear(d_out, d_out)
        self.dropout = tnn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x):
        b, num_tokens, _ = x.shape
        keys = self.W_key(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        attn_scores = queries @ keys.transpose(2, 3)
        attn_scores.masked_fill_(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)
        attn_weights = self.dropout(torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1))
        context = (attn_weights @ values).transpose(1, 2).contiguous().view(b, num_tokens, self.d_out)
        return self.out_proj(context)


class BookLayerNorm(tnn.Module):
    def __init__(self, emb_dim):
        super().__init__()
        self.eps = 1e-5
        self.scale = tnn.Parameter(torch.ones(emb_dim))
        self.shift = tnn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


class BookGELU(tnn.Module):
    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh(torch.sqrt(torch.tensor(2.0 / torch.pi)) * (x + 0.044715 * x ** 3)))


class BookFeedForward(tnn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = tnn.Sequential(tnn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]), BookGELU(),
                                     tnn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]))

    def forward(self, x):
        return self.layers(x)


class BookTransformerBlock(tnn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.att = BookMultiHeadAttention(cfg["emb_dim"], cfg["emb_dim"], cfg["context_length"], cfg["drop_rate"],
                                          cfg["n_heads"], cfg["qkv_bias"])
        self.ff = BookFeedForward(cfg)
        self.norm1, self.norm2 = BookLayerNorm(cfg["emb_dim"]), BookLayerNorm(cfg["emb_dim"])
        self.drop_shortcut = tnn.Dropout(cfg["drop_rate"])

    def forward(self, x):
        x = x + self.drop_shortcut(self.att(self.norm1(x)))
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


class BookGPTModel(tnn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = tnn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = tnn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = tnn.Dropout(cfg["drop_rate"])
        self.trf_blocks = tnn.Sequential(*[BookTransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = BookLayerNorm(cfg["emb_dim"])
        self.out_head = tnn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def forward(self, in_idx):
        seq_len = in_idx.shape[1]
        x = self.tok_emb(in_idx) + self.pos_emb(torch.arange(seq_len, device=in_idx.device))
        return self.out_head(self.final_norm(self.trf_blocks(self.drop_emb(x))))


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_state_dict_and_logits_match_the_books_gptmodel(qkv_bias):
    cfg = {**CFG, "qkv_bias": qkv_bias}
    ours = GPTModel(cfg, backend=backends.get_backend("numpy", "float64"), seed=1)
    book = BookGPTModel(cfg).double().eval()
    want = {k: tuple(v.shape) for k, v in book.state_dict().items() if not k.endswith(".att.mask")}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert got == want
    for block in book.trf_blocks:  # DESIGN §5 trap (2): the book's GELU builds √(2/π) in float32
        block.ff.layers[1] = tnn.GELU(approximate="tanh")
    result = book.load_state_dict({k: torch.from_numpy(to_numpy_any(v)) for k, v in ours.state_dict().items()},
                                  strict=False)
    assert result.unexpected_keys == [] and all(k.endswith(".att.mask") for k in result.missing_keys)
    with torch.no_grad():
        ref = book(torch.from_numpy(INPUTS))
    assert worst({"logits": ours.eval()(INPUTS)}, {"logits": ref})[1] <= 1e-10


def test_model_accepts_backend_tensors_and_names_bad_inputs():
    m_np, m_t = pair("float64")
    ref = to_numpy_any(m_np(INPUTS))
    assert np.array_equal(to_numpy_any(m_np(m_np.B.tensor(INPUTS))), ref)
    assert worst({"l": m_t(torch.from_numpy(INPUTS))}, {"l": ref})[1] <= 1e-12
    for m in (m_np, m_t):
        with pytest.raises(ValueError, match=r"token id 97 is out of range for vocab_size=97"):
            m(np.array([[1, 97]]))
        with pytest.raises(ValueError, match=r"token id -1 is out of range for vocab_size=97"):
            m(np.array([[-1, 5]]))
        with pytest.raises(ValueError, match=r"sequence of 17 tokens is longer than context_length=16"):
            m(BATCH[:, :17])
        with pytest.raises(TypeError, match="token ids must be integers"):
            m(np.zeros((1, 3)))
        with pytest.raises(ValueError, match=r"shape \(batch, seq\)"):
            m(np.array([1, 2, 3]))


def test_load_state_dict_errors_name_key_and_shapes():
    m_np, m_t = pair("float64")
    sd = {k: to_numpy_any(v) for k, v in m_t.state_dict().items()}
    m_np.load_state_dict(m_t.state_dict())
    bad = {**sd, "trf_blocks.0.att.W_query.weight": np.zeros((32, 30))}
    with pytest.raises(ValueError, match=r"trf_blocks.0.att.W_query.weight: expected \(32, 32\), got \(32, 30\)"):
        m_np.load_state_dict(bad)
    renamed = {("trf_blocks.1.norm1.weight" if k == "trf_blocks.1.norm1.scale" else k): v for k, v in sd.items()}
    with pytest.raises(KeyError, match=r"missing keys \['trf_blocks.1.norm1.scale'\]; unexpected keys "
                                       r"\['trf_blocks.1.norm1.weight'\]"):
        m_np.load_state_dict(renamed)


def test_tied_weights_share_one_parameter_counted_once():
    tied = GPTModel({**CFG, "tie_weights": True}, backend="torch", seed=2)
    untied = GPTModel(CFG, backend="torch", seed=2)
    assert tied.out_head.weight is tied.tok_emb.weight
    assert "out_head.weight" not in tied.state_dict()
    assert tied.num_parameters() == untied.num_parameters() - 97 * 32
    assert np.array_equal(to_numpy_any(tied.tok_emb.weight), to_numpy_any(untied.tok_emb.weight))
    sd = {k: to_numpy_any(v) for k, v in untied.state_dict().items()}
    sd["out_head.weight"] = sd["tok_emb.weight"]
    tied.load_state_dict(sd)  # with the tied key ...
    del sd["out_head.weight"]
    tied.load_state_dict(sd)  # ... and without it
    with pytest.raises(ValueError, match="out_head.weight differs from tok_emb.weight, but this model ties them"):
        tied.load_state_dict({**sd, "out_head.weight": sd["tok_emb.weight"] + 1})
    tied(INPUTS).sum().backward()
    assert tied.tok_emb.weight.grad is not None


def test_configs_match_the_book():
    assert GPT_CONFIGS["124M"] is GPT_CONFIG_124M
    assert [(c["emb_dim"], c["n_layers"], c["n_heads"]) for c in GPT_CONFIGS.values()] == [
        (768, 12, 12), (1024, 24, 16), (1280, 36, 20), (1600, 48, 25)]
    cfg = GPTConfig.from_dict(GPT_CONFIG_124M)
    d = cfg.to_dict()   # the book's keys, plus extensions at their defaults (tie_weights, pad_vocab_multiple, ...)
    assert {k: d[k] for k in GPT_CONFIG_124M} == GPT_CONFIG_124M and d["tie_weights"] is False
    assert d["pad_vocab_multiple"] == 1
    with pytest.raises(ValueError, match=r"unknown config keys \['emb_size'\]"):
        GPTConfig.from_dict({"emb_size": 3})
    with pytest.raises(ValueError, match="emb_dim=30 must be divisible by n_heads=4"):
        GPTModel({**CFG, "emb_dim": 30}, backend="numpy")


def test_124m_parameter_count_is_the_books():
    """163,009,536 parameters (book §4.6), 124,412,160 with the output head tied to the token embedding."""
    m = GPTModel(GPT_CONFIG_124M, backend="numpy", seed=0)
    assert m.num_parameters() == 163_009_536
    assert m.num_parameters() - m.out_head.weight.numel() == 124_412_160
    est = m.memory_estimate(batch_size=2, seq_len=1024)
    assert est["params"] == 4 * 163_009_536 and est["adam_state"] == 2 * est["params"]
    assert est["total"] == sum(v for k, v in est.items() if k != "total")


@pytest.mark.parametrize("name", ["numpy", "torch", "cupy"])   # cupy: the CPU stand-in (tests/fakecupy)
def test_kv_cache_prefill_chunks_and_single_steps_equal_a_full_pass(name, request):
    if name == "cupy":
        request.getfixturevalue("fake_cupy")
    m = GPTModel(CFG, backend=backends.get_backend(name, "float64"), seed=3).eval()
    full = to_numpy_any(m(INPUTS))
    cache = m.new_kv_cache(3)
    parts = [to_numpy_any(m(INPUTS[:, lo:hi], cache=cache)) for lo, hi in [(0, 5), (5, 6), (6, 11), (11, 12),
                                                                          (12, 16)]]
    assert cache.pos == 16
    assert worst({"l": np.concatenate(parts, axis=1)}, {"l": full})[1] <= 1e-10
    with pytest.raises(ValueError, match="max_len=16 tokens: 16 cached \\+ 1 new do not fit"):
        m(INPUTS[:, :1], cache=cache)
    cache.reset()
    assert worst({"l": m(INPUTS[:, :4], cache=cache)}, {"l": full[:, :4]})[1] <= 1e-10
    with pytest.raises(ValueError, match="batch size 1 but the cache was made for 3"):
        m(INPUTS[:1, :1], cache=cache)
    with pytest.raises(ValueError, match="max_len=17 exceeds context_length=16"):
        m.new_kv_cache(1, max_len=17)


def test_torch_module_view_sees_the_same_parameters():
    m = GPTModel(CFG, backend="torch", seed=0)
    view = m.B.module(m)
    assert {id(p) for p in view.parameters()} == {id(p) for p in m.parameters()}
    assert torch.equal(view(INPUTS), m(INPUTS))


def test_torch_weight_init_is_pytorchs_layer_defaults_on_every_backend():
    """weight_init="torch": Embedding ~ N(0, 1), Linear weight and bias ~ U(±1/√fan_in) (what torch.nn gives the book's
    model), LayerNorm 1/0; bit-identical on numpy and torch; tying and vocabulary padding still hold."""
    cfg = {**CFG, "vocab_size": 500, "weight_init": "torch"}
    m_np = GPTModel(cfg, backend=backends.get_backend("numpy", "float64"), seed=7)
    m_t = GPTModel(cfg, backend=backends.get_backend("torch", "float64"), seed=7)
    sd = {k: to_numpy_any(v) for k, v in m_np.state_dict().items()}
    sd_t = {k: to_numpy_any(v) for k, v in m_t.state_dict().items()}
    assert sd.keys() == sd_t.keys() and all(np.array_equal(sd[k], sd_t[k]) for k in sd)
    for key in ("tok_emb.weight", "pos_emb.weight"):
        assert abs(sd[key].mean()) < 0.1 and abs(sd[key].std() - 1.0) < 0.05, key
    ref = tnn.Linear(32, 128)  # torch's own default Linear draws from the same interval
    assert np.abs(ref.weight.detach().numpy()).max() <= 1 / np.sqrt(32)
    linears = {name: mod.in_features for name, mod in m_np.named_modules() if type(mod).__name__ == "Linear"}
    assert len(linears) == 2 * 6 + 1
    for name, fan_in in linears.items():
        bound = 1 / np.sqrt(fan_in)
        for suffix in ("weight", "bias"):
            v = sd.get(f"{name}.{suffix}")
            if v is None:
                continue
            # drawn on ±bound: inside it, and (32+ draws) some beyond half of it (the gpt2 init's zero biases are not)
            assert 0.5 * bound < np.abs(v).max() <= bound, f"{name}.{suffix}"
            if v.size >= 1024:  # a uniform on ±bound has std bound/√3
                assert abs(v.std() / (bound / np.sqrt(3)) - 1) < 0.1, f"{name}.{suffix}"
    assert all(np.all(v == 1) for k, v in sd.items() if k.endswith("scale"))
    assert all(np.all(v == 0) for k, v in sd.items() if k.endswith("shift"))
    gpt2 = GPTModel({**cfg, "weight_init": "gpt2"}, backend=backends.get_backend("numpy", "float64"), seed=7)
    assert to_numpy_any(gpt2.state_dict()["tok_emb.weight"]).std() < 0.03
    tied = GPTModel({**cfg, "tie_weights": True, "pad_vocab_multiple": 64}, backend=backends.get_backend("numpy"),
                    seed=7)
    assert tied.out_head.weight is tied.tok_emb.weight
    rows = to_numpy_any(tied.tok_emb.weight)
    assert rows.shape[0] == 512 and np.all(rows[500:] == 0) and abs(rows[:500].std() - 1.0) < 0.05
    with pytest.raises(ValueError, match="weight_init='xavier' is not one of"):
        GPTConfig.from_dict({**CFG, "weight_init": "xavier"})
