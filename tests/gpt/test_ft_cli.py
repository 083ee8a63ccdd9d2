"""`tinygpt finetune classify|instruct` and `tinygpt chat` end to end on a tiny pretrained checkpoint (made here
with the trainer for a few steps) and slices of the real SMS and instruction data: results, checkpoints, exact
resume, LoRA merging, the chat loop, and one-line exit-2 errors."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest import require_data

import backends
import gpt.cli as cli
from gpt.training.finetune import load_finetuned


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 2-layer GPT over the bytes tokenizer (<|endoftext|> = 256), pretrained 3 steps by the trainer."""
    from gpt.training.corpus import build_tokenizer
    from gpt.model import GPTModel
    from gpt.training.trainer import TrainConfig, pretrainer

    out = tmp_path_factory.mktemp("pretrained")
    tok, spec = build_tokenizer("bytes")
    cfg = {"vocab_size": tok.n_vocab, "context_length": 96, "emb_dim": 16, "n_heads": 2, "n_layers": 2,
           "drop_rate": 0.1, "qkv_bias": False}
    text = "The quick brown fox jumps over the lazy dog. " * 60
    ids = np.asarray(tok.encode(text), dtype=np.int64)
    tc = TrainConfig(max_steps=3, batch_size=2, eval_interval=3, eval_iters=1, sample_tokens=0, plot=False,
                     warmup_steps=0)
    pretrainer(GPTModel(cfg, backend=backends.get_backend("numpy"), seed=1), ids[:2000], ids[2000:], tc,
            out_dir=out, tokenizer=tok, tokenizer_spec=spec).run()
    return out


def tinygpt(*argv):
    """Run the `tinygpt` CLI in-process."""
    return cli.main([str(a) for a in argv])


SMALL = ["--batch-size", "4", "--eval-iters", "1", "--lr", "1e-3"]


def classify(pretrained, out, *extra):
    return tinygpt("finetune", "classify", "--init", pretrained, "--data",
                   require_data("sms-spam/SMSSpamCollection"), "--out", out, "--limit", 40, *SMALL, *extra)


def test_classify_end_to_end(pretrained, tmp_path, capsys):
    assert classify(pretrained, tmp_path / "run", "--max-steps", 3, "--eval-interval", 2) == 0
    printed = capsys.readouterr().out
    assert "28 train / 4 val / 8 test" in printed and "majority-class baseline" in printed
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["step"] == 3 and results["sizes"] == {"train": 28, "val": 4, "test": 8}
    assert all(0 <= results["accuracy"][k] <= 1 for k in ("train", "val", "test"))
    assert results["trainable"] == "last-block" and results["lora"] is None
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [0, 2, 3] and "val_acc" in evals[-1]
    assert all(k in records[1] for k in ("step", "train_loss", "lr", "tokens_seen", "tokens_per_s"))
    model, tok, state = load_finetuned(tmp_path / "run", backends.get_backend("numpy"))
    assert tuple(model.out_head.weight.shape) == (2, 16) and state["finetune"]["task"] == "classify"
    from gpt.classify import classify_review

    answer = classify_review("WINNER! Claim your prize now", model, tok, max_length=state["finetune"]["max_length"],
                             pad_token_id=256)
    assert answer in ("spam", "not spam")


@pytest.mark.parametrize("backend", ["numpy", "torch", "cupy"])   # cupy: the CPU stand-in (tests/fakecupy)
def test_classify_with_lora_resumes_exactly(pretrained, tmp_path, capsys, backend, request):
    if backend == "cupy":
        request.getfixturevalue("fake_cupy")
    lora = ["--lora-rank", "2", "--lora-alpha", "4", "--eval-interval", "2", "--backend", backend]
    assert classify(pretrained, tmp_path / "straight", "--max-steps", 4, *lora) == 0
    assert classify(pretrained, tmp_path / "split", "--max-steps", 2, *lora) == 0
    assert tinygpt("finetune", "classify", "--out", tmp_path / "split", "--resume", "--max-steps", 4,
                   "--backend", backend) == 0
    assert "resumed" in capsys.readouterr().out
    B = backends.get_backend(backend)
    (a, _, sa), (b, _, sb) = (load_finetuned(tmp_path / d, B) for d in ("straight", "split"))
    assert sa["step"] == sb["step"] == 4 and sa["finetune"]["lora"] == {"rank": 2, "alpha": 4.0}
    wa, wb = a.state_dict(), b.state_dict()
    assert "trf_blocks.0.att.W_query.lora.A" in wa and "out_head.lora.B" in wa
    for name in wa:
        np.testing.assert_array_equal(B.to_numpy(wa[name]), B.to_numpy(wb[name]), err_msg=name)
    results = json.loads((tmp_path / "split" / "results.json").read_text())
    assert results["lora"] == {"rank": 2, "alpha": 4.0}


