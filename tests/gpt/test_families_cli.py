"""The Llama 3 / Qwen3 commands: `generate` and `chat` on Hugging Face directories with their own tokenizer (greedy
output equal to transformers'), `train --arch llama|qwen3` with resume, `convert --to-hf` of such a run (transformers
and tokenizers load it), `download qwen3-0.6b` (faked: no test downloads anything).
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

import backends  # noqa: E402
import gpt  # noqa: E402
import tokenizer  # noqa: E402
from gpt.chat_format import chat_prompt_ids, stop_ids  # noqa: E402
from gpt.cli import main  # noqa: E402
from gpt.cli.common import write_tokens  # noqa: E402
from hf_tiny import exact_float64, hf_logits, make_hf_dir, rel_err  # noqa: E402

TEXT = ("The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs! "
        "How vexingly quick daft zebras jump; sphinx of black quartz, judge my vow. 0123456789\n") * 4
CHAT_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|begin_of_text|>",
               "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
ENGINE = ["--backend", "torch", "--dtype", "float64"]


@pytest.fixture(scope="module")
def bpe():
    return tokenizer.BPETokenizer.train(TEXT, vocab_size=300, pattern="gpt2", special_tokens=CHAT_TOKENS)


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def hf_dir(request, bpe, tmp_path_factory):
    """A tiny random model of the family with a tokenizer.json (our BPE trained above, chat tokens included)."""
    path = tmp_path_factory.mktemp(request.param)
    hf = make_hf_dir(request.param, path, vocab=bpe.n_vocab, context=160)
    tokenizer.save_hf_tokenizer(bpe, path)
    return request.param, path, hf


def _hf_greedy(hf, ids: list[int], n: int, eos) -> list[int]:
    with torch.no_grad(), exact_float64():
        out = hf.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=eos, pad_token_id=0)
    return out[0, len(ids):].tolist()


def test_generate_cli_greedy_equals_transformers(hf_dir, capsys):
    _, path, hf = hf_dir
    enc = tokenizer.from_pretrained(path)
    prompt = "The quick brown"
    rc, out, err = run_cli(capsys, "generate", "--checkpoint", path, "--prompt", prompt, "--max-new-tokens", 15,
                       "--temperature", 0, *ENGINE)
    assert rc == 0, err
    new = _hf_greedy(hf, enc.encode(prompt), 15, enc.eos_token_id)
    assert out == prompt + enc.decode(new) + "\n"


def test_chat_prompt_ids_equal_tokenizers_on_the_spelled_out_format(hf_dir, bpe):
    kind, path, _ = hf_dir
    hf_tok = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
    enc = tokenizer.from_pretrained(path)
    messages = [{"role": "user", "content": "Pack my box?"}, {"role": "assistant", "content": "With jugs."},
                {"role": "user", "content": "How quick?"}]
    if kind == "qwen3":
        style = "chatml"
        text = ("<|im_start|>user\nPack my box?<|im_end|>\n<|im_start|>assistant\nWith jugs.<|im_end|>\n"
                "<|im_start|>user\nHow quick?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    else:
        style = "llama3"
        text = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nPack my box?<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\nWith jugs.<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nHow quick?<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert chat_prompt_ids(enc, messages, style) == hf_tok.encode(text, add_special_tokens=False).ids


def test_chat_cli_answers_in_the_family_format(hf_dir, capsys, monkeypatch):
    """Two questions: each answer is transformers' greedy continuation of the whole conversation so far."""
    kind, path, hf = hf_dir
    enc = tokenizer.from_pretrained(path)
    style = {"llama": "llama3", "qwen3": "chatml"}[kind]
    monkeypatch.setattr(sys, "stdin", io.StringIO("Box?\nHow?\n"))
    rc, out, err = run_cli(capsys, "chat", "--checkpoint", path, "--max-new-tokens", 8, *ENGINE)
    assert rc == 0, err
    history, want = [], []
    for question in ("Box?", "How?"):
        history.append({"role": "user", "content": question})
        prompt = chat_prompt_ids(enc, history, style)
        assert len(prompt) + 8 <= 160   # the whole conversation fits the context: the CLI crops nothing
        answer = _hf_greedy(hf, prompt, 8, stop_ids(enc, style))
        answer = [t for t in answer if t not in stop_ids(enc, style)]
        history.append({"role": "assistant", "content": enc.decode(answer)})
        streamed = io.StringIO()
        write_tokens(answer, enc, streamed)   # as the CLI streams it (a random model's bytes may not be UTF-8)
        want.append(streamed.getvalue())
    assert out == "".join(want)


def test_generate_without_tokenizer_json_names_the_file(tmp_path, capsys):
    make_hf_dir("qwen3", tmp_path)
    capsys.readouterr()   # transformers' save progress
    rc, out, err = run_cli(capsys, "generate", "--checkpoint", tmp_path, "--prompt", "hi")
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("tinygpt: error: ") and "has no tokenizer.json; a qwen3 directory needs its own" in err


TINY = ["--emb-dim", 32, "--n-layers", 1, "--n-heads", 4, "--context-length", 16, "--batch-size", 2,
        "--vocab-size", 300, "--eval-interval", 2, "--eval-iters", 1, "--warmup-steps", 1, "--no-plot",
        "--seed", 1, "--dtype", "float64"]


