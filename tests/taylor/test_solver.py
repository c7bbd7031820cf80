"""The box-constrained quadratic solver against BVLS (SciPy's lsq_linear) on the same problems."""

from __future__ import annotations

import numpy as np
import pytest
import torch
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


def _solved_by_the_active_set_method(monkeypatch, problem, box):
    """``solve_quadratic(problem, box)``, asserting that every active-set solve settled (no
    projected-Newton fallback)."""
    outcomes = []
    real = solver._active_set_qp
    monkeypatch.setattr(solver, "_active_set_qp",
                        lambda *args, **kw: outcomes.append(real(*args, **kw)) or outcomes[-1])
    solved = solver.solve_quadratic(problem, box)
    assert outcomes and all(o is not None for o in outcomes)
    return solved


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
    v, value = _solved_by_the_active_set_method(monkeypatch, problem, (lo, hi))
    assert np.all(v >= lo) and np.all(v <= hi) and np.array_equal(v[point], lo[point])
    free = ~point
    reference = lsq_linear(a[:, free], b - a[:, point] @ lo[point], bounds=(lo[free], hi[free]), method="bvls",
                           tol=1e-14).x
    expected = float(np.sum((a[:, free] @ reference - (b - a[:, point] @ lo[point])) ** 2) / m)
    np.testing.assert_allclose(value, expected, rtol=1e-9)


@pytest.mark.parametrize("seed", [7, 8, 9, 12])
def test_active_set_settles_where_the_plain_method_cycles(seed, monkeypatch):
    """Nonnegative, strongly correlated features (as the input layer's pixels are) make ``H`` far
    from an M-matrix: the plain primal-dual active-set method, moving every contradicted guess at
    once, cycles on these problems (it returned no answer on each of these seeds). The safeguarded
    method settles, without the projected-Newton fallback, at BVLS's optimum."""
    rng = np.random.default_rng(seed)
    p = m = 80
    a = np.abs(rng.random((m, 5)) @ rng.random((5, p)) + 0.3 * rng.random((m, p))) * (rng.random((m, p)) < 0.9)
    b = rng.normal(size=m) * 3
    lo = rng.normal(size=p) * 0.05 - 0.05
    hi = lo + rng.uniform(0.01, 0.2, size=p)
    problem = solver.QuadraticProblem(a.T @ a, a.T @ b, float(b @ b), float(m))
    v, value = _solved_by_the_active_set_method(monkeypatch, problem, (lo, hi))
    assert np.all(v >= lo) and np.all(v <= hi)
    reference = lsq_linear(a, b, bounds=(lo, hi), method="bvls", tol=1e-14).x
    np.testing.assert_allclose(value, float(np.sum((a @ reference - b) ** 2) / m), rtol=1e-12)


def test_the_unconstrained_optimum_keeps_real_directions():
    """A direction with eigenvalue 1e-12 of the largest is real: dropping it (the pseudo-inverse cut
    off at 1e-12 of the largest, times the size) stopped at 1/2, above the minimum 1/6 at (0.5, 1e6)."""
    a, c = np.array([[1.0, 0], [0, 1e-6], [1, 0]]), np.array([0.0, 1, 1])
    problem = solver.QuadraticProblem(a.T @ a, a.T @ c, float(c @ c), 3.0)
    v, value = solver.solve_quadratic(problem, (np.array([-1.0, -1]), np.array([1.0, 2e6])))
    assert value == pytest.approx(1 / 6, rel=1e-10) and v == pytest.approx([0.5, 1e6], rel=1e-10)
    v, value = solver.solve_quadratic(problem, None)
    assert value == pytest.approx(1 / 6, rel=1e-10)


def _structured(p: int, condition: float, seed: int):
    """Statistics ``H = A^T A`` known exactly in float64 at any condition: ``A`` scales the columns of
    a permutation by singular values spread over ``condition``, and the data ``c`` has a part outside
    ``A``'s range (a positive minimum)."""
    rng = np.random.default_rng(seed)
    sv = np.geomspace(1.0, 1.0 / np.sqrt(condition), p) * 2.0 ** rng.integers(-3, 4)
    perm = rng.permutation(p)
    a = np.zeros((p + 5, p))
    a[perm, np.arange(p)] = sv
    c = rng.normal(size=p + 5)
    return a, c, solver.QuadraticProblem(a.T @ a, a.T @ c, float(c @ c), float(p + 5))


@pytest.mark.parametrize("condition", [1e4, 1e8, 1e11, 1e12, 1e13, 1e14])
def test_unconstrained_and_boxed_optima_agree_with_least_squares_up_to_condition_1e14(condition):
    """On float64 statistics, the unconstrained optimum's value equals numpy.linalg.lstsq's on the same
    statistics, and a boxed one BVLS's on a factor, to 1e-10 relative, at eigenvalue ratios down to 1e-14."""
    a, c, problem = _structured(30, condition, seed=int(np.log10(condition)))
    reference = np.linalg.lstsq(problem.h, problem.g, rcond=None)[0]
    _, value = solver.solve_quadratic(problem, None)
    assert value == pytest.approx(problem.value(reference), rel=1e-10)
    exact = np.linalg.lstsq(a, c, rcond=None)[0]
    lo, hi = exact - 0.3 * np.abs(exact) - 0.1, exact + 0.3 * np.abs(exact) + 0.1
    lo[::4], hi[::4] = exact[::4] + 0.1, exact[::4] + 1.0  # a quarter of the weights held at a bound
    v, value = solver.solve_quadratic(problem, (lo, hi))
    bounded = lsq_linear(a, c, bounds=(lo, hi), method="bvls", tol=1e-15).x
    assert value == pytest.approx(float(np.sum((a @ bounded - c) ** 2) / problem.m), rel=1e-10)
    assert solver.kkt_violation(problem.h, problem.g, v, (lo, hi)) <= solver.KKT_TOLERANCE


