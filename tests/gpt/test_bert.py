"""BERT (gpt/bert.py) against Hugging Face's BertForMaskedLM, built tiny and random in the test (no downloads):
masked-LM logits in float64 at every unpadded position of a padded batch of different lengths (≤ 1e-8) on the
numpy and torch backends, padding ids that cannot move the real positions, the pooler against BertForPreTraining's,
whole-model gradients numpy vs torch float64 (≤ 1e-8), the name table, and the loader's errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers

import backends
from gpt.bert import BERT_HF_NAME_MAP, BertConfig, BertModel, load_hf_bert, ours_to_hf_bert_state_dict
from gpt.weights import CheckpointError

VOCAB, T = 60, 11
HF_CFG = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
              max_position_embeddings=24, type_vocab_size=2, layer_norm_eps=1e-12)
LENGTHS = [11, 7, 3]


def _batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, attention_mask, token_type_ids) of shape (3, T): sequences of LENGTHS, padded with id 0."""
    rng = np.random.default_rng(seed)
    am = np.array([[1] * n + [0] * (T - n) for n in LENGTHS])
    ids = rng.integers(1, VOCAB, (len(LENGTHS), T)) * am
    types = np.array([[0] * (n // 2) + [1] * (T - n // 2) for n in LENGTHS]) * am
    return ids, am, types


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A random BertForMaskedLM (float64, eval), saved; its non-trivial biases and LayerNorms randomised too."""
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(transformers.BertConfig(**HF_CFG))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))  # init leaves them 0/1, which would hide a swapped name
    path = tmp_path_factory.mktemp("bert")
    model.save_pretrained(path)
    return path, model.double().eval()


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_logits_equal_bert_for_masked_lm_at_unpadded_positions(hf_dir, backend):
    path, hf = hf_dir
    B = backends.get_backend(backend, dtype="float64")
    model = load_hf_bert(path, backend=B)
    ids, am, types = _batch()
    want = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(am),
              token_type_ids=torch.tensor(types)).logits.detach().numpy()
    got = B.to_numpy(model(ids, attention_mask=am, token_type_ids=types))
    assert got.shape == (3, T, VOCAB)
    real = am.astype(bool)
    err = np.abs(got - want)[real].max() / np.abs(want[real]).max()
    assert err <= 1e-8, f"max rel error {err:.2e} at the unpadded positions"


def test_padding_ids_do_not_change_unpadded_logits(hf_dir):
    B = backends.get_backend("numpy", dtype="float64")
    model = load_hf_bert(hf_dir[0], backend=B)
    ids, am, types = _batch()
    other = np.where(am == 1, ids, np.random.default_rng(5).integers(0, VOCAB, ids.shape))
    a = B.to_numpy(model(ids, attention_mask=am, token_type_ids=types))
    b = B.to_numpy(model(other, attention_mask=am, token_type_ids=types))
    real = am.astype(bool)
    assert np.abs(a - b)[real].max() <= 1e-13 * np.abs(a[real]).max()
    assert np.abs(a - b)[~real].max() > 1e-3  # the padding positions themselves do see their new ids


def test_pooler_equals_bert_pretraining_pooler(tmp_path):
    torch.manual_seed(1)
    hf = transformers.BertForPreTraining(transformers.BertConfig(**HF_CFG))
    hf.save_pretrained(tmp_path)
    hf = hf.double().eval()
    B = backends.get_backend("numpy", dtype="float64")
    model = load_hf_bert(tmp_path, backend=B)  # its cls.seq_relationship (NSP) head is ignored
    ids, am, types = _batch(1)
    out = hf.bert(input_ids=torch.tensor(ids), attention_mask=torch.tensor(am), token_type_ids=torch.tensor(types))
    want = out.pooler_output.detach().numpy()
    got = B.to_numpy(model.pooled(ids, attention_mask=am, token_type_ids=types))
    assert np.abs(got - want).max() <= 1e-8 * np.abs(want).max()


def test_gradients_numpy_vs_torch_float64():
    cfg = BertConfig(vocab_size=VOCAB, context_length=24, emb_dim=16, n_heads=4, n_layers=2, hidden_dim=40,
                     drop_rate=0.0, att_drop_rate=0.0)
    ids, am, types = _batch(2)
    labels = np.where((np.random.default_rng(3).random(ids.shape) < 0.4) & (am == 1), ids, -100)
    grads, losses = {}, {}
    for name in ("numpy", "torch"):
        B = backends.get_backend(name, dtype="float64")
        model = BertModel(cfg, backend=B, seed=7)
        logits = model(ids, attention_mask=am, token_type_ids=types)
        loss = B.F.cross_entropy(logits.reshape(-1, VOCAB), B.tensor(labels.reshape(-1)), ignore_index=-100)
        pooled = model.pooled(ids, attention_mask=am, token_type_ids=types)
        loss = loss + (pooled * B.tensor(np.random.default_rng(4).standard_normal(pooled.shape))).sum()
        loss.backward()
        losses[name] = float(B.to_numpy(loss))
        grads[name] = {k: B.to_numpy(p.grad) for k, p in model.named_parameters()}
    assert abs(losses["numpy"] - losses["torch"]) <= 1e-12 * abs(losses["torch"])
    top = max(np.abs(g).max() for g in grads["torch"].values())
    for k, want in grads["torch"].items():
        err = np.abs(grads["numpy"][k] - want).max() / max(np.abs(want).max(), 1e-6 * top)  # DESIGN §5 floor
        assert err <= 1e-8, f"{k}: max rel error {err:.2e}"


def test_state_dict_names_map_one_to_one_onto_hugging_face(hf_dir):
    path, hf = hf_dir
    B = backends.get_backend("numpy", dtype="float64")
    model = load_hf_bert(path, backend=B)
    ours = model.state_dict()
    hf_sd = ours_to_hf_bert_state_dict(ours, model.cfg)
    theirs = {k for k in hf.state_dict() if k != "cls.predictions.decoder.weight" and k != "cls.predictions.decoder.bias"}
    assert set(hf_sd) - {"bert.pooler.dense.weight", "bert.pooler.dense.bias"} == theirs
    assert len(hf_sd) == len(ours)
    for k in theirs:
        np.testing.assert_array_equal(hf_sd[k], hf.state_dict()[k].numpy())
    assert all("{i}" in k or "{i}" not in v for k, v in BERT_HF_NAME_MAP.items())


def test_untied_decoder_is_loaded_from_its_own_key(tmp_path):
    torch.manual_seed(2)
    hf = transformers.BertForMaskedLM(transformers.BertConfig(**HF_CFG, tie_word_embeddings=False))
    with torch.no_grad():
        hf.cls.predictions.decoder.weight.normal_()
    hf.save_pretrained(tmp_path)
    hf = hf.double().eval()
    model = load_hf_bert(tmp_path, backend=backends.get_backend("numpy", dtype="float64"))
    assert not model.cfg.tie_weights and "mlm_head.decoder.weight" in model.state_dict()
    ids, am, _ = _batch(3)
    want = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(am)).logits.detach().numpy()
    got = model.B.to_numpy(model(ids, attention_mask=am))
    assert np.abs(got - want)[am.astype(bool)].max() <= 1e-8 * np.abs(want).max()


def test_loader_errors_name_the_problem(hf_dir, tmp_path):
    path, _ = hf_dir
    cfg = json.loads((path / "config.json").read_text())
    bad = tmp_path / "gpt2ish"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match=r"model_type 'gpt2' is not 'bert'"):
        load_hf_bert(bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "hidden_act": "relu"}))
    with pytest.raises(ValueError, match=r"hidden_act 'relu' is not supported"):
        load_hf_bert(bad)
    from gpt.training.safetensors_io import read_safetensors, write_safetensors

    tensors = read_safetensors(path / "model.safetensors")
    tensors.pop("bert.encoder.layer.1.output.dense.bias")
    write_safetensors(bad / "model.safetensors", tensors)
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"missing key 'bert.encoder.layer.1.output.dense.bias'"):
        load_hf_bert(bad)


def test_model_input_errors():
    model = BertModel(BertConfig(vocab_size=VOCAB, context_length=8, emb_dim=8, n_heads=2, n_layers=1, hidden_dim=8))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 3\) but the token ids have \(1, 4\)"):
        model(np.zeros((1, 4), dtype=np.int64), attention_mask=np.ones((1, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"longer than context_length=8"):
        model(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match=r"token id 60 is out of range for vocab_size=60"):
        model(np.full((1, 2), 60))
    with pytest.raises(ValueError, match=r"token_type_ids values must lie in \[0, 2\)"):
        model(np.zeros((1, 2), dtype=np.int64), token_type_ids=np.full((1, 2), 2))


def test_classify_is_a_linear_head_on_the_pooled_cls_with_padding_masked(hf_dir):
    B = backends.get_backend("numpy", dtype="float64")
    model = load_hf_bert(hf_dir[0], backend=B).replace_head(3, seed=1)
    ids, am, _ = _batch()  # padded with id 0, the config's pad_token_id; real ids are >= 1
    got = B.to_numpy(model.classify(ids))
    pooled = B.to_numpy(model.pooled(ids, attention_mask=am))
    w, b = B.to_numpy(model.classifier.weight), B.to_numpy(model.classifier.bias)
    assert got.shape == (3, 3)
    np.testing.assert_allclose(got, pooled @ w.T + b, rtol=0, atol=1e-14)
    assert "mlm_head.bias" not in model.state_dict() and "classifier.weight" in model.state_dict()
    with pytest.raises(ValueError, match="carries a classification head instead of the masked-LM one"):
        model(ids)


@pytest.mark.gpu
def test_logits_and_gradients_on_cupy_equal_numpy(hf_dir):
    ids, am, types = _batch()
    labels = np.where(am == 1, ids, -100)
    out = {}
    for name in ("numpy", "cupy"):
        B = backends.get_backend(name, dtype="float64")
        model = load_hf_bert(hf_dir[0], backend=B)
        logits = model(ids, attention_mask=am, token_type_ids=types)
        loss = B.F.cross_entropy(logits.reshape(-1, VOCAB), B.tensor(labels.reshape(-1)), ignore_index=-100)
        loss.backward()
        out[name] = (B.to_numpy(logits), {k: B.to_numpy(p.grad) for k, p in model.named_parameters()})
    real = am.astype(bool)
    assert np.abs(out["cupy"][0] - out["numpy"][0])[real].max() <= 1e-10 * np.abs(out["numpy"][0]).max()
    top = max(np.abs(g).max() for g in out["numpy"][1].values())
    for k, want in out["numpy"][1].items():
        assert np.abs(out["cupy"][1][k] - want).max() <= 1e-8 * max(np.abs(want).max(), 1e-6 * top), k
