"""examples/attention_backprop_by_hand.py: it runs (in-process and as a script), its table names every intermediate
gradient, every relative error it prints clears the 1e-10 bar (with and without attention dropout), and the check
can fail: breaking one step of the by-hand backward makes the script report FAIL and exit 1."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytest.importorskip("torch")  # the example compares against PyTorch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "attention_backprop_by_hand.py"
# What the table must list: the forward check, then every gradient of the block (the brief's list, in order).
EXPECTED = ["out", "dout_proj.weight", "dout_proj.bias", "dctx", "dO", "dV", "dPd", "dP", "dSm", "dS", "dQ", "dK",
            "dQ [fused]", "dK [fused]", "dV [fused]", "dq", "dk", "dv", "dW_query.weight", "dW_query.bias",
            "dW_key.weight", "dW_key.bias", "dW_value.weight", "dW_value.bias", "dx"]
HEADER = ["tensor", "shape", "max abs err vs tinytensor", "max rel err vs tinytensor", "max abs err vs torch",
          "max rel err vs torch"]


@pytest.fixture(scope="module")
def example() -> ModuleType:
    """The example loaded as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("attention_backprop_by_hand", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def parse_table(text: str) -> dict[str, dict[str, float | str]]:
    """{tensor: {column: value}} from the markdown table the example prints (errors as floats)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == HEADER
    assert set(lines[1]) <= {"|", "-"}, "second line is the separator"
    rows = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows[cells[0]] = {h: (float(c) if "err" in h else c) for h, c in zip(header, cells)}
    return rows


def check_output(text: str) -> dict[str, dict[str, float | str]]:
    rows = parse_table(text)
    assert list(rows) == EXPECTED
    for name, row in rows.items():
        for col in ("max rel err vs tinytensor", "max rel err vs torch"):
            assert row[col] <= 1e-10, f"{name}: {col} = {row[col]:.2e}"
    assert rows["dQ"]["shape"] == "2x2x5x4" and rows["dx"]["shape"] == "2x5x8"  # default (b, nh, t, hd), (b, t, d)
    assert "OK" in text.splitlines()[-1]
    return rows


@pytest.mark.parametrize("argv", [[], ["--dropout", "0"], ["--dropout", "0.5", "--seed", "3"]])
def test_main_in_process_passes(example, capsys, argv):
    assert example.main(argv) == 0
    check_output(capsys.readouterr().out)


def test_script_passes_as_a_subprocess():
    proc = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    check_output(proc.stdout)


def _drop_rowsum_term(dP: np.ndarray, P: np.ndarray) -> np.ndarray:
    """A classic mistake: dS = P ⊙ dP, the Jacobian's diagonal only (the −p pᵀ term forgotten)."""
    return P * dP


def _forget_dropout_scale(dPd: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """Another: mask the gradient but forget the 1/(1 − p) rescaling of the kept entries."""
    return dPd * (drop > 0)


@pytest.mark.parametrize("step, broken, first_bad", [
    ("softmax_rows_backward", _drop_rowsum_term, "dSm"),
    ("dropout_backward", _forget_dropout_scale, "dP"),
])
def test_a_broken_step_fails_the_check(example, capsys, monkeypatch, step, broken, first_bad):
    monkeypatch.setattr(example, step, broken)
    assert example.main(["--dropout", "0.2"]) == 1
    out = capsys.readouterr().out
    rows = parse_table(out)
    assert rows[first_bad]["max rel err vs tinytensor"] > 1e-3
    assert rows[first_bad]["max rel err vs torch"] > 1e-3
    assert rows["dO"]["max rel err vs torch"] <= 1e-10  # steps before the broken one still agree
    assert rows["dx"]["max rel err vs torch"] > 1e-10  # and the error propagates to the input
    assert "FAIL" in out.splitlines()[-1]


def test_bad_arguments_exit_2(example):
    with pytest.raises(SystemExit) as e:
        example.main(["--d-model", "9", "--heads", "2"])
    assert e.value.code == 2


def test_book_ch5_example_without_the_verdict_says_so_in_one_line(tmp_path):
    """No the-verdict.txt anywhere (empty data dir, empty home, downloads forbidden): exit 2, one line, no traceback."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TINYGPT_DATA_DIR": str(tmp_path), "TINYGPT_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "book_ch5_the_verdict.py"), "--epochs", "1"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "the-verdict.txt" in lines[0] and "tinygpt download the-verdict" in lines[0]
    assert "Traceback" not in proc.stderr


def test_the_examples_help_shows_defaults_data_needs_and_the_derivation(example, capsys):
    """--help of both examples: whole sentences, every option's default, the data the ch. 5 run needs; the attention
    example's output names the derivation it checks (docs/backprop-attention.md, which exists)."""
    spec = importlib.util.spec_from_file_location("book_ch5_the_verdict", ROOT / "examples" / "book_ch5_the_verdict.py")
    ch5 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ch5)
    with pytest.raises(SystemExit):
        ch5.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "using the book's own function names from `gpt`." in text      # the description is not cut mid-sentence
    for shown in ("(default: numpy)", "(default: float32)", "(default: 10)", "tinygpt download the-verdict",
                  "tinygpt download gpt2-tokenizer"):
        assert shown in text, shown
    with pytest.raises(SystemExit):
        example.main(["--help"])
    text = capsys.readouterr().out
    assert "docs/backprop-attention.md" in "".join(text.split()) and "(default: 0.1)" in " ".join(text.split())
    assert example.main([]) == 0
    assert f"the derivation checked here: {example.DERIVATION}" in capsys.readouterr().out
    assert (ROOT / example.DERIVATION).is_file()