@pytest.mark.parametrize("backend", ["numpy", "cupy"])   # cupy: the CPU stand-in (tests/fakecupy)
def test_instruct_with_lora_then_chat(pretrained, tmp_path, capsys, monkeypatch, backend, request):
    if backend == "cupy":
        request.getfixturevalue("fake_cupy")
    out = tmp_path / "inst"
    assert tinygpt("finetune", "instruct", "--init", pretrained, "--data", require_data("instruction-data.json"),
                   "--out", out, "--limit", 40, *SMALL, "--max-steps", 2, "--eval-interval", 2,
                   "--lora-rank", 2, "--max-new-tokens", 4, "--backend", backend) == 0
    printed = capsys.readouterr().out
    assert "34 train / 4 test / 2 val" in printed
    responses = json.loads((out / "test-responses.json").read_text())
    assert len(responses) == 4 and all("model_response" in r for r in responses)
    from gpt.training.checkpoint import load_model

    plain, _, _ = load_model(out / "merged", backends.get_backend("numpy"))    # merged LoRA: a plain GPT
    assert "out_head.weight" in plain.state_dict()
    answers = []
    for stdin in ("hello\n/exit\nhello again\n", "hello\n"):
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        assert tinygpt("chat", "--checkpoint", out, "--max-new-tokens", 5, "--temperature", 1, "--seed", 0,
                       "--backend", backend) == 0
        answers.append(capsys.readouterr().out)
    assert len(answers[0].rstrip("\n")) > 0 and answers[0] == answers[1]    # one answer, then /exit stops


def test_instruct_without_lora_is_a_plain_checkpoint(pretrained, tmp_path, capsys):
    out = tmp_path / "full"
    assert tinygpt("finetune", "instruct", "--init", pretrained, "--data", require_data("instruction-data.json"),
                   "--out", out, "--limit", 30, *SMALL, "--max-steps", 1, "--max-new-tokens", 0) == 0
    from gpt.training.checkpoint import load_model

    model, _, state = load_model(out, backends.get_backend("numpy"))
    assert state["finetune"]["trainable"] == "all" and not (out / "test-responses.json").exists()


