"""Llama 3 and Qwen3 as GPTModel configs: logits vs `transformers` in float64, gradients numpy vs torch, generation
(cached == uncached == transformers' greedy), Hugging Face directories in (sharded, bfloat16) and out.

No downloads: tiny random models are built with `transformers` and saved to tmp_path (hf_tiny.py, which also
holds the float64 reference of DESIGN.md §5 trap 3).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import backends  # noqa: E402
import gpt  # noqa: E402
from gpt.generate import generate  # noqa: E402
from gpt.model import GPTModel  # noqa: E402
from hf_tiny import LLAMA3_SCALING, VOCAB, exact_float64, hf_logits, make_hf_dir, rel_err  # noqa: E402

IDS = np.random.default_rng(0).integers(0, VOCAB, size=(2, 21))


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def family(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    return request.param, path, make_hf_dir(request.param, path)


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_logits_match_transformers_float64(family, backend):
    kind, path, hf = family
    model = gpt.from_pretrained(path, backend=backends.get_backend(backend, dtype="float64"))
    assert model.cfg.arch == kind and not model.training
    got = model.B.to_numpy(model(IDS))
    assert rel_err(got, hf_logits(hf, IDS)) <= 1e-8


def test_config_read_from_hf(family):
    kind, path, _ = family
    cfg = gpt.from_pretrained(path).cfg
    assert (cfg.n_heads, cfg.kv_heads, cfg.norm, cfg.positions, cfg.mlp) == (4, 2, "rmsnorm", "rope", "swiglu")
    if kind == "llama":
        assert cfg.tie_weights and cfg.rope_scaling == LLAMA3_SCALING and cfg.dim_per_head == 8 and not cfg.qk_norm
    else:
        assert not cfg.tie_weights and cfg.rope_scaling is None and cfg.dim_per_head == 16 and cfg.qk_norm
        assert cfg.rope_theta == 1e6
    assert GPTModel(cfg.to_dict()).cfg == cfg   # what state.json saves rebuilds the same family


def _grads(model, ids: np.ndarray, dlogits: np.ndarray) -> dict[str, np.ndarray]:
    model.train()
    B = model.B
    logits = model(ids)
    (logits * B.tensor(dlogits)).sum().backward()
    return {name: B.to_numpy(p.grad) for name, p in model.named_parameters()}


def test_every_gradient_numpy_vs_torch_float64(family):
    """Random upstream gradient; tensors whose gradient is ~0 on both sides are held to the DESIGN §5 floor."""
    _, path, _ = family
    dlogits = np.random.default_rng(1).standard_normal((*IDS.shape, VOCAB))
    grads = {}
    for name in ("numpy", "torch"):
        model = gpt.from_pretrained(path, backend=backends.get_backend(name, dtype="float64"))
        grads[name] = _grads(model, IDS, dlogits)
    assert grads["numpy"].keys() == grads["torch"].keys()
    floor = 1e-6 * max(float(np.abs(g).max()) for g in grads["torch"].values())
    for key, want in grads["torch"].items():
        err = float(np.abs(grads["numpy"][key] - want).max()) / max(float(np.abs(want).max()), floor)
        assert err <= 1e-8, (key, err)


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_cached_generation_equals_uncached_and_transformers_greedy(family, backend):
    _, path, hf = family
    model = gpt.from_pretrained(path, backend=backends.get_backend(backend, dtype="float64"))
    prompt = IDS[:1, :5]
    cached = generate(model, prompt, 12, model.cfg.context_length, use_cache=True)
    uncached = generate(model, prompt, 12, model.cfg.context_length, use_cache=False)
    with torch.no_grad(), exact_float64():
        want = hf.generate(torch.tensor(prompt), max_new_tokens=12, do_sample=False, eos_token_id=None,
                           pad_token_id=0).numpy()
    np.testing.assert_array_equal(cached, uncached)
    np.testing.assert_array_equal(cached, want)


def test_kv_cache_holds_key_value_heads_only(family):
    _, path, _ = family
    model = gpt.from_pretrained(path, backend=backends.get_backend("numpy", dtype="float64"))
    cache = model.new_kv_cache(3, max_len=10)
    assert tuple(cache.layers[0].keys.shape) == (3, 2, 10, model.cfg.dim_per_head)
    model(IDS[:, :4].repeat(2, axis=0)[:3], cache=cache)
    assert cache.pos == 4


def test_cached_prefill_then_steps_matches_full_forward(family):
    """Logits of a prompt fed in chunks through the cache (RoPE offsets 0, 4, 5) equal one uncached forward."""
    _, path, _ = family
    model = gpt.from_pretrained(path, backend=backends.get_backend("torch", dtype="float64"))
    full = model.B.to_numpy(model(IDS[:, :9]))
    cache = model.new_kv_cache(2, max_len=16)
    parts = [model.B.to_numpy(model(IDS[:, a:b], cache=cache)) for a, b in ((0, 4), (4, 5), (5, 9))]
    assert rel_err(np.concatenate(parts, axis=1), full) <= 1e-12


def test_sharded_bfloat16_directory_loads(tmp_path):
    hf = make_hf_dir("qwen3", tmp_path / "src")
    hf.to(torch.bfloat16).save_pretrained(tmp_path / "bf16", max_shard_size="20KB")
    assert (tmp_path / "bf16" / "model.safetensors.index.json").is_file()
    header = json.loads(open(next((tmp_path / "bf16").glob("*-of-*.safetensors")), "rb").read()[8:][:2000]
                        .split(b"}}")[0] + b"}}")
    assert any(v.get("dtype") == "BF16" for k, v in header.items() if k != "__metadata__")
    model = gpt.from_pretrained(tmp_path / "bf16", backend=backends.get_backend("numpy", dtype="float64"))
    ref = transformers.Qwen3ForCausalLM.from_pretrained(tmp_path / "bf16", attn_implementation="sdpa").double()
    assert rel_err(model.B.to_numpy(model(IDS)), hf_logits(ref.eval(), IDS)) <= 1e-8


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_export_loads_in_transformers_with_the_same_logits(kind, tmp_path):
    from gpt.families import ARCH_CONFIGS, export_hf_decoder

    cfg = {**ARCH_CONFIGS[kind], "vocab_size": VOCAB, "context_length": 32, "emb_dim": 32, "n_heads": 4,
           "n_layers": 2, "hidden_dim": 40, "drop_rate": 0.0, "tie_weights": kind == "llama",
           "rope_scaling": LLAMA3_SCALING if kind == "llama" else None}
    if kind == "qwen3":
        cfg["head_dim"] = 16
    model = GPTModel(cfg, backend=backends.get_backend("numpy", dtype="float64"), seed=3).eval()
    export_hf_decoder(model, tmp_path)
    with exact_float64():
        hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa")
    assert type(hf).__name__ == {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}[kind]
    assert rel_err(model.B.to_numpy(model(IDS)), hf_logits(hf.double().eval(), IDS)) <= 1e-8
    again = gpt.from_pretrained(tmp_path, backend=model.B)
    assert again.cfg == model.cfg


def test_unknown_model_type_is_a_value_error_naming_it(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(ValueError, match=r"model_type 'mamba' is not supported; tinygpt loads bert, gpt2, llama, qwen3"):
        gpt.from_pretrained(tmp_path)


def test_unsupported_rope_scaling_is_named(tmp_path):
    make_hf_dir("llama", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("rope_parameters", None)
    config["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"rope scaling of type 'yarn' is not supported"):
        gpt.from_pretrained(tmp_path)


def test_hub_style_config_rope_scaling_and_theta(tmp_path):
    """The hub's files (transformers 4) spell rope_theta and rope_scaling at the top level; both load the same."""
    hf = make_hf_dir("llama", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    params = config.pop("rope_parameters")
    config["rope_theta"] = params.pop("rope_theta")
    config["rope_scaling"] = params
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = gpt.from_pretrained(tmp_path, backend=backends.get_backend("torch", dtype="float64"))
    assert model.cfg.rope_scaling == LLAMA3_SCALING
    assert rel_err(model.B.to_numpy(model(IDS)), hf_logits(hf, IDS)) <= 1e-8


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_rows_of_different_lengths_in_one_cache_rotate_at_their_own_positions(family, backend):
    """Batched serving's cache (set_row_lengths): each row's new tokens get RoPE at its own positions and see only
    its own keys, so the logits equal each sequence's own uncached forward."""
    _, path, _ = family
    model = gpt.from_pretrained(path, backend=backends.get_backend(backend, dtype="float64"))
    a, b = IDS[0, :7], IDS[1, :4]
    cache = model.new_kv_cache(2, max_len=16)
    model(np.stack([a[:5], np.concatenate([b[:3], [0, 0]])]), cache=cache)   # row 1: 3 real tokens, 2 junk
    cache.set_row_lengths([5, 3])
    got = model.B.to_numpy(model(np.stack([a[5:7], [b[3], 7]]), cache=cache))   # (2, 2, vocab)
    want_a = model.B.to_numpy(model(a[None, :7]))[0, 5:7]
    want_b = model.B.to_numpy(model(np.concatenate([b, [7]])[None]))[0, 3:5]
    assert rel_err(got[0], want_a) <= 1e-12 and rel_err(got[1], want_b) <= 1e-12


def test_inspect_attention_maps_of_a_gqa_rope_model_reproduce_its_attention_output(family):
    """gpt.inspect's attention_weights on Llama/Qwen3 layers (QK-norm, RoPE, shared key/value heads): P·V through
    out_proj gives back the layer's own output, so the maps are the ones the model used."""
    from gpt.inspect.measure import attention_weights

    _, path, _ = family
    model = gpt.from_pretrained(path, backend=backends.get_backend("numpy", dtype="float64"))
    att, B = model.trf_blocks[1].att, model.B
    x = B.tensor(np.random.default_rng(2).standard_normal((2, 9, model.cfg.emb_dim)))
    probs = attention_weights(att, x)                                       # (b, nh, t, t)
    assert np.allclose(probs.sum(-1), 1.0) and np.all(np.triu(probs, 1) == 0)
    _, _, v = att._heads(x, 0)
    v = np.repeat(B.to_numpy(v), att.num_heads // att.num_kv_heads, axis=1)   # (b, nh, t, hd)
    ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(2, 9, -1)
    want = B.to_numpy(att(x))
    assert rel_err(B.to_numpy(att.out_proj(B.tensor(ctx))), want) <= 1e-12
