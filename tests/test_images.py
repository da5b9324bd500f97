"""Image helpers of the shared core that the stages lean on."""

from __future__ import annotations

import numpy as np
import pytest

from invs.images import extend_into


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_extend_into_fills_only_the_wanted_pixels_from_their_neighbours(dtype: type) -> None:
    values = np.zeros((6, 6, 3), dtype)
    values[:, :3] = np.array([10, 20, 30], dtype)  # the known left half
    known = np.zeros((6, 6), bool)
    known[:, :3] = True
    wanted = np.zeros((6, 6), bool)
    wanted[:, :5] = True  # two columns to fill; the last stays as it was
    out = extend_into(values, known, wanted)
    assert out.dtype == values.dtype
    assert np.array_equal(out[:, :5], np.broadcast_to(np.array([10, 20, 30], dtype), (6, 5, 3)))
    assert (out[:, 5] == 0).all() and np.array_equal(out[known], values[known])


def test_extend_into_past_its_rings_uses_the_mean_of_what_is_known() -> None:
    values = np.zeros((1, 20), np.float32)
    values[0, 0] = 4.0
    known = np.zeros((1, 20), bool)
    known[0, 0] = True
    out = extend_into(values, known, np.ones((1, 20), bool), steps=3)
    assert (out == 4.0).all()
