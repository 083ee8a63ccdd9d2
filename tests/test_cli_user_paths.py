"""What a new user hits with the `tinygpt` command (issue 13's list): re-running the README's first command keeps the
old run, --resume with the original flags, help with defaults and --version, prompts that are empty or too long,
the tokenizer commands' errors, stdin and run directories, and a readable tokens axis on loss.png."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from conftest import run_cli

from gpt.cli import main
from gpt.training.checkpoint import read_checkpoint

TEXT = "the cat sat on the mat. the dog sat on the log. " * 60
TINY = ["--tokenizer", "bytes", "--context-length", "16", "--emb-dim", "32", "--n-heads", "2", "--n-layers", "2",
        "--batch-size", "8", "--eval-iters", "2", "--drop-rate", "0.0", "--no-plot", "--sample-prompt", "the "]


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "cats.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_rerunning_train_keeps_the_old_run_and_generate_reads_the_new(data_file, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli(capsys, "train", "--data", data_file, "--max-steps", "2", "--eval-interval", "2", *TINY)[0] == 0
    first = read_checkpoint("runs/tinygpt").state["train_config"]["seed"]
    rc, out, _ = run_cli(capsys, "train", "--data", data_file, "--max-steps", "3", "--eval-interval", "3", "--seed", "7",
                     *TINY)
    assert rc == 0 and "kept it as runs/tinygpt-2" in out
    assert read_checkpoint("runs/tinygpt-2").step == 2 and read_checkpoint("runs/tinygpt-2").state["train_config"][
        "seed"] == first
    assert read_checkpoint("runs/tinygpt").step == 3                       # the new run is where generate looks
    rc, out, err = run_cli(capsys, "generate", "--prompt", "the ", "--max-new-tokens", "3")
    assert rc == 0 and out.startswith("the "), err
    rc, out, _ = run_cli(capsys, "train", "--data", data_file, "--max-steps", "1", "--eval-interval", "1", "--replace",
                     *TINY)
    assert rc == 0 and "kept" not in out and read_checkpoint("runs/tinygpt").step == 1
    assert not Path("runs/tinygpt-3").exists() and read_checkpoint("runs/tinygpt-2").step == 2


def test_a_directory_that_is_no_run_is_never_moved(data_file, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    rc, _, err = run_cli(capsys, "train", "--data", data_file, "--out", tmp_path / "mine", "--max-steps", "1", *TINY)
    assert rc == 2 and "holds no tinygpt run" in err and (tmp_path / "mine" / "notes.txt").exists()


def test_resume_accepts_the_same_flags_and_names_conflicting_ones(data_file, tmp_path, capsys):
    out = tmp_path / "run"
    start = ["train", "--data", data_file, "--out", out, "--eval-interval", "2", *TINY]
    assert run_cli(capsys, *start, "--max-steps", "2")[0] == 0
    rc, text, err = run_cli(capsys, *start, "--max-steps", "4", "--resume")     # the same command, --resume appended
    assert rc == 0 and "resumed" in text and read_checkpoint(out).step == 4, err
    rc, _, err = run_cli(capsys, "train", "--out", out, "--resume", "--max-steps", "6", "--emb-dim", "64",
                     "--n-layers", "2", "--tokenizer", "gpt2")
    assert rc == 2 and err.count("\n") == 1
    assert "--emb-dim 64 (the run has 32)" in err and "--tokenizer gpt2 (the run has bytes)" in err
    assert "--n-layers" not in err                                           # equal to the run's: accepted
    rc, _, err = run_cli(capsys, "train", "--out", out, "--resume")
    assert rc == 2 and "is finished (step 4 of 4)" in err and "--max-steps" in err


def test_train_help_shows_the_defaults_and_version_is_printed(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("--max-steps N optimizer steps (default 350)", "--lr LR peak learning rate (default 0.002; bert 0.001)",
                  "--context-length N tokens per window (default 128)", "--backend {numpy,cupy,torch} engine: numpy",
                  "(default: numpy)", "(default: runs/tinygpt)"):
        assert shown in text, shown
    with pytest.raises(SystemExit) as e:
        from gpt.cli import build_parser

        build_parser().parse_args(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("tinygpt ")


@pytest.fixture
def tiny_run(data_file, tmp_path, capsys) -> Path:
    out = tmp_path / "run"
    assert run_cli(capsys, "train", "--data", data_file, "--out", out, "--max-steps", "1", "--eval-interval", "1",
               *TINY)[0] == 0
    return out


def test_prompts_that_are_empty_or_longer_than_the_context(tiny_run, capsys):
    rc, _, err = run_cli(capsys, "generate", "--checkpoint", tiny_run, "--prompt", "")
    assert rc == 2 and err.count("\n") == 1 and "--prompt is empty" in err and "idx must be" not in err
    rc, out, err = run_cli(capsys, "generate", "--checkpoint", tiny_run, "--prompt", "x" * 40, "--max-new-tokens", "2",
                       "--temperature", "0")
    assert rc == 0 and "the prompt is 40 tokens" in err and "cut to its last 15 tokens" in err
    assert out.startswith("x" * 40)


def test_a_missing_sms_file_names_the_download_command(capsys, tmp_path, tiny_run):
    rc, _, err = run_cli(capsys, "finetune", "classify", "--init", tiny_run, "--data", tmp_path / "none",
                     "--out", tmp_path / "clf")
    assert rc == 2 and "tinygpt download sms-spam" in err


def test_tokenizer_commands(tiny_run, tmp_path, capsys, monkeypatch):
    rc, _, err = run_cli(capsys, "tokenizer", "encode", "--tokenizer", tmp_path / "nope.bpe", "--text", "a")
    assert rc == 2 and err.startswith("tinygpt: error:") and err.count("\n") == 1
    rc, _, err = run_cli(capsys, "tokenizer", "encode", "--tokenizer", tiny_run, "--file", tmp_path / "none.txt")
    assert rc == 2 and err.startswith("tinygpt: error:") and "none.txt" in err and "Errno" not in err
    monkeypatch.setattr("sys.stdin", io.StringIO("the cat"))
    rc, out, err = run_cli(capsys, "tokenizer", "encode", "--tokenizer", tiny_run, "--file", "-")   # a run, stdin
    assert rc == 0 and out.split() == [str(b) for b in b"the cat"], err
    monkeypatch.setattr("sys.stdin", io.StringIO(out))
    rc, out, _ = run_cli(capsys, "tokenizer", "decode", "--tokenizer", tiny_run, "--file", "-")
    assert rc == 0 and out == "the cat\n"
    rc, _, err = run_cli(capsys, "tokenizer", "encode", "--tokenizer", tiny_run, "--text", "a", "--seed", "1")
    assert rc == 2 and "unrecognized arguments: --seed" in err
    rc, _, err = run_cli(capsys, "tokenizer", "encode", "--tokenizer", tmp_path, "--text", "a")
    assert rc == 2 and "without a tinygpt checkpoint" in err


def test_loss_plot_tokens_axis_is_readable(tmp_path, monkeypatch):
    """The top axis of loss.png: a few short labels ("300k"), no two of them overlapping."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from gpt.pretrain import plot_losses

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    steps = list(range(0, 351, 50))
    plot_losses([s / 70 for s in steps], [s * 2048 for s in steps], [7 - s / 100 for s in steps],
                [7 - s / 120 for s in steps], path=tmp_path / "loss.png")
    fig = figures[0]
    fig.canvas.draw()
    top = [ax for ax in fig.axes if ax.get_xlabel() == "Tokens seen"][0]
    labels = [t for t in top.get_xticklabels() if t.get_text() and t.get_visible()]
    assert 2 <= len(labels) <= 7 and all(len(t.get_text()) <= 5 for t in labels), [t.get_text() for t in labels]
    boxes = sorted((t.get_window_extent() for t in labels), key=lambda b: b.x0)
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:]))


