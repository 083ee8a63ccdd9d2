"""Hugging Face GPT-2 checkpoints in and out (gpt/weights.py) and our safetensors reader/writer.

A small random GPT2LMHeadModel made here (no download) is the reference: our model loaded from its files must give
transformers' logits on numpy and torch, our export must load back into transformers with the same logits, and our
safetensors files must agree with the `safetensors` package both ways. Bad files must fail naming file and key.
"""
from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from gpt.model import GPTModel  # noqa: E402
from gpt.training.safetensors_io import SafetensorsError, read_safetensors, write_safetensors  # noqa: E402
from gpt.weights import (HF_NAME_MAP, CheckpointError, book_state_dict_to_hf, config_from_hf,  # noqa: E402
                         download_gpt2, export_hf_gpt2, hf_state_dict_to_book, load_hf_gpt2)

N_LAYER, D, VOCAB, CTX = 2, 32, 97, 32
IDX = np.random.default_rng(0).integers(0, VOCAB, size=(2, 16))


def hf_logits(model, idx=IDX) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(idx)).logits.numpy()


def our_logits(model, idx=IDX) -> np.ndarray:
    with model.B.no_grad():
        return model.B.to_numpy(model(idx))


@pytest.fixture(scope="module")
def hf_model():
    """The brief's small seeded GPT-2 in transformers, in eval mode (dropout 0 anyway)."""
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=CTX, n_embd=D, n_layer=N_LAYER, n_head=4,
                                  resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, activation_function="gelu_new",
                                  bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # GPT-2 initialises biases and LayerNorms to 0/1: randomise them so every map is tested
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "gpt2-small-random"
    hf_model.save_pretrained(path)
    return path


def copy_checkpoint(src, dst):
    shutil.copytree(src, dst)
    return dst


# ---- safetensors format ----

def test_our_reader_equals_the_safetensors_package(hf_dir):
    path = hf_dir / "model.safetensors"
    ours, theirs = read_safetensors(path), safetensors_numpy.load_file(str(path))
    assert ours.keys() == theirs.keys()
    for k in theirs:
        assert ours[k].dtype == theirs[k].dtype and ours[k].shape == theirs[k].shape, k
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)


