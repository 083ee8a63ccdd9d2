"""notebooks/: one per book chapter (2-7), appendices D and E, and backprop through attention by hand. Each is
stored without outputs (checked here) and runs top to bottom with nbclient in a fresh kernel that has the project
on its path and finds the shared data as the tests do (one test per notebook, with a timeout)."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT, data_dir, require_data

NOTEBOOKS = ROOT / "notebooks"
# the shared data files each notebook reads (a missing one skips its test, or fails it under CI)
NEEDS = {
    "ch02_text_data": ["the-verdict.txt", "gpt2/encoder.json"],
    "ch03_attention": [],
    "ch04_gpt_model": ["gpt2/encoder.json"],
    "ch05_pretraining": ["the-verdict.txt", "gpt2/encoder.json"],
    "ch06_classification": ["sms-spam/SMSSpamCollection", "gpt2/encoder.json"],
    "ch07_instruction_finetuning": ["instruction-data.json", "gpt2/encoder.json"],
    "appendix_d_training_loop": ["the-verdict.txt", "gpt2/encoder.json"],
    "appendix_e_lora": ["sms-spam/SMSSpamCollection", "gpt2/encoder.json"],
    "backprop_attention_by_hand": [],
}
TIMEOUT_S = 180   # per cell; each notebook takes well under a minute on 2 idle cores


def test_every_notebook_is_listed():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NEEDS)


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_outputs_are_stripped(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, name
    for i, cell in enumerate(code):
        assert cell.outputs == [] and cell.execution_count is None, f"{name}: code cell {i} has outputs"


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_notebook_runs(name, monkeypatch):
    from nbclient import NotebookClient

    for rel in NEEDS[name]:
        require_data(rel)
    d = data_dir()
    if d is not None:
        monkeypatch.setenv("TINYGPT_DATA_DIR", str(d))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if os.environ.get("PYTEST_XDIST_WORKER"):   # one BLAS thread per kernel under xdist, as conftest does per worker
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            monkeypatch.setenv(var, "1")
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    if name not in ("ch02_text_data",):        # every other chapter plots where the book does
        assert images, f"{name} drew no figure"