def test_matmul_threads_flag_sets_the_engine_way_and_gives_the_same_losses(data_file, tmp_path, capsys):
    """--matmul-threads blas trains the same model as the pool way, to float32 rounding, and auto as pool, exactly."""
    from tinytensor.kernels import matmul as kmatmul

    losses, before = {}, kmatmul.get_matmul_threading()
    try:
        for way in ("pool", "blas", "auto"):
            out = tmp_path / way
            rc, _, err = run_cli(capsys, "train", "--data", data_file, "--out", out, "--max-steps", "3",
                                 "--eval-interval", "3", "--matmul-threads", way, *TINY)
            assert rc == 0, err
            assert kmatmul.get_matmul_threading() == way
            losses[way] = [json.loads(r)["train_loss"] for r in (out / "metrics.jsonl").read_text().splitlines()
                           if "val_loss" not in json.loads(r)]
    finally:
        kmatmul.set_matmul_threading(before)
    assert len(losses["pool"]) == 3 and losses["pool"] == pytest.approx(losses["blas"], rel=1e-5)
    assert losses["auto"] == losses["pool"]
    rc, _, err = run_cli(capsys, "train", "--matmul-threads", "mkl")
    assert rc == 2 and "invalid choice: 'mkl'" in err and err.count("\n") == 1


def test_kernels_flag_switches_the_c_kernels_and_trains_the_same_model(data_file, tmp_path, capsys, monkeypatch):
    """--kernels numpy runs the NumPy reference kernels, --kernels native the C ones: the same training to float32
    rounding; asking for native where they were not built is a one-line error naming the cause."""
    from tinytensor.kernels import native

    losses, before = {}, native.native_kernels()
    try:
        for way in ("numpy", "native") if native.available() else ("numpy",):
            out = tmp_path / way
            rc, _, err = run_cli(capsys, "train", "--data", data_file, "--out", out, "--max-steps", "3",
                                 "--eval-interval", "3", "--kernels", way, *TINY)
            assert rc == 0, err
            assert native.native_kernels() is (way == "native")
            losses[way] = [json.loads(r)["train_loss"] for r in (out / "metrics.jsonl").read_text().splitlines()
                           if "val_loss" not in json.loads(r)]
    finally:
        native.set_native_kernels(before)
    if native.available():
        assert len(losses["numpy"]) == 3 and losses["native"] == pytest.approx(losses["numpy"], rel=1e-5)
    monkeypatch.setattr(native, "_FNS", {})
    monkeypatch.setattr(native, "UNAVAILABLE", "the native library was not built (test)")
    rc, _, err = run_cli(capsys, "train", "--data", data_file, "--out", tmp_path / "x", "--max-steps", "1",
                         "--kernels", "native", *TINY)
    assert rc != 0 and "not built" in err
