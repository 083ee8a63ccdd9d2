"""Checkpoints (gpt/training/checkpoint.py): optimizer state by parameter name on both engines, atomic writes that survive a
crash mid-write, keep-last-K pruning with the best kept, and loading a model back (or refusing one of another shape)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import backends
import gpt.training.checkpoint as ckpt_mod
from gpt.training import corpus
from gpt.training.checkpoint import (CheckpointManager, load_model, load_optimizer_state_by_name, optimizer_state_by_name,
                            read_checkpoint, read_index, save_checkpoint)
from gpt.model import GPTModel
from gpt.training.trainer import accumulate_grads, param_groups

CFG = dict(vocab_size=257, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0, qkv_bias=False)
STATE = {"step": 1, "model_config": CFG, "tokenizer": {"kind": "bytes"}}


def backend(name: str):
    if name == "torch":
        torch = pytest.importorskip("torch")
        torch.set_num_threads(1)   # tiny model: extra threads only contend with the other xdist worker
    return backends.get_backend(name, dtype="float64")


def trained(B, seed=0, steps=2):
    """A model and an AdamW (two groups) after `steps` steps, so the optimizer has state."""
    model = GPTModel(CFG, backend=B, seed=seed)
    opt = B.AdamW(param_groups(model, 0.1), lr=1e-2)
    x = np.random.default_rng(seed).integers(0, 257, size=(2, 9))
    for _ in range(steps):
        opt.zero_grad()
        accumulate_grads(model, [(x[:, :-1], x[:, 1:])])
        opt.step()
    return model, opt


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_optimizer_state_round_trips_by_name(name):
    B = backend(name)
    model, opt = trained(B)
    arrays, scalars = optimizer_state_by_name(opt, model)
    assert set(scalars) == {n for n, _ in model.named_parameters()}
    assert "tok_emb.weight:exp_avg" in arrays and float(scalars["tok_emb.weight"]["step"]) == 2
    # a fresh optimizer whose groups list the parameters in another order gets the same state by name
    model2 = GPTModel(CFG, backend=B, seed=1)
    model2.load_state_dict({n: B.to_numpy(p) for n, p in model.state_dict().items()})
    opt2 = B.AdamW(list(reversed(param_groups(model2, 0.1))), lr=1e-2)
    load_optimizer_state_by_name(opt2, model2, B, arrays, scalars)
    arrays2, scalars2 = optimizer_state_by_name(opt2, model2)
    assert scalars2 == scalars
    for k in arrays:
        assert np.array_equal(arrays[k], arrays2[k]), k


def test_optimizer_state_crosses_engines():
    """Saved from tinytensor's AdamW, loaded into torch's: names, not positions or types, carry the state."""
    model, opt = trained(backend("numpy"))
    arrays, scalars = optimizer_state_by_name(opt, model)
    Bt = backend("torch")
    model_t = GPTModel(CFG, backend=Bt, seed=0)
    opt_t = Bt.AdamW(param_groups(model_t, 0.1), lr=1e-2)
    load_optimizer_state_by_name(opt_t, model_t, Bt, arrays, scalars)
    arrays_t, _ = optimizer_state_by_name(opt_t, model_t)
    for k in arrays:
        np.testing.assert_array_equal(arrays_t[k], arrays[k])


def test_checkpoint_round_trip_and_load_model(tmp_path):
    B = backend("numpy")
    model, opt = trained(B)
    save_checkpoint(tmp_path / "ck", model, opt, STATE)
    ck = read_checkpoint(tmp_path / "ck")
    assert ck.step == 1 and ck.state["format"] == "tinygpt-checkpoint"
    for n, p in model.state_dict().items():
        assert np.array_equal(ck.weights[n], B.to_numpy(p))
    loaded, tok, state = load_model(tmp_path / "ck", B)
    assert not loaded.training and tok.n_vocab == 257 and state["step"] == 1


def test_checkpoint_of_another_shape_is_refused(tmp_path):
    B = backend("numpy")
    model, _ = trained(B)
    save_checkpoint(tmp_path / "ck", model, None, STATE)
    state = json.loads((tmp_path / "ck" / "state.json").read_text())
    state["model_config"]["emb_dim"] = 32
    (tmp_path / "ck" / "state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="does not fit"):
        load_model(tmp_path / "ck", B)


def test_crash_mid_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    B = backend("numpy")
    model, opt = trained(B)
    manager = CheckpointManager(tmp_path, keep_last=2)
    manager.save(1, model, opt, STATE, val_loss=3.0)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    real_write = ckpt_mod.write_safetensors

    def write_then_crash(path, tensors, *a, **k):   # the file lands in the temporary directory, then "power off"
        real_write(path, tensors, *a, **k)
        raise OSError("simulated crash after writing " + str(path))

    monkeypatch.setattr(ckpt_mod, "write_safetensors", write_then_crash)
    model2, opt2 = trained(B, seed=5)
    with pytest.raises(OSError, match="simulated crash"):
        manager.save(2, model2, opt2, {**STATE, "step": 2}, val_loss=1.0)
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before                                  # nothing changed, no temporary left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "checkpoints.json", "step-000001"]
    assert read_checkpoint(tmp_path).step == 1 and read_index(tmp_path)["latest"] == "step-000001"
    monkeypatch.undo()
    manager.save(2, model2, opt2, {**STATE, "step": 2}, val_loss=1.0)   # and the next save works
    assert read_checkpoint(tmp_path).step == 2


def test_keep_last_prunes_and_keeps_the_best(tmp_path):
    B = backend("numpy")
    model, opt = trained(B)
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step, val in zip(range(1, 6), [3.0, 2.0, 2.5, 2.7, 2.9]):
        manager.save(step, model, opt, {**STATE, "step": step, "val_loss": val}, val_loss=val)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["best", "step-000004", "step-000005"]
    index = read_index(tmp_path)
    assert index["latest"] == "step-000005" and index["best"]["step"] == 2
    assert read_checkpoint(tmp_path / "best").state["val_loss"] == 2.0
    assert read_checkpoint(tmp_path).step == 5
    again = CheckpointManager(tmp_path, keep_last=2)          # a resumed run continues the same index
    again.save(6, model, opt, {**STATE, "step": 6}, val_loss=1.5)
    assert read_index(tmp_path)["best"]["step"] == 6
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["best", "step-000005", "step-000006"]


def test_missing_checkpoint_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_checkpoint(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        read_checkpoint(tmp_path)


def test_corpus_reads_text_and_token_files(tmp_path):
    from gpt.data import write_token_file

    (tmp_path / "bad.txt").write_bytes(b"abc\xff\xfedef")
    with pytest.raises(ValueError, match="byte offset 3"):
        corpus.load_corpus(tmp_path / "bad.txt")
    write_token_file(tmp_path / "ids.tok", [1, 2, 3, 50000])
    data = corpus.load_corpus(tmp_path / "ids.tok")
    assert data.text is None and data.ids.tolist() == [1, 2, 3, 50000]
    assert "for" in corpus.load_corpus(None).text and len(corpus.default_corpus()) > 400_000
