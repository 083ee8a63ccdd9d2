"""benchmarks --recipe shakespeare --quick: it runs the recipe through the Trainer on numpy and torch and prints the
table; the two backends, same model code, same initial weights and batches, end at the same validation loss.
No timing is asserted."""
from __future__ import annotations

import re

import pytest

from benchmarks.__main__ import main


def test_recipe_quick_prints_the_table(capsys, tmp_path, monkeypatch):
    import benchmarks.__main__ as suite
    import benchmarks.common as common

    monkeypatch.setattr(suite, "RESULTS_DIR", tmp_path)   # results files go to tmp, not into the checkout
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    text = tmp_path / "t.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 600, encoding="utf-8")
    assert main(["--quick", "--no-clean-env", "--sections", "recipe", "--text", str(text), "--out", "test-recipe"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "test-recipe.md").is_file() and (tmp_path / "test-recipe.json").is_file()
    assert "| backend | steps | wall s |" in out
    rows = {m[0]: m for m in re.findall(r"^\| (numpy|torch) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", out, re.M)}
    assert set(rows) == {"numpy", "torch"}
    assert rows["numpy"][1] == rows["torch"][1] == "12"
    assert abs(float(rows["numpy"][4]) - float(rows["torch"][4])) < 2e-3  # float32, 12 steps: rounding only
    assert re.search(r"^\| numpy \|.*\| [\d.]+x \|$", out, re.M)  # the ratio column


def test_recipe_text_must_exist(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["--quick", "--no-clean-env", "--sections", "recipe", "--text", str(tmp_path / "missing.txt")])
    assert e.value.code == 2
    assert "is not a file" in capsys.readouterr().err
