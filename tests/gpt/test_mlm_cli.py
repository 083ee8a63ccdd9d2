"""`tinygpt train --arch bert` and `tinygpt fill-mask` end to end on a tiny corpus and config: the masked-LM loss
goes down, the checkpoint records the architecture and special ids, a resumed run equals the uninterrupted one,
fill-mask prints top-k candidates per [MASK] with probabilities, and bad input (no [MASK], a decoder's checkpoint,
conflicting flags) exits 2 with one line on stderr."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import run_cli

from gpt.cli import main
from gpt.training.checkpoint import read_checkpoint

TEXT = "the cat sat on the mat. the dog sat on the log. the cow lay on the rug. " * 40
TINY = ["--tokenizer", "bytes", "--context-length", "24", "--emb-dim", "32", "--n-heads", "2", "--n-layers", "2",
        "--batch-size", "8", "--lr", "3e-3", "--warmup-steps", "2", "--eval-iters", "2", "--drop-rate", "0.0",
        "--no-plot"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "animals.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def evals(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "val_loss" in r]


@pytest.fixture(scope="module")
def bert_run(data_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "bert"
    assert main(["train", "--arch", "bert", "--data", str(data_file), "--out", str(out), "--max-steps", "40",
                 "--eval-interval", "20", *TINY]) == 0
    return out


def test_train_arch_bert_learns_and_records_the_encoder(bert_run):
    ev = evals(bert_run)
    assert [r["step"] for r in ev] == [0, 20, 40]
    assert ev[-1]["val_loss"] < ev[0]["val_loss"] - 1.0  # from ~ln 261 = 5.6
    assert 0.0 <= ev[-1]["val_mlm_acc"] <= 1.0 and ev[-1]["val_mlm_acc"] > ev[0]["val_mlm_acc"]
    state = read_checkpoint(bert_run, with_optimizer=False).state
    assert state["arch"] == "bert" and state["task"] == "mlm"
    assert state["mlm"]["special_ids"] == {"pad": 257, "cls": 258, "sep": 259, "mask": 260}  # after 256 bytes + EOT
    assert state["model_config"]["vocab_size"] == 261 and state["model_config"]["hidden_dim"] == 128


def test_train_arch_bert_has_its_own_recipe_that_flags_override(data_file, tmp_path):
    """Without optimisation flags a BERT run gets the encoder's recipe (gpt/cli/train.py ARCH_TRAIN_DEFAULTS),
    not the decoder's lr 2e-3 / dropout 0.1; a flag given wins over it."""
    sizes = TINY[:TINY.index("--batch-size")]
    runs = {"own": [], "flags": ["--lr", "5e-4", "--warmup-steps", "0", "--drop-rate", "0.2"]}
    for name, flags in runs.items():
        assert main(["train", "--arch", "bert", "--data", str(data_file), "--out", str(tmp_path / name),
                     "--max-steps", "1", "--batch-size", "2", "--eval-iters", "1", "--no-plot", *sizes, *flags]) == 0
    own, flagged = (read_checkpoint(tmp_path / n, with_optimizer=False).state for n in runs)
    cfg = own["train_config"]
    assert (cfg["lr"], cfg["min_lr"], cfg["warmup_steps"], own["model_config"]["drop_rate"]) == (1e-3, 5e-5, 100, 0.0)
    cfg = flagged["train_config"]
    assert (cfg["lr"], cfg["min_lr"], cfg["warmup_steps"], flagged["model_config"]["drop_rate"]) == (5e-4, 5e-5, 0, 0.2)


def test_resumed_bert_run_equals_the_uninterrupted_one(data_file, bert_run, tmp_path, capsys, monkeypatch):
    from gpt.training.trainer import Trainer

    step = Trainer.train_step

    def stop_after_13(self):
        loss = step(self)
        if self.step == 13:
            self.request_stop()  # what the first Ctrl-C does: finish the step, checkpoint it, end the run
        return loss

    monkeypatch.setattr(Trainer, "train_step", stop_after_13)
    out = tmp_path / "resumed"
    rc, text, err = run_cli(capsys, "train", "--arch", "bert", "--data", data_file, "--out", out, "--max-steps", "40",
                        "--eval-interval", "20", *TINY)
    assert rc == 130 and read_checkpoint(out).step == 13, (text, err)
    monkeypatch.setattr(Trainer, "train_step", step)
    rc, text, err = run_cli(capsys, "train", "--out", out, "--resume")
    assert rc == 0, err
    losses = [{r["step"]: r["train_loss"] for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
               if "val_loss" not in r} for d in (out, bert_run)]
    assert losses[0] == losses[1]  # every step's loss, before and after the resume: the same masks, bit for bit
    assert evals(out)[-1] == {**evals(bert_run)[-1], "tokens_per_s": evals(out)[-1]["tokens_per_s"]}


