"""The `tinygpt` command (gpt/cli/) end to end on tiny configs: train on numpy and torch (loss goes down,
checkpoint and metrics written), generate/eval/convert read the result, resume continues, `python -m gpt` runs,
and every user error exits 2 with one line on stderr and no traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, require_data, run_cli
from gpt.training.checkpoint import read_checkpoint, read_index
from gpt.cli import main

TEXT = "the cat sat on the mat. the dog sat on the log. " * 60
TINY = ["--tokenizer", "bytes", "--context-length", "16", "--emb-dim", "32", "--n-heads", "2", "--n-layers", "2",
        "--batch-size", "8", "--lr", "5e-3", "--min-lr", "5e-4", "--warmup-steps", "2", "--eval-iters", "2",
        "--drop-rate", "0.0", "--no-plot", "--sample-prompt", "the "]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "cats.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def evals(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "val_loss" in r]


@pytest.fixture(scope="module")
def numpy_run(data_file, tmp_path_factory) -> Path:
    """One 24-step numpy run shared by the tests that read a checkpoint."""
    out = tmp_path_factory.mktemp("run") / "np"
    assert main(["train", "--data", str(data_file), "--out", str(out), "--max-steps", "24", "--eval-interval", "8",
                 *TINY]) == 0
    return out


def test_train_numpy_end_to_end(numpy_run):
    records = [json.loads(line) for line in (numpy_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_loss" not in r] == list(range(1, 25))
    for r in records:
        assert {"step", "train_loss", "lr", "tokens_seen", "tokens_per_s"} <= r.keys()
    ev = evals(numpy_run)
    assert [r["step"] for r in ev] == [0, 8, 16, 24]
    assert ev[-1]["val_loss"] < ev[0]["val_loss"] - 1.5          # from ~ln 257 = 5.5 well down
    assert ev[-1]["train_loss"] < ev[0]["train_loss"] - 1.5
    ck = read_checkpoint(numpy_run)
    assert ck.step == 24 and ck.state["tokenizer"] == {"kind": "bytes"}
    assert read_index(numpy_run)["best"]["step"] == 24


def test_generate_streams_text_from_the_checkpoint(numpy_run, capsys):
    rc, out, err = run_cli(capsys, "generate", "--checkpoint", numpy_run, "--prompt", "the c", "--max-new-tokens", "20",
                       "--seed", "1")
    assert rc == 0, err
    assert out.startswith("the c") and len(out) > len("the c") + 5
    rc2, out2, _ = run_cli(capsys, "generate", "--checkpoint", numpy_run / "step-000024", "--prompt", "the c",
                       "--max-new-tokens", "20", "--seed", "1")
    assert rc2 == 0 and out2 == out                                # same seed, same text; a step dir works too


def test_generate_greedy_learned_the_pattern(numpy_run, capsys):
    prompt = "the cat sat on the"
    rc, out, _ = run_cli(capsys, "generate", "--checkpoint", numpy_run, "--prompt", prompt, "--max-new-tokens", "12",
                     "--temperature", "0")
    assert rc == 0 and set(out[len(prompt):].strip()) <= set(TEXT)   # only characters the text has


def test_eval_prints_loss_and_perplexity(numpy_run, data_file, capsys):
    rc, out, err = run_cli(capsys, "eval", "--checkpoint", numpy_run, "--data", data_file)
    assert rc == 0, err
    loss = float(out.split()[1])
    assert out.startswith("loss ") and "perplexity" in out and loss < 4.0
    assert float(out.split()[3]) == pytest.approx(np.exp(loss), rel=1e-3)


def test_resume_continues_and_refuses_new_sizes(numpy_run, data_file, capsys, tmp_path):
    out = tmp_path / "r"
    rc, _, err = run_cli(capsys, "train", "--data", data_file, "--out", out, "--max-steps", "6", "--eval-interval", "3",
                     *TINY)
    assert rc == 0, err
    rc, text, err = run_cli(capsys, "train", "--out", out, "--resume", "--max-steps", "9", "--eval-interval", "3",
                        "--no-plot")
    assert rc == 0, err
    assert "resumed" in text and read_checkpoint(out).step == 9
    assert [r["step"] for r in evals(out)] == [0, 3, 6, 9]
    rc, _, err = run_cli(capsys, "train", "--out", out, "--resume", "--emb-dim", "64")
    assert rc == 2 and "--emb-dim" in err


def test_train_torch_end_to_end(data_file, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)   # tiny model: extra threads only contend with the other xdist worker
    out = tmp_path / "t"
    rc, _, err = run_cli(capsys, "train", "--backend", "torch", "--data", data_file, "--out", out, "--max-steps", "20",
                     "--eval-interval", "10", *TINY)
    assert rc == 0, err
    ev = evals(out)
    assert ev[-1]["val_loss"] < ev[0]["val_loss"] - 1.0
    rc, text, err = run_cli(capsys, "generate", "--backend", "torch", "--checkpoint", out, "--prompt", "the ",
                        "--max-new-tokens", "10", "--seed", "0")
    assert rc == 0 and text.startswith("the "), err
    # names are data: the torch checkpoint generates on numpy too
    rc, _, err = run_cli(capsys, "generate", "--checkpoint", out, "--prompt", "the ", "--max-new-tokens", "5")
    assert rc == 0, err


def test_train_with_bpe_tokenizer_saves_it(data_file, tmp_path, capsys):
    out = tmp_path / "bpe"
    args = [a for a in TINY if a not in ("--tokenizer", "bytes")]
    rc, text, err = run_cli(capsys, "train", "--data", data_file, "--out", out, "--tokenizer", "bpe", "--vocab-size",
                        "300", "--max-steps", "3", "--eval-interval", "3", *args)
    assert rc == 0, err
    ck = read_checkpoint(out)
    assert ck.state["tokenizer"]["kind"] == "bpe" and (ck.path / "tokenizer.bpe").is_file()
    from tokenizer import BPETokenizer

    n_vocab = BPETokenizer.load(ck.path / "tokenizer.bpe").n_vocab
    assert ck.state["model_config"]["vocab_size"] == n_vocab <= 300   # fewer when the text runs out of pairs
    rc, text, err = run_cli(capsys, "generate", "--checkpoint", out, "--prompt", "the dog", "--max-new-tokens", "5")
    assert rc == 0 and text.startswith("the dog"), err


def test_convert_round_trip_and_generate_from_hf(numpy_run, tmp_path, capsys, monkeypatch):
    hf, back = tmp_path / "hf", tmp_path / "back"
    rc, _, err = run_cli(capsys, "convert", "--checkpoint", numpy_run, "--to-hf", hf)
    assert rc == 0 and (hf / "config.json").is_file() and (hf / "tokenizer.json").is_file() and err == ""
    rc, _, err = run_cli(capsys, "convert", "--from-hf", hf, "--out", back)
    assert rc == 0, err
    original, converted = read_checkpoint(numpy_run).weights, read_checkpoint(back).weights
    for name, w in original.items():
        assert np.array_equal(converted[name], w), name
    # the export carries the run's own (bytes) tokenizer: greedy text from it, and from the converted-back
    # checkpoint, is the run's own (it used to fall back to GPT-2's tokenizer and print garbage)
    greedy = ("--prompt", "a", "--max-new-tokens", "5", "--temperature", "0")
    texts = [run_cli(capsys, "generate", "--checkpoint", d, *greedy) for d in (numpy_run, hf, back)]
    assert all(rc == 0 for rc, _, _ in texts) and texts[0][1] == texts[1][1] == texts[2][1], texts


def test_python_dash_m_gpt_entry_point(data_file, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "gpt", "train", "--data", str(data_file), "--out",
                           str(tmp_path / "m"), "--max-steps", "2", "--eval-interval", "2", *TINY],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "done: step 2" in proc.stdout and read_checkpoint(tmp_path / "m").step == 2
    proc = subprocess.run([sys.executable, "-m", "gpt", "train", "--lr", "-1"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("tinygpt: error:") and "Traceback" not in proc.stderr


def test_divergence_exits_1_with_the_step(data_file, tmp_path, capsys, monkeypatch):
    import gpt.training.trainer

    real, calls = gpt.training.trainer.accumulate_grads, []

    def nan_on_third(model, batches, objective=None):
        calls.append(1)
        loss = real(model, batches, objective)
        return float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(gpt.training.trainer, "accumulate_grads", nan_on_third)
    rc, _, err = run_cli(capsys, "train", "--data", data_file, "--out", tmp_path / "nan", "--max-steps", "6",
                     "--eval-interval", "2", *TINY)
    assert rc == 1
    assert err.count("\n") == 1 and "diverged at step 3" in err and "step-000002" in err
    assert read_checkpoint(tmp_path / "nan").step == 2


def _has_cupy_gpu() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _has_cuda_torch() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return True


BAD = {
    "missing data file": (["train", "--data", "{tmp}/nope.txt"], "not found"),
    "unknown backend": (["train", "--backend", "jax"], "invalid choice"),
    "negative lr": (["train", "--lr", "-1"], "--lr"),
    "min lr above lr": (["train", "--lr", "0.001", "--min-lr", "0.01"], "--min-lr"),
    "heads do not divide": (["train", "--emb-dim", "64", "--n-heads", "5"], "--n-heads 5 does not divide"),
    "context beyond config": (["train", "--config", "124M", "--context-length", "2048"], "exceeds"),
    "bad drop rate": (["train", "--drop-rate", "1.5"], "--drop-rate"),
    "vocab size for gpt2": (["train", "--data", "{data}", "--tokenizer", "gpt2", "--vocab-size", "500"],
                            "--vocab-size"),
    "invalid utf-8": (["train", "--data", "{tmp}/latin1.txt"], "offset 3"),
    "missing checkpoint": (["generate", "--checkpoint", "{tmp}/none", "--prompt", "x"], "not found"),
    "bad top-p": (["generate", "--checkpoint", "{run}", "--prompt", "x", "--top-p", "1.5"], "--top-p"),
    "wrong-shape checkpoint": (["generate", "--checkpoint", "{tmp}/reshaped", "--prompt", "x"], "does not fit"),
    "eval missing data": (["eval", "--checkpoint", "{run}", "--data", "{tmp}/none.txt"], "not found"),
    "convert without a direction": (["convert", "--checkpoint", "{run}"], "--to-hf"),
    "resume without a run": (["train", "--out", "{tmp}/empty", "--resume"], "not found"),
    "download offline": (["download", "the-verdict", "--dest", "{tmp}"], "TINYGPT_OFFLINE"),
    "unknown download": (["download", "gpt5"], "invalid choice"),
    "cupy unavailable": (["train", "--backend", "cupy"], "cupy"),
    "cuda unavailable": (["train", "--backend", "torch", "--device", "cuda"], "CUDA"),
    "numpy on a gpu": (["train", "--device", "cuda"], "CPU only"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_user_errors_exit_2_with_one_line(case, numpy_run, data_file, tmp_path, capsys, monkeypatch):
    if case == "cupy unavailable" and _has_cupy_gpu() or case == "cuda unavailable" and _has_cuda_torch():
        pytest.skip("this machine has the device, so the error cannot happen")
    argv, expected = BAD[case]
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    if case == "wrong-shape checkpoint":
        import shutil

        shutil.copytree(read_checkpoint(numpy_run).path, tmp_path / "reshaped")
        state = json.loads((tmp_path / "reshaped" / "state.json").read_text())
        state["model_config"]["emb_dim"] = 64
        (tmp_path / "reshaped" / "state.json").write_text(json.dumps(state))
    monkeypatch.setenv("TINYGPT_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # the default --out (runs/tinygpt) is relative: a user's earlier run must not matter
    argv = [a.format(tmp=tmp_path, data=data_file, run=numpy_run) for a in argv]
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2, err
    assert err.startswith("tinygpt: error:") and err.count("\n") == 1, err
    assert expected in err and "Traceback" not in err


def test_tokenizer_subcommands_are_registered(data_file, tmp_path, capsys):
    tok = tmp_path / "cats.bpe"
    rc, out, err = run_cli(capsys, "tokenizer", "train", "--data", data_file, "--vocab-size", "270", "--out", tok)
    assert rc == 0 and tok.is_file(), err
    rc, out, err = run_cli(capsys, "tokenizer", "encode", "--tokenizer", tok, "--text", "the cat")
    assert rc == 0 and all(s.isdigit() for s in out.split()), err
    ids = out
    rc, out, _ = run_cli(capsys, "tokenizer", "decode", "--tokenizer", tok, "--ids", ids)
    assert rc == 0 and out == "the cat\n"
    rc, _, err = run_cli(capsys, "tokenizer", "decode", "--tokenizer", tok, "--ids", ids, "--backend", "numpy")
    assert rc == 2 and "unrecognized arguments: --backend" in err     # engine flags mean nothing to a tokenizer


def test_download_sms_spam_extracts_the_collection_from_the_zip(tmp_path, capsys, monkeypatch):
    """`download sms-spam` fetches the UCI zip (faked here: no network in tests) and writes its SMSSpamCollection,
    which `finetune classify` reads; a zip without it is a one-line error."""
    import zipfile

    import tokenizer.datafiles as datafiles
    from gpt.classify import SMS_SPAM_URL, read_sms_spam

    source = require_data("sms-spam/SMSSpamCollection")
    fetched = []

    def fake_download(url, dest, sha256=None, progress=True):
        fetched.append(url)
        with zipfile.ZipFile(dest, "w") as z:
            z.write(source, "SMSSpamCollection")
            z.writestr("readme", "the UCI readme")
        return Path(dest)

    monkeypatch.delenv("TINYGPT_OFFLINE", raising=False)
    monkeypatch.setattr(datafiles, "download_file", fake_download)
    rc, out, err = run_cli(capsys, "download", "sms-spam", "--dest", tmp_path)
    written = tmp_path / "sms-spam" / "SMSSpamCollection"
    assert rc == 0 and fetched == [SMS_SPAM_URL] and str(written) in out
    assert written.read_bytes() == source.read_bytes() and len(read_sms_spam(written)) == 5574

    def empty_zip(url, dest, sha256=None, progress=True):
        with zipfile.ZipFile(dest, "w") as z:
            z.writestr("readme", "nothing else")
        return Path(dest)

    monkeypatch.setattr(datafiles, "download_file", empty_zip)
    rc, out, err = run_cli(capsys, "download", "sms-spam", "--dest", tmp_path / "other")
    assert rc == 2 and "holds no SMSSpamCollection" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "other" / "sms-spam" / "SMSSpamCollection").exists()


def test_train_weight_init_torch_draws_the_books_init_and_keeps_it(data_file, tmp_path, capsys):
    """--weight-init torch: the checkpoint's config says so, its step-0 embedding is N(0, 1), and resume keeps it."""
    out = tmp_path / "torch-init"
    rc, _, err = run_cli(capsys, "train", "--data", data_file, "--out", out, "--max-steps", "2", "--eval-interval", "2",
                     "--weight-init", "torch", *TINY)
    assert rc == 0, err
    ck = read_checkpoint(out)
    assert ck.state["model_config"]["weight_init"] == "torch"
    from gpt.model import GPTModel

    fresh = GPTModel(ck.state["model_config"], backend="numpy", seed=0)
    assert abs(float(np.std(fresh.tok_emb.weight.numpy())) - 1.0) < 0.1
    rc, _, err = run_cli(capsys, "train", "--out", out, "--resume", "--weight-init", "gpt2")
    assert rc == 2 and "--weight-init" in err


