"""The benchmark suite's matmul-efficiency table (issue 20): model FLOPs per step by the 6·N·tokens + attention rule,
checked by hand for GPT-2 124M, and the table's arithmetic on a given result."""
from __future__ import annotations

import pytest

bench = pytest.importorskip("benchmarks.__main__")


def test_124m_step_flops_by_hand():
    d, L, V, T, tokens = 768, 12, 50257, 256, 2 * 256
    per_layer = 3 * d * d + (d * d + d) + (2 * d * 4 * d + 4 * d + d) + 2 * 2 * d  # qkv, out_proj, MLP, 2 norms
    n = L * per_layer + 2 * d + V * d  # + final norm, + head; no embedding tables
    assert n == 123_625_728
    want = (6 * n + 12 * L * d * T) * tokens / 1e9  # 394.3 GFLOP
    assert bench.step_gflop("124M") == pytest.approx(want, rel=1e-12)


def test_efficiency_table_divides_flops_by_time_and_peak():
    g = bench.step_gflop("tiny")
    res = {"tiny": {"numpy": {"median_s": g / 50.0}, "torch": {"median_s": g / 40.0}, "torch-fused": {}},
           "small": {"numpy": {"error": "exit 1"}, "torch": {"median_s": 1.0}}}
    text = bench.efficiency_markdown(res, {"numpy": 100.0, "torch": 80.0})
    assert "peak in this run (2048³): 100 GFLOP/s; torch's: 80 GFLOP/s" in text
    row = next(line for line in text.splitlines() if line.startswith("| tiny"))
    assert row == f"| tiny | {g:.1f} | 50 | 0.50 | 40 | 0.50 |"
    assert "| small" not in text  # a variant that failed has no row


def test_efficiency_table_says_when_the_peak_worker_failed():
    assert bench.efficiency_markdown({}, {"error": "exit 1: boom"}) == "matmul peak not measured: exit 1: boom"
