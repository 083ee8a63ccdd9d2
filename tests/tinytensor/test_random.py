"""tinytensor.random's keep-masks: 16-bit draws where p allows, float32 draws otherwise; proportions within binomial
bounds, reproducible from a seed and from a saved state."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tinytensor import random as trandom


@pytest.mark.parametrize("p", [0.1, 0.5, 0.05, 0.2, 0.9, 1e-4, 0.37])
def test_keep_mask_proportion_within_binomial_bounds(p):
    trandom.manual_seed(7)
    n = 1_000_000
    keep = trandom.keep_mask((1000, 1000), p)
    assert keep.shape == (1000, 1000) and keep.dtype == bool
    t = trandom.drop_threshold(p)
    q = t / 2**16 if t is not None else p  # the drop probability the draws implement
    if t is not None:
        assert abs(q - p) <= trandom.MASK_REL_ERR * p
    dropped = n - int(keep.sum())
    assert abs(dropped - n * q) <= 5 * math.sqrt(n * q * (1 - q))  # 5 sigma


def test_drop_threshold_refuses_p_it_cannot_represent():
    assert trandom.drop_threshold(0.1) == 6554  # P(drop) = 0.1000061
    assert trandom.drop_threshold(0.5) == 2**15
    for p in (0.0, 1.0, 1e-4, 0.999999):  # 0 and 1 are exact in float32 draws; the others move > 0.1% in 16 bits
        assert trandom.drop_threshold(p) is None
    assert not trandom.keep_mask((5, 7), 1.0).any() and trandom.keep_mask((5, 7), 0.0).all()


def test_keep_mask_odd_sizes_and_state_round_trip():
    trandom.manual_seed(11)
    a = trandom.keep_mask((3, 5, 7), 0.1)  # 105 elements: not a multiple of the four draws per 64 bits
    state = trandom.get_state()
    b = trandom.keep_mask((1, 13), 0.1)
    trandom.set_state(state)
    assert a.shape == (3, 5, 7) and np.array_equal(trandom.keep_mask((1, 13), 0.1), b)
    trandom.manual_seed(11)
    assert np.array_equal(trandom.keep_mask((3, 5, 7), 0.1), a)
    assert trandom.keep_mask((0, 4), 0.1).shape == (0, 4)