def test_our_writer_is_read_identically_by_the_package(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {
        "f64": rng.standard_normal((3, 5)),
        "f32_transposed": rng.standard_normal((4, 6)).astype(np.float32).T,   # non-contiguous view
        "f16": rng.standard_normal(7).astype(np.float16),
        "i64": rng.integers(-2**40, 2**40, size=(2, 2, 2)),
        "i32": rng.integers(-5, 5, size=9).astype(np.int32),
        "u8": rng.integers(0, 255, size=4).astype(np.uint8),
        "bool": rng.random(6) > 0.5,
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    path = write_safetensors(tmp_path / "t.safetensors", tensors, metadata={"format": "pt", "note": "x"})
    theirs = safetensors_numpy.load_file(str(path))
    ours = read_safetensors(path)
    assert theirs.keys() == ours.keys() == tensors.keys()
    for k, v in tensors.items():
        for got in (theirs[k], ours[k]):
            assert got.dtype == v.dtype and got.shape == v.shape, k
            np.testing.assert_array_equal(got, v, err_msg=k)
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        assert f.metadata() == {"format": "pt", "note": "x"}
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] % 8 == 0  # header padded: data stays 8-byte aligned


def test_bfloat16_is_read_as_float32(tmp_path):
    from safetensors.torch import save_file

    t = torch.randn(5, 3).to(torch.bfloat16)
    save_file({"w": t}, str(tmp_path / "bf16.safetensors"))
    got = read_safetensors(tmp_path / "bf16.safetensors")["w"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, t.float().numpy())


# ---- loading into GPTModel ----

@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_loaded_model_matches_transformers_float32(hf_model, hf_dir, backend):
    model = load_hf_gpt2(hf_dir, backend=backend)
    assert not model.training and model.cfg.tie_weights and model.cfg.qkv_bias
    np.testing.assert_allclose(our_logits(model), hf_logits(hf_model), rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_loaded_model_matches_transformers_float64(hf_model, hf_dir, backend):
    ref = hf_logits(hf_model.double())
    hf_model.float()
    model = load_hf_gpt2(hf_dir, backend=backend, dtype="float64")
    np.testing.assert_allclose(our_logits(model), ref, rtol=0, atol=1e-10)


def test_pytorch_model_bin_with_old_mask_buffers_loads(hf_model, hf_dir, tmp_path):
    sd = dict(hf_model.state_dict())
    for i in range(N_LAYER):  # what pre-4.x checkpoints carry: the causal mask and its fill value, not weights
        sd[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, CTX, CTX))
        sd[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    shutil.copy(hf_dir / "config.json", tmp_path / "config.json")
    model = load_hf_gpt2(tmp_path, backend="numpy")
    np.testing.assert_allclose(our_logits(model), hf_logits(hf_model), rtol=0, atol=1e-5)


def test_bare_gpt2model_key_names_load(hf_model, hf_dir, tmp_path):
    """The hub's openai-community/gpt2 stores `h.0.attn...`, `wte.weight` without the `transformer.` prefix."""
    raw = read_safetensors(hf_dir / "model.safetensors")
    write_safetensors(tmp_path / "model.safetensors", {k.removeprefix("transformer."): v for k, v in raw.items()})
    shutil.copy(hf_dir / "config.json", tmp_path / "config.json")
    np.testing.assert_allclose(our_logits(load_hf_gpt2(tmp_path)), hf_logits(hf_model), rtol=0, atol=1e-5)


def test_sharded_checkpoint_loads(hf_model, hf_dir, tmp_path):
    raw = read_safetensors(hf_dir / "model.safetensors")
    names = sorted(raw)
    shards = {"model-00001-of-00002.safetensors": names[:10], "model-00002-of-00002.safetensors": names[10:]}
    for shard, keys in shards.items():
        write_safetensors(tmp_path / shard, {k: raw[k] for k in keys}, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.copy(hf_dir / "config.json", tmp_path / "config.json")
    np.testing.assert_allclose(our_logits(load_hf_gpt2(tmp_path)), hf_logits(hf_model), rtol=0, atol=1e-5)


def test_name_map_round_trip_and_conv1d_transpose(hf_dir):
    raw = read_safetensors(hf_dir / "model.safetensors")
    book = hf_state_dict_to_book(raw, N_LAYER)
    c_attn = raw["transformer.h.1.attn.c_attn.weight"]                      # (in, 3·out)
    np.testing.assert_array_equal(book["trf_blocks.1.att.W_key.weight"], c_attn[:, D:2 * D].T)
    np.testing.assert_array_equal(book["trf_blocks.0.ff.layers.2.weight"], raw["transformer.h.0.mlp.c_proj.weight"].T)
    assert "out_head.weight" not in book                                     # tied: no lm_head in the file
    back = book_state_dict_to_hf(book, N_LAYER)
    assert back.keys() == raw.keys()
    for k in raw:
        np.testing.assert_array_equal(back[k], raw[k], err_msg=k)
    assert len({v.name.format(i=0) for v in HF_NAME_MAP.values()}) == 17    # q/k/v share c_attn's 2 keys


# ---- exporting ----

def test_export_loads_into_transformers_with_same_logits(hf_model, hf_dir, tmp_path):
    ours = load_hf_gpt2(hf_dir, backend="torch")
    out = export_hf_gpt2(ours, tmp_path / "export")
    back = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    assert back.config.tie_word_embeddings
    assert "lm_head.weight" not in read_safetensors(out / "model.safetensors")
    np.testing.assert_allclose(hf_logits(back), hf_logits(hf_model), rtol=0, atol=1e-6)


def test_untied_model_exports_lm_head(tmp_path):
    cfg = {"vocab_size": VOCAB, "context_length": CTX, "emb_dim": D, "n_heads": 4, "n_layers": N_LAYER,
           "drop_rate": 0.0, "qkv_bias": False, "tie_weights": False}
    ours = GPTModel(cfg, backend="numpy", seed=7).eval()
    out = export_hf_gpt2(ours, tmp_path / "untied")
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    back = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    np.testing.assert_array_equal(back.lm_head.weight.detach().numpy(), ours.B.to_numpy(ours.out_head.weight))
    np.testing.assert_allclose(hf_logits(back), our_logits(ours), rtol=0, atol=1e-5)
    again = load_hf_gpt2(out)                     # and back into ours: the untied head survives, zero qkv bias
    assert not again.cfg.tie_weights
    for name, value in ours.state_dict().items():
        np.testing.assert_array_equal(again.B.to_numpy(again.state_dict()[name]), again.B.to_numpy(value))


# ---- errors name the file, the key and the shapes ----

def test_truncated_safetensors_names_file_and_key(hf_dir, tmp_path):
    bad = copy_checkpoint(hf_dir, tmp_path / "ckpt")
    path = bad / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SafetensorsError, match=r"model\.safetensors.*truncated.*'transformer\.wte\.weight'"):
        load_hf_gpt2(bad)
    path.write_bytes(path.read_bytes()[:20])       # cut inside the header itself
    with pytest.raises(SafetensorsError, match=r"model\.safetensors.*truncated"):
        read_safetensors(path)


def test_corrupt_header_names_file(hf_dir, tmp_path):
    path = tmp_path / "model.safetensors"
    data = bytearray((hf_dir / "model.safetensors").read_bytes())
    data[8] = ord("[")                                # the JSON object's opening brace
    path.write_bytes(bytes(data))
    with pytest.raises(SafetensorsError, match=r"model\.safetensors: corrupt safetensors header"):
        read_safetensors(path)


def test_wrong_shape_names_key_and_both_shapes(hf_dir, tmp_path):
    bad = copy_checkpoint(hf_dir, tmp_path / "ckpt")
    raw = read_safetensors(bad / "model.safetensors")
    raw["transformer.h.1.attn.c_attn.weight"] = raw["transformer.h.1.attn.c_attn.weight"][:, :95]
    write_safetensors(bad / "model.safetensors", raw)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: 'transformer\.h\.1\.attn\.c_attn\.weight' "
                                              r"has shape \(32, 95\).*expects \(32, 96\)"):
        load_hf_gpt2(bad)


def test_missing_key_names_file_and_key(hf_dir, tmp_path):
    bad = copy_checkpoint(hf_dir, tmp_path / "ckpt")
    raw = read_safetensors(bad / "model.safetensors")
    del raw["transformer.h.0.ln_2.bias"]
    write_safetensors(bad / "model.safetensors", raw)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing key 'transformer\.h\.0\.ln_2\.bias'"):
        load_hf_gpt2(bad)


def test_untied_config_without_lm_head_is_an_error(hf_dir, tmp_path):
    bad = copy_checkpoint(hf_dir, tmp_path / "ckpt")
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "tie_word_embeddings": False}))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing key 'lm_head\.weight'"):
        load_hf_gpt2(bad)