def test_fill_mask_prints_top_k_per_mask(bert_run, capsys):
    rc, out, err = run_cli(capsys, "fill-mask", "--checkpoint", bert_run, "--text", "the c[MASK]t sat on the [MASK]at.",
                       "--top-k", "3")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "[MASK] 1 of 2:" and lines[4] == "[MASK] 2 of 2:" and len(lines) == 8
    for block in (lines[1:4], lines[5:8]):
        probs = [float(re.match(r"  (\d\.\d{4})  \".*\"$", line).group(1)) for line in block]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_fill_mask_bad_input_exits_2_with_one_line(bert_run, data_file, tmp_path, capsys):
    rc, out, err = run_cli(capsys, "fill-mask", "--checkpoint", bert_run, "--text", "no mask here")
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("tinygpt: error: --text has no [MASK] to fill")
    gpt_run = tmp_path / "gpt"
    assert run_cli(capsys, "train", "--data", data_file, "--out", gpt_run, "--max-steps", "1", "--eval-interval", "1",
               *TINY)[0] == 0
    rc, out, err = run_cli(capsys, "fill-mask", "--checkpoint", gpt_run, "--text", "the [MASK] sat")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert re.match(r"tinygpt: error: \S+ is a gpt2 checkpoint, a decoder without a masked-LM head; fill-mask "
                    r"needs one trained with `tinygpt train --arch bert`$", err.strip())
    rc, _, err = run_cli(capsys, "train", "--arch", "bert", "--data", data_file, "--out", tmp_path / "x",
                     "--weight-init", "torch", *TINY)
    assert rc == 2 and "--weight-init applies to --arch gpt2 only" in err
    rc, _, err = run_cli(capsys, "train", "--arch", "bert", "--out", gpt_run, "--resume", "--max-steps", "2")
    assert rc == 2 and "--arch bert (the run has gpt2)" in err


def make_hf_bert(path: Path) -> Path:
    """A tiny random BertForMaskedLM directory with a vocab.txt, saved by transformers (no download)."""
    import torch
    import transformers

    torch.manual_seed(0)
    path.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "."]
    (path / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16)
    transformers.BertForMaskedLM(cfg).save_pretrained(path)
    return path


def test_fill_mask_reads_a_hugging_face_bert_directory(tmp_path, capsys):
    make_hf_bert(tmp_path)
    rc, out, err = run_cli(capsys, "fill-mask", "--checkpoint", tmp_path, "--text", "the cat [MASK] on the mat.",
                       "--top-k", "2")
    assert rc == 0, err
    assert out.splitlines()[0] == "[MASK] 1 of 1:" and len(out.splitlines()) == 3


def test_finetune_classify_from_a_bert_run_uses_the_pooled_cls(bert_run, tmp_path, capsys):
    rng = __import__("numpy").random.default_rng(0)
    ham = [f"the {w} sat on the mat." for w in rng.choice(["cat", "dog", "cow"], 40)]
    spam = [f"win a {w} now! call now!" for w in rng.choice(["prize", "car", "trip"], 40)]
    data = tmp_path / "SMSSpamCollection"
    data.write_text("".join(f"ham\t{t}\n" for t in ham) + "".join(f"spam\t{t}\n" for t in spam), encoding="utf-8")
    out = tmp_path / "cls"
    rc, text, err = run_cli(capsys, "finetune", "classify", "--init", bert_run, "--data", data, "--out", out,
                        "--epochs", "4", "--batch-size", "8", "--lr", "3e-3", "--eval-interval", "100",
                        "--trainable", "all")
    assert rc == 0, err
    assert "padded to" in text and "with id 257" in text  # BERT's [PAD], masked out of attention
    results = json.loads((out / "results.json").read_text())
    assert results["accuracy"]["train"] >= 0.9  # the two kinds of message differ in every word
    ft = read_checkpoint(out, with_optimizer=False).state["finetune"]
    assert ft["arch"] == "bert" and ft["special_ids"]["cls"] == 258
    rc, text, err = run_cli(capsys, "classify", "--checkpoint", out, "--text", "win a car now! call now!",
                        "--text", "the dog sat on the mat.")
    assert rc == 0, err
    assert [line.split("\t")[0] for line in text.splitlines()] == ["spam", "not spam"]


def test_generate_and_chat_refuse_a_bert_directory(tmp_path, capsys):
    """A Hugging Face BERT directory loads through gpt.from_pretrained; generate and chat name it an encoder."""
    import backends
    import gpt
    from gpt.bert import BertModel

    d = make_hf_bert(tmp_path / "bert")
    capsys.readouterr()                      # transformers' save progress bar
    assert isinstance(gpt.from_pretrained(d, backend=backends.get_backend("numpy")), BertModel)
    for argv in (["generate", "--checkpoint", d, "--prompt", "hello"], ["chat", "--checkpoint", d]):
        assert main([str(a) for a in argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is a BERT encoder" in err and "fill-mask" in err


def test_train_arch_bert_names_the_encoder_in_its_summary(data_file, tmp_path, capsys):
    rc, out, err = run_cli(capsys, "train", "--arch", "bert", "--data", data_file, "--out", tmp_path / "b",
                           "--max-steps", "1", "--eval-interval", "1", "--tokenizer", "bytes", "--context-length",
                           "16", "--emb-dim", "16", "--n-heads", "2", "--n-layers", "1", "--batch-size", "4",
                           "--eval-iters", "1", "--no-plot")
    assert rc == 0, err
    assert "parameters (bert: 1 layers" in out and "(gpt2:" not in out
