"""Llama 3 and Qwen3 as GPTModel configs: logits vs `transformers` in float64, gradients numpy vs torch, generation
(cached == uncached == transformers' greedy), Hugging Face directories in (sharded, bfloat16) and out.

No downloads: tiny random models are built with `transformers` and saved to tmp_path. DESIGN.md §5 trap 3:
transformers computes RMSNorm's variance and RoPE's frequencies/angles in float32 even in a .double() model, so
the reference runs with those two steps patched to float64 (`exact_float64`): its RMSNorm forward replaced by the
same formula without the float32 cast, and `torch.float` pointed at float64 while the model is built and run (the
RoPE code names its dtype `torch.float`), so its own llama3 scaling code yields float64 frequencies.
"""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import backends  # noqa: E402
import gpt  # noqa: E402
from gpt.generate import generate  # noqa: E402
from gpt.model import GPTModel  # noqa: E402

VOCAB = 97
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 16}   # head_dim 8, theta 1e4: every band of the scaling is hit


def _rms_norm_float64(self, hidden_states):
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


@contextlib.contextmanager
def exact_float64():
    """transformers' two float32 steps (RMSNorm variance, RoPE tables) run in float64 inside this block."""
    from transformers.models.llama import modeling_llama
    from transformers.models.qwen3 import modeling_qwen3

    mp = pytest.MonkeyPatch()
    mp.setattr(modeling_llama.LlamaRMSNorm, "forward", _rms_norm_float64)
    mp.setattr(modeling_qwen3.Qwen3RMSNorm, "forward", _rms_norm_float64)
    mp.setattr(torch, "float", torch.float64)
    try:
        yield
    finally:
        mp.undo()


def hf_config(kind: str, **overrides):
    """Llama: GQA (4 heads, 2 kv), llama3 rope scaling, tied head. Qwen3: QK-norm, head_dim 16 != 32 / 4, untied."""
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, attn_implementation="sdpa",
                  bos_token_id=1, eos_token_id=2)
    if kind == "llama":
        return transformers.LlamaConfig(**{**common, "tie_word_embeddings": True, "rope_theta": 10000.0,
                                           "rope_scaling": dict(LLAMA3_SCALING), **overrides})
    return transformers.Qwen3Config(**{**common, "head_dim": 16, "tie_word_embeddings": False,
                                       "rope_theta": 1000000.0, **overrides})


def make_hf_dir(kind: str, path, seed: int = 0, **save_kwargs):
    """A random tiny transformers model saved to `path`; returns it in float64 eval mode (norm scales randomised
    too, so a swapped or ignored norm weight shows)."""
    torch.manual_seed(seed)
    cls = transformers.LlamaForCausalLM if kind == "llama" else transformers.Qwen3ForCausalLM
    with exact_float64():
        model = cls(hf_config(kind))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.normal_(1.0, 0.3)
    model.save_pretrained(path, **save_kwargs)
    return model.double().eval()


def hf_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad(), exact_float64():
        return model(torch.tensor(ids)).logits.double().numpy()


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


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
    model = gpt.from_pretrained(tmp_path / "bf16", backend=backends.get_backend("torch", dtype="float64"))
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
    model = GPTModel(cfg, backend=backends.get_backend("torch", dtype="float64"), seed=3).eval()
    export_hf_decoder(model, tmp_path)
    with exact_float64():
        hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa")
    assert type(hf).__name__ == {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}[kind]
    assert rel_err(model.B.to_numpy(model(IDS)), hf_logits(hf.double().eval(), IDS)) <= 1e-8
    again = gpt.from_pretrained(tmp_path, backend=model.B)
    assert again.cfg == model.cfg


def test_unknown_model_type_is_a_value_error_naming_it(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(ValueError, match=r"model_type 'mamba' is not supported; tinygpt loads gpt2, llama, qwen3"):
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