@pytest.mark.parametrize("argv,message", [
    (["finetune", "classify", "--out", "{tmp}/x"], "needs --init"),
    (["finetune", "classify", "--init", "{pre}", "--data", "{tmp}/none.txt", "--out", "{tmp}/x"], "not found"),
    (["finetune", "classify", "--init", "{pre}", "--data", "{sms}", "--out", "{tmp}/x", "--lora-alpha", "2"],
     "--lora-rank"),
    (["finetune", "classify", "--init", "{pre}", "--data", "{sms}", "--out", "{tmp}/x", "--lora-rank", "2",
      "--trainable", "all"], "exclude"),
    (["finetune", "instruct", "--init", "{pre}", "--data", "{sms}", "--out", "{tmp}/x"], "not valid JSON"),
    (["finetune", "instruct", "--out", "{tmp}/x", "--epochs", "0"], "--epochs"),
    (["finetune", "classify", "--out", "{tmp}/x", "--resume"], "not found"),
    (["chat", "--checkpoint", "{tmp}/nothing"], "not found"),
])
def test_bad_arguments_exit_2_with_one_line(pretrained, tmp_path, capsys, argv, message):
    sms = require_data("sms-spam/SMSSpamCollection")
    argv = [a.format(tmp=tmp_path, pre=pretrained, sms=sms) for a in argv]
    assert tinygpt(*argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tinygpt: error:") and message in err, err


def test_chat_refuses_a_classifier(pretrained, tmp_path, capsys):
    assert classify(pretrained, tmp_path / "clf", "--max-steps", 1) == 0
    capsys.readouterr()
    assert tinygpt("chat", "--checkpoint", tmp_path / "clf") == 2
    assert "classifier" in capsys.readouterr().err


def test_init_from_a_hugging_face_directory_uses_gpt2s_tokenizer(tmp_path, capsys, monkeypatch):
    """--init pointing at a Hugging Face GPT-2 directory (what `tinygpt download gpt2` writes), here a tiny one."""
    from gpt.model import GPTModel
    from gpt.weights import export_hf_gpt2

    monkeypatch.setenv("TINYGPT_DATA_DIR", str(require_data("gpt2/encoder.json").parent.parent))
    cfg = {"vocab_size": 50257, "context_length": 64, "emb_dim": 8, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0,
           "qkv_bias": True, "tie_weights": True}
    hf = export_hf_gpt2(GPTModel(cfg, backend=backends.get_backend("numpy"), seed=2), tmp_path / "hf")
    assert classify(hf, tmp_path / "run", "--max-steps", 1, "--lora-rank", 2) == 0
    assert "tokens with id 50256" in capsys.readouterr().out
    model, tok, state = load_finetuned(tmp_path / "run", backends.get_backend("numpy"))
    assert state["tokenizer"] == {"kind": "gpt2"} and tok.eot_token == 50256
    assert tuple(model.out_head.linear.weight.shape) == (2, 8)


def test_ctrl_c_during_finetune_checkpoints_the_step_and_resume_is_exact(pretrained, tmp_path, capsys, monkeypatch):
    """SIGINT at step 2 of 4: the step finishes and is checkpointed (off the eval interval), exit 130 without results;
    `--resume` then ends with the same weights as an uninterrupted run."""
    import os
    import signal

    from gpt.training.trainer import Trainer

    step = Trainer.train_step

    def interrupted_step(self):
        loss = step(self)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    args = ["--max-steps", 4, "--eval-interval", 10]
    assert classify(pretrained, tmp_path / "straight", *args) == 0
    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    assert classify(pretrained, tmp_path / "split", *args) == 130
    out = capsys.readouterr().out
    assert "stopped at step 2" in out and "--resume" in out and not (tmp_path / "split" / "results.json").exists()
    monkeypatch.setattr(Trainer, "train_step", step)
    assert tinygpt("finetune", "classify", "--out", tmp_path / "split", "--resume") == 0
    B = backends.get_backend("numpy")
    (a, _, sa), (b, _, sb) = (load_finetuned(tmp_path / d, B) for d in ("straight", "split"))
    assert sa["step"] == sb["step"] == 4
    wa, wb = a.state_dict(), b.state_dict()
    for name in wa:
        np.testing.assert_array_equal(B.to_numpy(wa[name]), B.to_numpy(wb[name]), err_msg=name)


def test_classify_command_and_generate_on_a_classifier(pretrained, tmp_path, capsys, monkeypatch):
    """`tinygpt classify` labels messages with a `finetune classify` run as the book's classify_review does;
    `generate` on that run names it a classifier and points at `classify`."""
    from gpt.classify import classify_review

    out = tmp_path / "clf"
    assert classify(pretrained, out, "--max-steps", 2) == 0
    capsys.readouterr()
    texts = ["WINNER! Claim your prize now", "see you at lunch?"]
    assert tinygpt("classify", "--checkpoint", out, "--text", texts[0], "--text", texts[1]) == 0
    lines = capsys.readouterr().out.splitlines()
    model, tok, state = load_finetuned(out, backends.get_backend("numpy"))
    for line, text in zip(lines, texts):
        label, prob, echoed = line.split("\t")
        assert echoed == text and 0.5 <= float(prob) <= 1.0
        assert label == classify_review(text, model, tok, max_length=state["finetune"]["max_length"],
                                        pad_token_id=256)
    monkeypatch.setattr("sys.stdin", io.StringIO(texts[1] + "\n"))
    assert tinygpt("classify", "--checkpoint", out) == 0 and capsys.readouterr().out == lines[1] + "\n"
    assert tinygpt("generate", "--checkpoint", out, "--prompt", "hi") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a spam classifier" in err and "tinygpt classify" in err
    assert tinygpt("classify", "--checkpoint", pretrained, "--text", "hi") == 2
    assert "not a classifier (a pretrained language model)" in capsys.readouterr().err


def test_chat_on_a_model_that_was_not_instruction_tuned_says_so_first(pretrained, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    assert tinygpt("chat", "--checkpoint", pretrained, "--max-new-tokens", 2) == 0
    out, err = capsys.readouterr()
    assert "was not instruction-tuned" in err and "finetune instruct" in err and out.count("\n") == 1


def test_finetune_resume_accepts_the_original_flags(pretrained, tmp_path, capsys):
    out = tmp_path / "run"
    assert classify(pretrained, out, "--max-steps", 2, "--lora-rank", 2) == 0
    assert classify(pretrained, out, "--max-steps", 3, "--lora-rank", 2, "--resume") == 0   # same flags + --resume
    assert "resumed" in capsys.readouterr().out
    assert classify(pretrained, out, "--max-steps", 4, "--lora-rank", 4, "--resume") == 2
    err = capsys.readouterr().err
    assert "--lora-rank/--lora-alpha {'rank': 4, 'alpha': 4} (the run has {'rank': 2, 'alpha': 2})" in err