def test_missing_config_json_names_the_file(hf_dir, tmp_path):
    bad = copy_checkpoint(hf_dir, tmp_path / "ckpt")
    (bad / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"ckpt/config\.json is missing"):
        load_hf_gpt2(bad)
    with pytest.raises(FileNotFoundError, match=r"none of model\.safetensors"):
        load_hf_gpt2(tmp_path)


def test_unsupported_config_is_refused():
    cfg = {"vocab_size": 10, "n_positions": 8, "n_embd": 8, "n_layer": 1, "n_head": 2}
    assert config_from_hf(cfg)["tie_weights"] is True
    with pytest.raises(ValueError, match="activation_function 'relu'"):
        config_from_hf({**cfg, "activation_function": "relu"})
    with pytest.raises(ValueError, match=r"missing \['n_head'\]"):
        config_from_hf({k: v for k, v in cfg.items() if k != "n_head"})


def test_download_gpt2_fetches_config_and_weights_from_the_hub(tmp_path):
    calls = []

    def fake_fetch(url, dest, progress=True):
        calls.append(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text("{}")
        return dest

    assert download_gpt2("355M", tmp_path / "m", fetch=fake_fetch) == tmp_path / "m"
    assert calls == ["https://huggingface.co/openai-community/gpt2-medium/resolve/main/config.json",
                     "https://huggingface.co/openai-community/gpt2-medium/resolve/main/model.safetensors"]
    download_gpt2("355M", tmp_path / "m", fetch=fake_fetch)        # present files are not fetched again
    assert len(calls) == 2
    with pytest.raises(ValueError, match="unknown GPT-2 size '7B'"):
        download_gpt2("7B", tmp_path, fetch=fake_fetch)


def test_hub_names_resolve_to_the_downloaded_directory(hf_model, hf_dir, tmp_path, monkeypatch):
    """load_model("gpt2") (so `--init gpt2`, `--checkpoint gpt2`) reads what `tinygpt download gpt2` wrote into the
    cache; a size not downloaded names the command that fetches it; a local directory of that name wins."""
    import backends
    from conftest import require_data
    from gpt.training.checkpoint import load_model
    from gpt.weights import gpt2_cache_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TINYGPT_DATA_DIR", str(require_data("gpt2/encoder.json").parent.parent))
    monkeypatch.chdir(tmp_path)
    assert gpt2_cache_dir("124M") == tmp_path / "home" / ".cache" / "tinygpt" / "models" / "gpt2-124M"
    shutil.copytree(hf_dir, gpt2_cache_dir("124M"))
    model, tok, state = load_model("gpt2", backends.get_backend("numpy"))
    assert state == {"tokenizer": {"kind": "gpt2"}} and tok.eot_token == 50256
    np.testing.assert_allclose(our_logits(model), hf_logits(hf_model), rtol=0, atol=1e-5)
    with pytest.raises(FileNotFoundError, match=r"GPT-2 355M \(gpt2-medium\) is not downloaded: run `tinygpt "
                                                r"download gpt2-medium`"):
        load_model("gpt2-medium", backends.get_backend("numpy"))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model("gpt3", backends.get_backend("numpy"))
    (tmp_path / "gpt2").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint in 'gpt2'"):
        load_model("gpt2", backends.get_backend("numpy"))   # the empty local folder is read, not the cache
