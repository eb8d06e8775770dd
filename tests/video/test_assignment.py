"""The tracker's pairing of objects and boxes: the least total cost, as scipy's solver finds it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from video.assignment import min_cost_pairs


def _total(cost: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    return float(sum(cost[r, c] for r, c in pairs))


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (4, 1), (3, 3), (2, 5), (6, 3), (8, 8), (12, 9)])
def test_the_pairs_cost_as_little_as_scipys(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(50):
        cost = rng.uniform(0, 3, shape)
        cost[rng.random(shape) < 0.4] = 1e6  # pairs the tracker forbids
        pairs = min_cost_pairs(cost)
        rows, cols = linear_sum_assignment(cost)
        assert len(pairs) == min(shape)
        assert len({r for r, _ in pairs}) == len({c for _, c in pairs}) == len(pairs)
        assert _total(cost, pairs) == pytest.approx(float(cost[rows, cols].sum()), abs=1e-9)


def test_ties_and_a_greedy_trap():
    # Greedy takes (0, 0) at 1 and is left with (1, 1) at 100; the best pairing costs 4.
    assert min_cost_pairs(np.array([[1.0, 2.0], [2.0, 100.0]])) == [(0, 1), (1, 0)]
    cost = np.ones((3, 3))
    pairs = min_cost_pairs(cost)
    assert sorted(r for r, _ in pairs) == [0, 1, 2] and sorted(c for _, c in pairs) == [0, 1, 2]


def test_an_empty_side_pairs_nothing():
    assert min_cost_pairs(np.zeros((0, 3))) == []
    assert min_cost_pairs(np.zeros((2, 0))) == []


def test_small_matrices_against_every_pairing():
    rng = np.random.default_rng(7)
    for rows, cols in itertools.product(range(1, 5), repeat=2):
        cost = rng.integers(0, 5, (rows, cols)).astype(float)
        best = min(
            sum(cost[r, c] for r, c in zip(order, range(cols), strict=False))
            if rows >= cols
            else sum(cost[r, c] for r, c in zip(range(rows), order, strict=False))
            for order in itertools.permutations(range(max(rows, cols)), min(rows, cols))
        )
        assert _total(cost, min_cost_pairs(cost)) == best
