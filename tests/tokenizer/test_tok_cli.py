"""The tokenizer command line: train/encode/decode through main() and `python -m tokenizer`; user errors exit 2."""
import argparse
import os
import subprocess
import sys

import pydoc_data.topics
import pytest
from conftest import ROOT, data_dir, require_data

from tokenizer import BPETokenizer
from tokenizer.cli import add_tokenizer_commands, main, parse_ids

TEXT = "\n".join(pydoc_data.topics.topics.values())[:5000] + "\n"


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture
def gpt2_data(monkeypatch):
    require_data("gpt2/encoder.json")
    monkeypatch.setenv("TINYGPT_DATA_DIR", str(data_dir()))


def test_train_encode_decode(corpus, tmp_path, capsys):
    out = tmp_path / "tok.bpe"
    assert main(["train", "--data", str(corpus), "--vocab-size", "300", "--out", str(out),
                 "--special", "<|endoftext|>"]) == 0
    assert "trained 43 merges (n_vocab 300)" in capsys.readouterr().out
    tok = BPETokenizer.load(out)
    assert tok.n_vocab == 300 and (tmp_path / "tok.bpe.vocab").is_file()
    assert main(["encode", "--tokenizer", str(out), "--text", "the cat<|endoftext|>"]) == 0
    ids = [int(i) for i in capsys.readouterr().out.split()]
    assert ids == tok.encode("the cat<|endoftext|>", allowed_special="all") and ids[-1] == 299
    assert main(["decode", "--tokenizer", str(out), "--ids", ",".join(map(str, ids))]) == 0
    assert capsys.readouterr().out == "the cat<|endoftext|>\n"
    assert main(["encode", "--tokenizer", str(out), "--file", str(corpus), "--show-pieces"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(tok.encode(TEXT)) and lines[-1] == "10\t[\\n]"


def test_train_runs_out_of_pairs(tmp_path, capsys):
    (tmp_path / "small.txt").write_text("ab ab", encoding="utf-8")
    args = ["train", "--data", str(tmp_path / "small.txt"), "--vocab-size", "300", "--out", str(tmp_path / "o")]
    assert main(args) == 0
    assert "trained 2 merges (n_vocab 258; the text ran out of pairs before vocab size 300)" in capsys.readouterr().out


def test_gpt2_encode(gpt2_data, capsys):
    assert main(["encode", "--text", "Hello, world"]) == 0
    assert capsys.readouterr().out == "15496 11 995\n"
    assert main(["decode", "--ids", "[15496, 11, 995]"]) == 0
    assert capsys.readouterr().out == "Hello, world\n"


def test_parse_ids():
    assert parse_ids(" 1, 2 3\n") == [1, 2, 3] and parse_ids("[4,5]") == [4, 5]
    with pytest.raises(ValueError, match="cannot read token ids from 'x y'"):
        parse_ids("x y")


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d: ["train", "--data", str(d / "none.txt"), "--vocab-size", "300", "--out", str(d / "o")],
         "No such file"),
        (lambda d: ["train", "--data", str(d / "corpus.txt"), "--vocab-size", "10", "--out", str(d / "o")],
         "vocab_size=10 is too small"),
        (lambda d: ["train", "--data", str(d / "bad.txt"), "--vocab-size", "300", "--out", str(d / "o")],
         "bad.txt is not valid UTF-8"),
        (lambda d: ["train", "--data", str(d / "empty.txt"), "--vocab-size", "300", "--out", str(d / "o")],
         "empty text"),
        (lambda d: ["encode", "--tokenizer", str(d / "missing.bpe"), "--text", "x"], "neither 'gpt2' nor"),
        (lambda d: ["encode", "--tokenizer", str(d / "corpus.txt"), "--text", "x"], "not a tinygpt-bpe file"),
        (lambda d: ["decode", "--tokenizer", "gpt2", "--ids", "1 two"], "cannot read token ids"),
        (lambda d: ["decode", "--tokenizer", "gpt2", "--ids", "99999"], "token id 99999 is not in"),
        (lambda d: ["train", "--data", "x"], "required: --vocab-size, --out"),
        (lambda d: ["encode", "--text", "x", "--file", "y"], "not allowed with argument"),
        (lambda d: ["frobnicate"], "invalid choice"),
    ],
)
def test_user_errors(corpus, gpt2_data, capsys, make_args, message):
    d = corpus.parent
    (d / "bad.txt").write_bytes(b"ok \xc3\x28")
    (d / "empty.txt").write_text("")
    assert main(make_args(d)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_offline_missing_gpt2(tmp_path, monkeypatch, capsys):
    from tokenizer import get_encoding

    monkeypatch.setenv("TINYGPT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TINYGPT_OFFLINE", "1")
    get_encoding.cache_clear()
    try:
        assert main(["encode", "--text", "hi"]) == 2
    finally:
        get_encoding.cache_clear()
    err = capsys.readouterr().err
    assert "tinygpt download gpt2-tokenizer" in err and err.count("\n") == 1


def test_subcommands_under_another_cli(corpus, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="tinygpt")
    add_tokenizer_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["tokenizer", "train", "--data", str(corpus), "--vocab-size", "260",
                              "--out", str(tmp_path / "t"), "--pattern", "none"])
    assert args.func(args) == 0
    assert BPETokenizer.load(tmp_path / "t").pattern is None


def test_python_dash_m(corpus, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "t.bpe"
    run = lambda *a: subprocess.run([sys.executable, "-m", "tokenizer", *a], cwd=ROOT, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    done = run("train", "--data", str(corpus), "--vocab-size", "280", "--out", str(out), "--pattern", "gpt4")
    assert done.returncode == 0, done.stderr
    done = run("encode", "--tokenizer", str(out), "--text", "the rat")
    assert [int(i) for i in done.stdout.split()] == BPETokenizer.load(out).encode("the rat")
    done = run("train", "--data", str(corpus), "--vocab-size", "12", "--out", str(out))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "vocab_size=12" in done.stderr
