"""benchmarks/attention_paths.py: both causal attention paths are really taken, agree to float32 rounding, and the
native module's limits are put back; bad arguments get a usage error. No timing is asserted."""
from __future__ import annotations

import pytest

from benchmarks import attention_paths
from tinytensor.kernels import native


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_both_paths_run_agree_and_leave_the_limits(dropout):
    if not native.available():
        pytest.skip(f"native kernels unavailable: {native.UNAVAILABLE}")
    before = native.ATTENTION_MIN_T, native.ATTENTION_MAX_T
    res = attention_paths.time_paths((2, 40, 3, 16), rounds=1, calls=1, dropout=dropout)
    assert (native.ATTENTION_MIN_T, native.ATTENTION_MAX_T) == before
    assert res["max_rel_diff"] <= 1e-5  # float32: two summation orders of the same products
    assert all(res[p]["min_ms"] > 0 for p in ("products", "whole"))
    table = attention_paths.markdown([((2, 40, 3, 16), res)])
    assert table.splitlines()[2].startswith("| 2, 40, 3, 16 |")


def test_heads_are_strided_views_as_the_model_makes_them():
    import numpy as np

    q, k, v = attention_paths.model_heads(2, 5, 3, 4, np.random.default_rng(0))
    assert q.shape == (2, 3, 5, 4) and q.base is v.base is not None  # one projection block
    assert q.strides == (5 * 3 * 3 * 4 * 4, 4 * 4, 3 * 3 * 4 * 4, 4)  # (b, h, t, e) over a (b, t, 3, h, e) block


@pytest.mark.parametrize("argv", [["--shapes", "2,3,4"], ["--shapes", "a,b,c,d"], ["--rounds", "0"],
                                  ["--dropout", "1.0"]])
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        attention_paths.main(argv)
    assert e.value.code == 2
    assert "usage:" in capsys.readouterr().err