@pytest.mark.parametrize("arch,backend", [("llama", "numpy"), ("qwen3", "numpy"), ("qwen3", "torch")])
def test_train_arch_end_to_end_with_resume_and_export(arch, backend, tmp_path, capsys):
    data, out = tmp_path / "text.txt", tmp_path / "run"
    data.write_text(TEXT * 3, encoding="utf-8")
    rc, _, err = run_cli(capsys, "train", "--arch", arch, "--data", data, "--out", out, "--max-steps", 2, *TINY,
                     "--backend", backend)
    assert rc == 0, err
    rc, _, err = run_cli(capsys, "train", "--out", out, "--resume", "--max-steps", 4, "--backend", backend,
                     "--dtype", "float64")
    assert rc == 0, err
    state = json.loads(next(out.glob("**/state.json")).read_text())
    assert state["model_config"]["arch"] == arch and state["model_config"]["positions"] == "rope"
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "val_loss" in r] == [0, 2, 4]
    other = {"llama": "qwen3", "qwen3": "llama"}[arch]
    rc, _, err = run_cli(capsys, "train", "--out", out, "--resume", "--max-steps", 6, "--arch", other)
    assert rc == 2 and f"--arch {other} (the run has {arch})" in err

    rc, _, err = run_cli(capsys, "convert", "--checkpoint", out, "--to-hf", tmp_path / "hf", "--dtype", "float64")
    assert rc == 0, err
    from gpt.training.checkpoint import load_model

    model, enc, _ = load_model(out, backends.get_backend("numpy", dtype="float64"))
    assert model.cfg.arch == arch and model.cfg.qk_norm == (arch == "qwen3")
    with exact_float64():
        hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="sdpa")
    ids = np.asarray([enc.encode(TEXT[:60])[:16]])
    assert rel_err(model.B.to_numpy(model(ids)), hf_logits(hf.double().eval(), ids)) <= 1e-8
    hf_tok = tokenizers.Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    sample = TEXT[:120] + "<|endoftext|> zebras ✓"
    assert hf_tok.encode(sample, add_special_tokens=False).ids == enc.encode(sample, allowed_special="all")
    assert tokenizer.from_pretrained(tmp_path / "hf").encode(sample) == enc.encode(sample, allowed_special="all")


def test_download_qwen3_fetches_the_four_public_files(tmp_path, capsys, monkeypatch):
    import tokenizer.datafiles as datafiles

    fetched = []

    def fake_download(url, dest, sha256=None, progress=True):
        fetched.append(url)
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        Path(dest).write_text("{}")
        return Path(dest)

    monkeypatch.delenv("TINYGPT_OFFLINE", raising=False)
    monkeypatch.setattr(datafiles, "download_file", fake_download)
    rc, out, err = run_cli(capsys, "download", "qwen3-0.6b", "--dest", tmp_path)
    assert rc == 0, err
    base = "https://huggingface.co/Qwen/Qwen3-0.6B/resolve/main/"
    assert fetched == [base + f for f in ("config.json", "model.safetensors", "tokenizer.json",
                                          "tokenizer_config.json")]
    assert sorted(p.name for p in (tmp_path / "qwen3-0.6b").iterdir()) == sorted(f[len(base):] for f in fetched)
    assert str(tmp_path / "qwen3-0.6b") in out
    rc, _, _ = run_cli(capsys, "download", "qwen3-0.6b", "--dest", tmp_path)   # present files are kept
    assert rc == 0 and len(fetched) == 4


def test_unknown_model_type_directory_is_one_line_error(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    rc, out, err = run_cli(capsys, "generate", "--checkpoint", tmp_path, "--prompt", "hi")
    assert rc == 2 and err == (f"tinygpt: error: {tmp_path}: model_type 'mamba' is not supported; tinygpt loads "
                               f"bert, gpt2, llama, qwen3\n")


def test_from_pretrained_on_a_numpy_backend_matches_torch(hf_dir):
    _, path, _ = hf_dir
    ids = np.asarray([[5, 17, 42, 99, 3]])
    got = {}
    for name in ("numpy", "torch"):
        model = gpt.from_pretrained(path, backend=backends.get_backend(name, dtype="float64"))
        got[name] = model.B.to_numpy(model(ids))
    assert rel_err(got["numpy"], got["torch"]) <= 1e-12


def test_hub_name_resolves_to_the_downloaded_directory(tmp_path, capsys, monkeypatch):
    """`--checkpoint qwen3-0.6b` is the directory `download qwen3-0.6b` writes; before that, one line naming it."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(capsys, "generate", "--checkpoint", "qwen3-0.6b", "--prompt", "hi")
    folder = tmp_path / ".cache" / "tinygpt" / "models" / "qwen3-0.6b"
    assert rc == 2 and err == (f"tinygpt: error: qwen3-0.6b is not downloaded: run `tinygpt download qwen3-0.6b` "
                               f"with network access (it writes {folder}), or give the path of a Hugging Face "
                               f"directory\n")
    make_hf_dir("qwen3", folder)
    capsys.readouterr()
    rc, out, err = run_cli(capsys, "generate", "--checkpoint", "qwen3-0.6b", "--prompt", "hi")
    assert rc == 2 and "has no tokenizer.json; a qwen3 directory" in err   # found it: the directory is read
