"""`tinygpt inspect` (gpt/inspect/, gpt/cli/inspect.py) on a checkpoint trained here for a
few steps: attention rows are distributions and causal, every parameter has a gradient entry whose norm is the
engine's, gradients match the torch backend in float64 (float32 model: rel. error <= 1e-4), the SVG parses with a
node per op, index.html links every file, and bad input exits 2 with one line."""
from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from gpt.cli import main

TEXT = "the cat sat on the mat. the dog sat on the log. " * 40
TINY = ["--tokenizer", "bytes", "--context-length", "16", "--emb-dim", "16", "--n-heads", "2", "--n-layers", "2",
        "--batch-size", "4", "--lr", "5e-3", "--warmup-steps", "1", "--eval-iters", "1", "--eval-interval", "6",
        "--drop-rate", "0.0", "--no-plot", "--sample-prompt", "the "]
PROMPT = "the cat sat on"
HAS_DOT = shutil.which("dot") is not None


def require_dot() -> None:
    """Skip without graphviz's `dot` program; under CI (CI=true) fail instead, so a green CI never hides the check."""
    if not HAS_DOT:
        msg = "graphviz's dot program is not installed (apt-get install graphviz)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A 6-step numpy run of a 2-layer byte-level model (a checkpoint with trained, not initial, weights)."""
    root = tmp_path_factory.mktemp("inspect")
    data = root / "cats.txt"
    data.write_text(TEXT, encoding="utf-8")
    assert main(["train", "--data", str(data), "--out", str(root / "run"), "--max-steps", "6", *TINY]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def report_dir(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert main(["inspect", "--checkpoint", str(run_dir), "--prompt", PROMPT, "--out", str(out)]) == 0
    return out


def test_attention_rows_sum_to_one_and_are_causal(report_dir):
    report = json.loads((report_dir / "report.json").read_text())
    t = len(PROMPT) - 1                                   # byte tokens; the last one is only a target
    assert report["tokens"] == list(PROMPT[:-1]) and report["targets"] == list(PROMPT[1:])
    assert len(report["attention"]) == 2
    for layer in report["attention"]:
        a = np.array(layer)
        assert a.shape == (2, t, t)
        np.testing.assert_allclose(a.sum(-1), 1.0, rtol=0, atol=1e-6)
        assert np.all(a[:, np.triu_indices(t, 1)[0], np.triu_indices(t, 1)[1]] == 0.0)   # no query sees a later key
        assert np.all(np.diagonal(a, axis1=1, axis2=2) > 0)


def test_every_parameter_has_a_gradient_entry_matching_torch(report_dir, run_dir):
    from gpt.training.checkpoint import load_model

    import backends

    report = json.loads((report_dir / "report.json").read_text())
    model, _, _ = load_model(run_dir, backends.get_backend("numpy"))
    names = [n for n, _ in model.named_parameters()]
    assert list(report["gradients"]) == names
    for name, g in report["gradients"].items():
        assert g["norm"] > 0, name                       # every weight of this model takes part in the loss
        assert g["rel_err_vs_torch"] is not None and g["rel_err_vs_torch"] <= 1e-4, (name, g)
    assert report["reference"] == "torch float64"


def test_gradient_norms_are_the_engines(run_dir):
    """The norms in the report are those of a plain backward through the same loss (no hook changes them)."""
    import backends
    from gpt.training.checkpoint import load_model
    from gpt.inspect import inspect_model, next_token_loss

    B = backends.get_backend("numpy", dtype="float64")
    model, tok, _ = load_model(run_dir, B)
    ids = np.array(tok.encode(PROMPT))
    report = inspect_model(model, ids, tok, reference=False)
    model.zero_grad()
    next_token_loss(model, ids).backward()
    for name, p in model.named_parameters():
        np.testing.assert_allclose(report.gradients[name]["norm"], np.linalg.norm(p.grad.numpy()), rtol=1e-12)
        assert report.gradients[name]["rel_err_vs_torch"] is None
    assert len(report.activations) == 2
    for a in report.activations:
        assert a["std"] > 0 and 0.0 <= a["gelu_below_-3"] <= 1.0


def test_graph_svg_has_a_node_per_op(report_dir):
    require_dot()
    root = ET.parse(report_dir / "graph.svg").getroot()
    ns = {"svg": "http://www.w3.org/2000/svg"}
    titles = [g.find("svg:title", ns).text for g in root.iter("{http://www.w3.org/2000/svg}g")
              if g.get("class") == "node"]
    report = json.loads((report_dir / "report.json").read_text())
    ops = [t for t in titles if t.startswith("op")]
    assert len(ops) == report["graph"]["ops"] == 20     # one block: 5 Linear, 4 Reshape, 4 Transpose, 2 LayerNorm,
    assert len(titles) - len(ops) == 14                 # Attention, GELU, 2 Add; leaves: 13 parameters + the input
    text = "".join(root.itertext())
    assert "Attention" in text and "GELU" in text and "saved" in text


def test_pngs_and_index_html(report_dir):
    for name in ("attention_layer0.png", "attention_layer1.png", "gradient_norms.png"):
        assert (report_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (report_dir / "index.html").read_text()
    for name in ("attention_layer0.png", "attention_layer1.png", "gradient_norms.png"):
        assert f'src="{name}"' in page
    assert ('src="graph.svg"' in page) == HAS_DOT
    assert "http" not in page and "<script" not in page             # static and offline
    assert "trf_blocks.1.att.W_query.weight" in page


def test_without_dot_a_clear_note(monkeypatch, run_dir, tmp_path, capsys):
    import graphviz

    def no_dot(*args, **kwargs):
        raise graphviz.ExecutableNotFound(["dot"])

    monkeypatch.setattr(graphviz.Digraph, "pipe", no_dot)
    assert main(["inspect", "--checkpoint", str(run_dir), "--prompt", PROMPT, "--out", str(tmp_path),
                 "--no-reference"]) == 0
    err = capsys.readouterr().err
    assert "graph.svg skipped: graphviz's `dot` program is not installed" in err
    assert not (tmp_path / "graph.svg").exists() and (tmp_path / "index.html").exists()
    assert (tmp_path / "report.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint", "{tmp}/nowhere", "--prompt", "the cat"], "checkpoint '{tmp}/nowhere' not found"),
    (["--prompt", ""], "the prompt is empty"),
    (["--prompt", "t"], "is 1 token; the next-token loss needs at least 2"),
    (["--prompt", "x" * 18], "the prompt is 18 tokens, longer than the model's context of 16"),
])
def test_bad_input_exits_2_with_one_line(argv, message, run_dir, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--checkpoint" not in argv:
        argv = ["--checkpoint", str(run_dir)] + argv
    assert main(["inspect", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinygpt: error: ") and err.count("\n") == 1
    assert message.replace("{tmp}", str(tmp_path)) in err
