"""benchmarks/memory_by_op.py: the bytes it reports for ops whose saved arrays are known exactly, and that its clock
leaves every Function as it found it. No timing is asserted."""
from __future__ import annotations

from benchmarks import memory_by_op
from benchmarks.common import TRAIN_CONFIGS


def test_kept_bytes_and_clock_restored(kernels):
    from tinytensor import functional as F

    before = {(cls, m): vars(cls)[m] for cls in memory_by_op._all_functions() for m in ("forward", "backward")
              if m in vars(cls)}
    r = memory_by_op.measure("tiny", repeats=1)
    after = {(cls, m): vars(cls)[m] for cls in memory_by_op._all_functions() for m in ("forward", "backward")
             if m in vars(cls)}
    assert after == before
    (b, t), m = TRAIN_CONFIGS["tiny"]["batch"], TRAIN_CONFIGS["tiny"]["model"]
    # cross_entropy keeps the float32 probabilities (b·t, vocab), the int64 targets and the float32 row weights
    assert r["kept_bytes"]["CrossEntropy"] == b * t * (m["vocab_size"] * 4 + 8 + 4)
    # each GELU keeps its input (the C pair recomputes tanh u in backward) or its input and tanh u (the NumPy
    # pair), each (b, t, 4d) float32
    arrays = 1 if kernels == "native" else 2
    assert r["kept_bytes"]["GELU"] == m["n_layers"] * arrays * b * t * 4 * m["emb_dim"] * 4
    assert r["calls"]["Linear"] == 6 * m["n_layers"] + 1 and r["calls"]["Attention"] == m["n_layers"]
    assert set(r["median_s"]) >= {"Linear", "Attention", "AdamW", "other"}
    assert F.Linear.forward is before[(F.Linear, "forward")]
    table = memory_by_op.table(r)
    assert table.splitlines()[0].startswith("| op |") and "| **total** |" in table
