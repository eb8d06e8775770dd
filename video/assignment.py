"""The cheapest one-to-one pairing of a cost matrix's rows and columns (the assignment problem).

The tracker pairs a few open objects with a few boxes per frame. This is the Hungarian method with
potentials, O(n^2 m) for n <= m: scipy's `linear_sum_assignment` gives the same pairs, but brings
all of scipy.optimize into every flow run (~23 MB) for matrices of a few cells.
"""

from __future__ import annotations

import math

import numpy as np


def min_cost_pairs(cost: np.ndarray) -> list[tuple[int, int]]:
    """(row, column) pairs, each row and column used at most once, as many pairs as the matrix's
    shorter side, of the least total cost; sorted by row. Costs must be finite."""
    rows, cols = cost.shape
    if rows == 0 or cols == 0:
        return []
    transposed = rows > cols
    c: list[list[float]] = (cost.T if transposed else cost).tolist()
    n, m = len(c), len(c[0])
    u = [0.0] * (n + 1)  # row potentials (1-based; 0 is the free start)
    v = [0.0] * (m + 1)  # column potentials
    owner = [0] * (m + 1)  # the row (1-based) a column is paired with; 0: none
    way = [0] * (m + 1)  # the previous column on the augmenting path
    for row in range(1, n + 1):
        owner[0] = row
        j0 = 0
        slack = [math.inf] * (m + 1)
        used = [False] * (m + 1)
        while owner[j0]:
            used[j0] = True
            i0, delta, j1 = owner[j0], math.inf, 0
            for j in range(1, m + 1):
                if not used[j]:
                    reduced = c[i0 - 1][j - 1] - u[i0] - v[j]
                    if reduced < slack[j]:
                        slack[j], way[j] = reduced, j0
                    if slack[j] < delta:
                        delta, j1 = slack[j], j
            for j in range(m + 1):
                if used[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    slack[j] -= delta
            j0 = j1
        while j0:  # flip the augmenting path
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    pairs = [(owner[j] - 1, j - 1) for j in range(1, m + 1) if owner[j]]
    return sorted((b, a) for a, b in pairs) if transposed else sorted(pairs)
