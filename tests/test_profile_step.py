"""benchmarks/profile_step.py's product table: every engine product of a step is counted under its shapes and
layouts, and the clock leaves the matmul it wraps as it found it. No timing is asserted."""
from __future__ import annotations

import pytest

from benchmarks import profile_step
from benchmarks.common import TRAIN_CONFIGS


@pytest.mark.parametrize("whole", [True, False], ids=["whole-attention", "attention-products"])
def test_product_table_counts_every_product_of_a_step(whole, monkeypatch):
    """With the whole-attention C kernel (the default) attention runs no engine product; with it off
    (ATTENTION_MAX_T = 0) its six batched products per layer appear, the scores' on strided heads."""
    import backends
    import tinytensor.kernels.attention as attention
    from benchmarks.train_step import make_step
    from tinytensor.kernels import matmul as mm
    from tinytensor.kernels import native

    if not whole:
        monkeypatch.setattr(native, "ATTENTION_MAX_T", 0)
    elif not native.available():
        pytest.skip(f"native kernels unavailable: {native.UNAVAILABLE}")
    before = (mm.matmul, attention.matmul)
    step, _ = make_step(backends.get_backend("numpy", dtype="float32"), "tiny")
    rows = profile_step.product_table(step, 2)
    assert (mm.matmul, attention.matmul) == before
    m = TRAIN_CONFIGS["tiny"]["model"]
    b, t = TRAIN_CONFIGS["tiny"]["batch"]
    d, h = m["emb_dim"], m["n_heads"]
    # per layer: 6 linears (q, k, v, out, MLP up and down), each a forward product and two backward ones (dX, dW),
    # and (off the whole kernel) attention's 2 forward and 4 backward products; then the head's 3
    assert sum(r["per_step"] for r in rows) == m["n_layers"] * (6 * 3 + (0 if whole else 6)) + 3
    by_key = {(r["a"], r["b"], r["layouts"]): r for r in rows}
    # the head's forward: the (b·t, d) activations times the transposed (vocab, d) weight, once a step
    assert by_key[((b * t, d), (d, m["vocab_size"]), "CT")]["per_step"] == 1
    heads = [r for r in rows if len(r["a"]) == 4]
    if whole:
        assert heads == []
    else:  # attention's scores Q Kᵀ over the heads, views of the projections: strided operands
        scores = by_key[((b, h, t, d // h), (b, h, d // h, t), "SS")]
        assert scores["per_step"] == 2 * m["n_layers"]   # Q Kᵀ forward and dO Vᵀ backward
        assert sum(r["per_step"] for r in heads) == 6 * m["n_layers"]
    assert all(r["us"] > 0 and r["gflops"] > 0 for r in rows)
    assert rows == sorted(rows, key=lambda r: -r["ms_per_step"])