@pytest.mark.parametrize("condition", [1e2, 1e5, 1e8])
def test_dense_statistics_agree_with_least_squares_on_the_factor(condition):
    """Dense rotations: the optimum from the statistics equals lstsq on the factor itself to 1e-10 relative
    (beyond about 1e8 the statistics, not the solver, limit the agreement: forming ``A^T A`` in float64
    squares the condition number)."""
    rng = np.random.default_rng(int(np.log10(condition)))
    n, p = 200, 25
    u, _ = np.linalg.qr(rng.normal(size=(n, p)))
    w, _ = np.linalg.qr(rng.normal(size=(p, p)))
    a = (u * np.geomspace(1.0, 1.0 / np.sqrt(condition), p)) @ w.T
    c = rng.normal(size=n)
    problem = solver.QuadraticProblem(a.T @ a, a.T @ c, float(c @ c), float(n))
    exact = np.linalg.lstsq(a, c, rcond=None)[0]
    _, value = solver.solve_quadratic(problem, None)
    assert value == pytest.approx(float(np.sum((a @ exact - c) ** 2) / n), rel=1e-10)


def test_kkt_violation_sees_a_point_that_is_not_optimal():
    h, g = np.diag([2.0, 1.0]), np.array([1.0, 1.0])
    box = (np.array([0.0, 0.0]), np.array([1.0, 0.5]))
    assert solver.kkt_violation(h, g, np.array([0.5, 0.5]), box) == 0.0  # free optimum in x, upper bound in y
    assert solver.kkt_violation(h, g, np.array([0.5, 0.0]), box) > 0.1  # at the lower bound, pulled upwards
    assert solver.kkt_violation(h, g, np.array([0.2, 0.5]), box) > 0.1  # free but not stationary


def test_unconstrained_optimum_with_unseen_weights_is_the_minimum_norm_least_squares_solution():
    """Weights no sample sees are left out of the eigendecomposition: the result must still be
    ``lstsq``'s minimum-norm solution of the whole problem (zero on those weights)."""
    rng = np.random.default_rng(11)
    p, m = 30, 80
    a, b = rng.normal(size=(m, p)), rng.normal(size=m)
    a[:, np.arange(p) % 4 == 1] = 0.0
    problem = solver.QuadraticProblem(a.T @ a, a.T @ b, float(b @ b), float(m))
    v, value = solver.solve_quadratic(problem, None)
    reference = np.linalg.lstsq(a, b, rcond=None)[0]
    np.testing.assert_allclose(v, reference, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(value, float(np.sum((a @ reference - b) ** 2) / m), rtol=1e-10)


def test_projected_newton_without_bounds_reaches_the_least_squares_optimum():
    """The polish of an unconstrained solution runs projected Newton with infinite bounds: it must
    stay finite (no inf - inf in its bound tests) and reach the least-squares minimum."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=50)
    h, g = a.T @ a, a.T @ b
    inf = np.full(8, np.inf)
    with np.errstate(all="raise"):
        v = solver._box_qp(h, g, -inf, inf, np.zeros(8))
    np.testing.assert_allclose(v, np.linalg.lstsq(a, b, rcond=None)[0], rtol=1e-10)


@pytest.mark.parametrize("condition", [1e4, 1e8, 1e12, 1e14])
def test_batched_minimum_norm_solutions_equal_the_host_solution(condition):
    """The device path's batched eigh (run here on the CPU) against the host's one-at-a-time solve
    and lstsq, on statistics known exactly in float64 with a weight no sample sees (a zero row):
    values to 1e-10 relative, and zero on the unseen weight."""
    problems = []
    for seed in range(3):
        a, c, _ = _structured(20, condition, seed=seed + int(np.log10(condition)))
        a[:, 7] = 0.0
        problems.append(solver.QuadraticProblem(a.T @ a, a.T @ c, float(c @ c), float(len(c))))
    batched = solver.minimum_norm_solutions(torch.tensor(np.stack([p.h for p in problems])),
                                            torch.tensor(np.stack([p.g for p in problems]))).numpy()
    for problem, v in zip(problems, batched):
        host, value = solver.solve_quadratic(problem, None)
        reference = np.linalg.lstsq(problem.h, problem.g, rcond=None)[0]
        assert v[7] == 0.0 and host[7] == 0.0
        assert problem.value(v) == pytest.approx(value, rel=1e-10)
        assert problem.value(v) == pytest.approx(problem.value(reference), rel=1e-10)


def test_recorder_solves_run_numpy_and_scipy_blas_on_one_thread():
    """The box QPs' LAPACK calls are too small to share two threads (benchmarks/README.md): a
    recorder's solve runs inside ``one_host_blas_thread``, and the default comes back afterwards."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from ntaylor_lib.taylor.recorders.base import Group, TaylorRecorder

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        seen = []

        class Probe(TaylorRecorder):
            def _solve(self, on):
                seen.append(blas_threads())

        Probe([Group(1, [0], False)]).solve()
        assert seen == [{1}]
        assert blas_threads() == {2}
