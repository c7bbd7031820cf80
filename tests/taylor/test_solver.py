"""The box-constrained quadratic solver against BVLS (SciPy's lsq_linear) on the same problems."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import lsq_linear

from ntaylor_lib.taylor import solver


@pytest.mark.parametrize("seed", range(6))
def test_box_quadratic_matches_bvls_on_random_problems(seed):
    """Projected Newton against SciPy's exact active-set BVLS, on full-rank and rank-deficient H."""
    from ntaylor_lib.taylor.solver import QuadraticProblem, solve_quadratic

    rng = np.random.default_rng(seed)
    p, m = 30, (60 if seed % 2 == 0 else 12)  # odd seeds: H = A^T A has rank 12 < 30
    a, b = rng.normal(size=(m, p)), rng.normal(size=m)
    lo = rng.normal(size=p) * 0.1 - 0.2
    hi = lo + rng.uniform(0.05, 0.4, size=p)
    problem = QuadraticProblem(a.T @ a, a.T @ b, float(b @ b), float(m))
    start = rng.uniform(lo, hi) if seed % 3 == 0 else None
    v, value = solve_quadratic(problem, (lo, hi), start=start)
    assert np.all(v >= lo) and np.all(v <= hi)
    reference = lsq_linear(a, b, bounds=(lo, hi), method="bvls", tol=1e-14).x
    expected = float(np.sum((a @ reference - b) ** 2) / m)
    np.testing.assert_allclose(value, expected, rtol=1e-9)


def test_box_quadratic_with_unseen_weights_and_one_point_boxes_matches_bvls(monkeypatch):
    """Weights with a zero column (an input pixel that is always zero) and weights whose box
    is one point (such a pixel's weight never moves in training): the optimum is BVLS's on
    the other weights, and the active-set method settles without the projected-Newton fallback."""

    rng = np.random.default_rng(5)
    p, m = 40, 120
    a, b = rng.normal(size=(m, p)), rng.normal(size=m)
    unseen = np.arange(p) % 5 == 0
    a[:, unseen] = 0.0
    lo = rng.normal(size=p) * 0.1 - 0.1
    hi = lo + rng.uniform(0.02, 0.2, size=p)
    point = (np.arange(p) % 10 == 0) | (np.arange(p) % 7 == 3)  # some unseen (every 10th), some seen
    hi[point] = lo[point]
    problem = solver.QuadraticProblem(a.T @ a, a.T @ b, float(b @ b), float(m))
    outcomes = []
    real = solver._active_set_qp
    monkeypatch.setattr(solver, "_active_set_qp",
                        lambda *args, **kw: outcomes.append(real(*args, **kw)) or outcomes[-1])
    v, value = solver.solve_quadratic(problem, (lo, hi))
    assert outcomes and all(o is not None for o in outcomes)
    assert np.all(v >= lo) and np.all(v <= hi) and np.array_equal(v[point], lo[point])
    free = ~point
    reference = lsq_linear(a[:, free], b - a[:, point] @ lo[point], bounds=(lo[free], hi[free]), method="bvls",
                           tol=1e-14).x
    expected = float(np.sum((a[:, free] @ reference - (b - a[:, point] @ lo[point])) ** 2) / m)
    np.testing.assert_allclose(value, expected, rtol=1e-9)
