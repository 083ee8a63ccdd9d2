"""Loading damaged files: random mutations of a checkpoint's state.json, checkpoints.json and model.safetensors, and
of a Hugging Face GPT-2 export's config.json and model.safetensors. Each load either works or raises ValueError /
OSError whose message names the damaged file: never a TypeError, KeyError or AttributeError from deep inside."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import require_data

import backends
from gpt.model import GPTModel
from gpt.training.checkpoint import load_model, save_checkpoint
from gpt.weights import export_hf_gpt2

CFG = {"vocab_size": 32, "context_length": 8, "emb_dim": 8, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0,
       "qkv_bias": False}
REPLACEMENTS = [None, [], {}, "x", -1, 0, 2.5, 10 ** 12, True, [1, 2], {"a": 1}]


def _paths(obj, prefix=()):
    """Every (path, value) inside a JSON object, containers included."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def mutate_json(text: str, rng: np.random.Generator) -> str:
    """One random damage: a value replaced, a key deleted, or the text cut short."""
    obj = json.loads(text)
    kind = rng.integers(3)
    if kind == 2:
        return text[:int(rng.integers(len(text)))]
    paths = [p for p, _ in _paths(obj) if p]
    if not paths:
        return "null"
    path = paths[int(rng.integers(len(paths)))]
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    if kind == 0 or isinstance(parent, list):
        parent[path[-1]] = REPLACEMENTS[int(rng.integers(len(REPLACEMENTS)))]
    else:
        del parent[path[-1]]
    return json.dumps(obj)


def mutate_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    """One random damage of a binary file: bytes of its header overwritten, or the file cut short."""
    if rng.integers(2):
        return data[:int(rng.integers(len(data)))]
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        out[int(rng.integers(min(len(out), 400)))] = int(rng.integers(256))
    return bytes(out)


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("orig")
    model = GPTModel(CFG, backend=backends.get_backend("numpy"), seed=0)
    ckpt = save_checkpoint(root / "run" / "step-000001", model, None,
                           {"step": 1, "model_config": model.cfg.to_dict(), "tokenizer": {"kind": "bytes"}})
    (root / "run" / "checkpoints.json").write_text(json.dumps({"latest": ckpt.name, "checkpoints": [ckpt.name],
                                                               "best": None}))
    export_hf_gpt2(model, root / "hf")
    return root


CASES = [("run", "checkpoints.json"), ("run", "step-000001/state.json"), ("run", "step-000001/model.safetensors"),
         ("hf", "config.json"), ("hf", "model.safetensors")]


@pytest.mark.parametrize("where,rel", CASES)
def test_every_damage_is_named(originals, tmp_path, monkeypatch, where, rel):
    # a load that survives the damage reads GPT-2's tokenizer: from the shared data, never from the network
    monkeypatch.setenv("TINYGPT_DATA_DIR", str(require_data("gpt2/encoder.json").parent.parent))
    monkeypatch.setenv("TINYGPT_OFFLINE", "1")
    B = backends.get_backend("numpy")
    rng = np.random.default_rng([len(rel), 7])
    src = originals / where / rel
    data = src.read_bytes()
    failures = []
    for trial in range(80):
        work = tmp_path / f"t{trial}"
        shutil.copytree(originals / where, work)
        damaged = (mutate_json(data.decode(), rng).encode() if src.suffix == ".json" else mutate_bytes(data, rng))
        (work / rel).write_bytes(damaged)
        try:
            load_model(work, B)
        except (ValueError, OSError) as e:
            if Path(rel).name not in str(e):
                failures.append(f"{type(e).__name__} without the file name: {e}")
        except Exception as e:   # noqa: BLE001 - the point of the test: nothing else may escape
            failures.append(f"{type(e).__name__}: {e}")
        shutil.rmtree(work)
    assert not failures, "\n".join(failures[:10])
