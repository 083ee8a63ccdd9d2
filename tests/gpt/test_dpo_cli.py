"""`tinygpt finetune dpo` end to end on a tiny pretrained checkpoint (made here with the trainer) and a small
preference file: metrics per evaluation (at step 0 the policy is the reference, so the loss is exactly log 2 and
every reward 0), the saved reference, the before/after responses, exact resume, and one-line exit-2 errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import backends
import gpt.cli as cli
from gpt.nn import to_numpy_any
from gpt.training.checkpoint import load_model, read_checkpoint

COLORS = ["red", "blue", "green", "teal", "gold", "gray", "pink", "plum"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 1-layer GPT over the bytes tokenizer (context 256: the Alpaca header alone is ~120 bytes), pretrained 2
    steps, and 40 preference records in the book's format."""
    from gpt.model import GPTModel
    from gpt.training.corpus import build_tokenizer
    from gpt.training.trainer import TrainConfig, pretrainer

    root = tmp_path_factory.mktemp("dpo")
    tok, spec = build_tokenizer("bytes")
    cfg = {"vocab_size": tok.n_vocab, "context_length": 256, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
           "drop_rate": 0.0, "qkv_bias": False}
    ids = np.asarray(tok.encode("Below is an instruction. ### Response: Thank you. " * 120), dtype=np.int64)
    tc = TrainConfig(max_steps=2, batch_size=2, eval_interval=2, eval_iters=1, sample_tokens=0, plot=False,
                     warmup_steps=0)
    pretrainer(GPTModel(cfg, backend=backends.get_backend("numpy"), seed=1), ids[:4000], ids[4000:], tc,
               out_dir=root / "pre", tokenizer=tok, tokenizer_spec=spec).run()
    records = [{"instruction": f"Name color {i}.", "input": "" if i % 2 else "politely",
                "output": COLORS[i % 8], "chosen": f"It is {COLORS[i % 8]}, thanks.", "rejected": "Go away."}
               for i in range(40)]
    (root / "pairs.json").write_text(json.dumps(records), encoding="utf-8")
    return root


def tinygpt(*argv):
    return cli.main([str(a) for a in argv])


def dpo(files, out, *extra):
    return tinygpt("finetune", "dpo", "--init", files / "pre", "--data", files / "pairs.json", "--out", out,
                   "--batch-size", 2, "--eval-interval", 2, "--eval-iters", 1, "--lr", "1e-3", "--beta", "0.5",
                   *extra)


def evals(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "val_loss" in r]


def test_dpo_end_to_end(files, tmp_path, capsys):
    run = tmp_path / "run"
    assert dpo(files, run, "--max-steps", 4, "--max-new-tokens", 3) == 0
    printed = capsys.readouterr().out
    assert "34 train / 4 test / 2 val" in printed and "beta 0.5" in printed
    ev = evals(run)
    assert [r["step"] for r in ev] == [0, 2, 4]
    start = ev[0]
    for split in ("train", "val"):   # the policy starts as the reference: −log σ(0) = log 2, rewards 0
        assert start[f"{split}_loss"] == pytest.approx(math.log(2), abs=1e-6)
        assert start[f"{split}_chosen_reward"] == start[f"{split}_rejected_reward"] == 0
        assert start[f"{split}_reward_margin"] == 0 and start[f"{split}_reward_accuracy"] == 0
    assert ev[-1]["train_loss"] < math.log(2) and ev[-1]["train_reward_margin"] > 0
    B = backends.get_backend("numpy")
    reference = load_model(run / "reference", B)[0].state_dict()
    init = load_model(files / "pre", B)[0].state_dict()
    assert all(np.array_equal(to_numpy_any(reference[k]), to_numpy_any(init[k])) for k in init)
    state = read_checkpoint(run, with_optimizer=False).state
    assert state["finetune"]["task"] == "dpo" and state["finetune"]["beta"] == 0.5 and state["dpo"]["beta"] == 0.5
    responses = json.loads((run / "test-responses.json").read_text())
    assert len(responses) == 4 and all({"chosen", "rejected", "response_before", "response_after"} <= set(r)
                                       for r in responses)


def test_dpo_resumes_exactly(files, tmp_path, capsys):
    assert dpo(files, tmp_path / "straight", "--max-steps", 4, "--max-new-tokens", 0) == 0
    assert dpo(files, tmp_path / "split", "--max-steps", 2, "--max-new-tokens", 0) == 0
    assert tinygpt("finetune", "dpo", "--out", tmp_path / "split", "--resume", "--max-steps", 4,
                   "--max-new-tokens", 0) == 0
    assert "resumed" in capsys.readouterr().out
    B = backends.get_backend("numpy")
    a = load_model(tmp_path / "straight", B)[0].state_dict()
    b = load_model(tmp_path / "split", B)[0].state_dict()
    assert all(np.array_equal(to_numpy_any(a[k]), to_numpy_any(b[k])) for k in a)
    assert [r["step"] for r in evals(tmp_path / "split")] == [0, 2, 4]


@pytest.mark.parametrize("extra,message", [
    (["--beta", "0"], "argument --beta: 0 must be > 0"),
    (["--data", "missing.json"], "preference data 'missing.json' not found"),
])
def test_dpo_user_errors_exit_2_with_one_line(files, tmp_path, capsys, extra, message):
    argv = ["finetune", "dpo", "--init", files / "pre", "--data", files / "pairs.json", "--out", tmp_path / "r"]
    assert tinygpt(*argv, *extra) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tinygpt: error: ") and message in err, err


def test_dpo_starts_from_an_instruct_run_and_refuses_a_classifier(files, tmp_path, capsys):
    from conftest import require_data

    instr = [{"instruction": r["instruction"], "input": r["input"], "output": r["chosen"]}
             for r in json.loads((files / "pairs.json").read_text())]
    (tmp_path / "instr.json").write_text(json.dumps(instr), encoding="utf-8")
    assert tinygpt("finetune", "instruct", "--init", files / "pre", "--data", tmp_path / "instr.json", "--out",
                   tmp_path / "inst", "--max-steps", 1, "--batch-size", 2, "--eval-iters", 1,
                   "--max-new-tokens", 0) == 0
    assert dpo(files, tmp_path / "run", "--init", tmp_path / "inst", "--max-steps", 1, "--max-new-tokens", 0) == 0
    B = backends.get_backend("numpy")
    reference = load_model(tmp_path / "run" / "reference", B)[0].state_dict()
    tuned = load_model(tmp_path / "inst", B)[0].state_dict()
    assert all(np.array_equal(to_numpy_any(reference[k]), to_numpy_any(tuned[k])) for k in tuned)
    assert tinygpt("finetune", "classify", "--init", files / "pre", "--data", require_data(
        "sms-spam/SMSSpamCollection"), "--out", tmp_path / "spam", "--limit", 40, "--max-steps", 1,
        "--batch-size", 4, "--eval-iters", 1) == 0
    capsys.readouterr()
    assert dpo(files, tmp_path / "run2", "--init", tmp_path / "spam", "--max-steps", 1) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a `finetune classify` model; DPO starts from an instruction model" in err