def test_first_ctrl_c_checkpoints_and_resume_finishes_second_aborts(data_file, tmp_path, capsys, monkeypatch):
    """Ctrl-C during `train` (SIGINT sent to this process at step 3): the step finishes, a checkpoint of it is
    written, exit 130 with the resume command; `--resume` then runs to the end. Two Ctrl-C abort at once."""
    import signal

    from gpt.training.trainer import Trainer

    step = Trainer.train_step
    hits = {"n": 1}

    def interrupted_step(self):
        loss = step(self)
        if self.step == 3:
            for _ in range(hits["n"]):
                os.kill(os.getpid(), signal.SIGINT)
        return loss

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "run"
    rc, stdout, err = run_cli(capsys, "train", "--data", data_file, "--out", out, "--max-steps", "6", "--eval-interval",
                          "100", *TINY)
    assert rc == 130 and "stopped at step 3" in stdout and "--resume" in stdout, (stdout, err)
    assert read_checkpoint(out).step == 3
    assert signal.getsignal(signal.SIGINT) is before      # the handler is put back
    monkeypatch.setattr(Trainer, "train_step", step)
    rc, stdout, err = run_cli(capsys, "train", "--out", out, "--resume")
    assert rc == 0 and read_checkpoint(out).step == 6, err

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    hits["n"] = 2
    rc, stdout, err = run_cli(capsys, "train", "--data", data_file, "--out", tmp_path / "run2", "--max-steps", "6", *TINY)
    assert rc == 130 and "interrupted" in err
