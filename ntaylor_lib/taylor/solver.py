"""The hindsight Taylor optimum ``TO_S(N) = min_{V in H} (1/N) sum_{n<=N} T_n^S(V)`` (Theorem 2).

The comparator set ``H`` is the box spanned by the run's own iterates,
``min_n theta^n_S <= V <= max_n theta^n_S`` coordinatewise over the whole run,
optionally widened around its centre by ``box_scale``
(``inf``: unconstrained). Two problem types:

* MSE (quadratic): ``q(V) = (V^T H V - 2 g^T V + s) / M`` from streaming statistics;
  unconstrained: the minimum-norm solution by one ``eigh`` of ``H`` (a pseudo-inverse);
  boxed: a safeguarded primal-dual active-set method, checked, with projected Newton steps
  where it does not settle or its answer fails the optimality check, and with the
  weights the objective cannot see and those with a one-point box held out (BVLS was 15x
  slower on the autoencoder's 620-dimensional layer 3).
* Cross-entropy: ``F(V) = mean_m CE(b_m + A_m V, y_m)`` with ``A`` a linear operator
  holding per-sample Jacobian factors; solved with SciPy's L-BFGS-B in float64 with a
  hand-written gradient ``A^T (softmax - onehot) / M``, warm-started, and never worse
  than the best candidate start (the previous horizon's optimum, the recorded iterates).

Shapes: ``M`` samples (rows over all rounds of the horizon), ``K`` outputs, ``P`` parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

# SciPy is imported where it is used, so that the recorders import on a machine without it
# (benchmarks/gpu_check.py then skips the solver timings and says so).


@contextmanager
def one_host_blas_thread() -> Iterator[None]:
    """NumPy's and SciPy's OpenBLAS on one thread while it holds (the host solves run inside it).

    The box QPs are a chain of mid-sized dense operations (a 700 x 700 Cholesky factorisation, an
    ``eigh``, matrix-vector products), too small for two threads to share: on the 2-core machine
    this project is measured on, 60 recorded input-layer problems took 2.67x longer with
    OpenBLAS's default of a thread per core (``benchmarks/README.md``). PyTorch's own BLAS (the
    Grams), linked into its wheels, is left as it is. Without ``threadpoolctl`` installed (it is
    in ``requirements.txt``, not in the core's dependencies) nothing changes.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):  # the BLAS libraries loaded dynamically: numpy's and
        yield  # scipy's, not the one linked into PyTorch's CPU build (MKL), nor its OpenMP pool


def iterate_box(lower: np.ndarray, upper: np.ndarray, box_scale: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The iterates' box widened ``box_scale`` times around its centre; ``None`` when unconstrained."""
    if math.isinf(box_scale):
        return None
    if box_scale <= 0:
        raise ValueError(f"box_scale={box_scale!r} must be > 0 (inf: unconstrained)")
    centre, half = (upper + lower) / 2, (upper - lower) / 2 * box_scale
    return centre - half, centre + half


# --------------------------------------------------------------------------- quadratic (MSE)

@dataclass
class QuadraticProblem:
    """``q(V) = (V^T H V - 2 g^T V + s) / M`` (the MSE Taylor objective summed over a horizon).

    Attributes:
        h: ``(P, P)`` ``sum J^T J`` (per-sample Jacobian Grams, all rounds).
        g: ``(P,)`` ``sum J^T c`` with ``c = J theta^n_S - (f - y)``.
        s: ``sum ||c||^2``.
        m: the normaliser: samples times outputs (the MSE's mean).
    """

    h: np.ndarray
    g: np.ndarray
    s: float
    m: float

    def value(self, v: np.ndarray) -> float:
        return float((v @ self.h @ v - 2 * self.g @ v + self.s) / self.m)


def _psd_solve(h: np.ndarray, free: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``h[free, free]^{-1} b`` for symmetric PSD ``h`` by Cholesky, with a ridge of ``1e-12`` of the mean diagonal.

    Layer Grams are often singular (a unit that is never active leaves its weights out of
    every Jacobian); along those null directions the quadratic is flat, so the tiny ridge
    picks a finite point without changing the value beyond rounding. Least squares
    remains the fallback should the factorisation still fail. The block is copied once and
    factorised in place (the active-set method solves about 20 such blocks per box).
    """
    import scipy.linalg

    a = h[np.ix_(free, free)]
    diagonal = np.einsum("ii->i", a)  # a writable view of the copy's diagonal
    diagonal += 1e-12 * max(float(diagonal.sum()) / max(len(a), 1), 1e-300)
    try:
        # a.T: the same symmetric matrix in the column-major order LAPACK works in (a C-ordered
        # array would be copied into it first; 1.5x the time of the factorisation at 700 x 700)
        factor = scipy.linalg.cho_factor(a.T, overwrite_a=True, check_finite=False)
        return scipy.linalg.cho_solve(factor, b, check_finite=False)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(h[np.ix_(free, free)], b, rcond=None)[0]


def _active_set_qp(
    h: np.ndarray, g: np.ndarray, lo: np.ndarray, hi: np.ndarray, v: np.ndarray, max_iter: int = 100
) -> np.ndarray | None:
    """Primal-dual active-set method (Hintermueller, Ito and Kunisch, 2002) for the box QP, safeguarded.

    Guess the coordinates held at each bound, solve the free block exactly (one Cholesky
    solve), then move the guesses that the solution contradicts: a free coordinate outside
    its box to that bound, a held one whose gradient ``H v - g`` points into the box back to
    the free set. It stops when nothing is contradicted beyond rounding (``1e-12`` of the
    problem's scale, in gradient units: a free coordinate's excess times ``H_ii``).

    The plain method moves every contradicted guess at once, and cycles when ``H`` is not an
    M-matrix (the autoencoder's input-layer neurons, with hundreds of weights at a bound).
    The safeguard: when an iteration does not lower the count of contradictions below the
    best so far, only the largest half of the next ones move, halving again while it does
    not (down to one at a time), and all of them again after progress. Returns ``None`` when
    ``max_iter`` iterations do not settle (the caller then uses projected Newton).
    """
    d = np.maximum(np.diag(h), 1e-300)
    h_max, g_max = np.abs(h).max(initial=0.0), np.abs(g).max(initial=0.0)  # the problem's scale (once: h is large)
    r = h @ v - g
    at_lo, at_hi = (v <= lo) & (r > 0), (v >= hi) & (r < 0)  # held where the start pushes outwards
    best, limit = math.inf, 0
    for _ in range(max_iter):
        free = ~(at_lo | at_hi)
        v = np.where(at_hi, hi, np.where(at_lo, lo, v))
        if free.any():  # the held weights' pull on the free ones: one product with all of h, no block copied
            v[free] = _psd_solve(h, free, (g - h @ np.where(free, 0.0, v))[free])
        r = h @ v - g
        below, above = free & (v < lo), free & (v > hi)
        leave_lo, leave_hi = at_lo & (r < 0), at_hi & (r > 0)
        size = np.zeros_like(v)  # how far each guess is contradicted, in gradient units
        size[below], size[above] = ((lo - v) * d)[below], ((v - hi) * d)[above]
        size[leave_lo], size[leave_hi] = -r[leave_lo], r[leave_hi]
        tolerance = 1e-12 * (g_max + h_max * np.abs(v).max(initial=0.0))
        wrong = size > tolerance
        count = int(wrong.sum())
        if count == 0:
            return np.clip(v, lo, hi)
        if count < best:
            best, limit = count, count
        else:
            limit = max(1, min(limit, count) // 2)
        if limit < count:  # the safeguard: the largest contradictions only
            wrong = np.zeros_like(wrong)
            wrong[np.argpartition(-size, limit - 1)[:limit]] = True
        at_lo = (at_lo & ~(wrong & leave_lo)) | (wrong & below)
        at_hi = (at_hi & ~(wrong & leave_hi)) | (wrong & above)
    return None


def _box_qp(h: np.ndarray, g: np.ndarray, lo: np.ndarray, hi: np.ndarray, v: np.ndarray,
            max_iter: int = 500) -> np.ndarray:
    """``argmin v^T h v - 2 g^T v`` over ``lo <= v <= hi`` (``h`` symmetric PSD), by projected Newton.

    Bertsekas (1982): coordinates at a bound whose gradient pushes outwards are held;
    the others take the exact Newton step (least squares on the free block), projected
    back onto the box with backtracking. Where the Newton step cannot descend (the
    gradient lies in the free block's null space), a projected steepest-descent step
    with exact line search is taken instead. A few iterations suffice from a warm start.
    """
    def f(w: np.ndarray) -> float:
        return float(w @ (h @ w) - 2 * g @ w)

    v = np.clip(v, lo, hi)
    fv = f(v)
    problem_scale = abs(f(np.zeros_like(v))) + abs(fv)
    span = hi - lo  # infinite where a side is unbounded (the unconstrained problem, polished)
    eps = 1e-12 * np.where(np.isfinite(span), np.maximum(span, 1e-300), 0.0)
    for _ in range(max_iter):
        grad = h @ v - g
        held = ((v <= lo + eps) & (grad > 0)) | ((v >= hi - eps) & (grad < 0))
        free = ~held
        scale = np.abs(g).max(initial=0.0) + np.abs(h).max(initial=0.0) * np.abs(v).max(initial=0.0)
        tolerance = 1e-13 * scale + 1e-300
        if not free.any() or np.abs(grad[free]).max() <= tolerance:
            break
        steps = []
        newton = np.zeros_like(v)
        newton[free] = _psd_solve(h, free, -grad[free])
        steps.append((newton, 1.0))
        steepest = np.where(free, -grad, 0.0)
        curvature = float(steepest @ (h @ steepest))
        exact = float(steepest @ steepest) / curvature if curvature > 0 else np.inf
        span = float(np.max(hi - lo, initial=0.0))  # inf when unbounded: then the exact step alone
        steps.append((steepest, min(exact, 4 * span / (np.abs(steepest).max() + 1e-300))))
        moved = False
        for direction, alpha in steps:
            if not math.isfinite(alpha):  # no curvature along an unbounded direction: not a step
                continue
            for _ in range(60):
                candidate = np.clip(v + alpha * direction, lo, hi)
                fc = f(candidate)
                # progress below rounding of the objective is no progress: stop there
                if fc < fv - 1e-15 * (abs(fv) + problem_scale):
                    v, fv, moved = candidate, fc, True
                    break
                alpha *= 0.5
            if moved:
                break
        if not moved:
            break
    return v


#: Eigenvalues of ``H`` below this times its size and its largest are taken as zero: the
#: cut-off of ``numpy.linalg.lstsq``'s default, machine precision. (A larger one drops real
#: directions: an eigenvalue ratio of 1e-11, seen on a recorded neuron, is a direction.)
RCOND = float(np.finfo(np.float64).eps)


def minimum_norm_solution(h: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The minimum-norm solution of ``H V = g`` for symmetric PSD ``H`` (the unconstrained optimum).

    One ``eigh``, eigenvalues below ``RCOND * len(H) * max`` dropped as ``lstsq`` drops singular
    values, then one step of iterative refinement on the residual ``g - H V`` (it recovers the
    digits the first solve loses on ill-conditioned ``H``).
    """
    lam, q = np.linalg.eigh((h + h.T) / 2)
    keep = lam > max(lam.max(initial=0.0), 0.0) * RCOND * len(lam)
    inverse = np.where(keep, 1.0 / np.where(keep, lam, 1.0), 0.0)

    def pinv(r: np.ndarray) -> np.ndarray:
        return q @ (inverse * (q.T @ r))

    v = pinv(g)
    return v + pinv(g - h @ v)


def minimum_norm_solutions(h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """:func:`minimum_norm_solution` batched in torch, on ``h``'s device: ``(B, P, P)``, ``(B, P)`` -> ``(B, P)``.

    The device path of the MSE solves: one batched ``eigh`` over a group's neurons (their
    ``P`` agree), the same cut-off :data:`RCOND` and one step of iterative refinement.
    Weights no sample sees are zero rows of ``h`` (with ``g`` zero there). Their zero
    eigenvalues would sit beside the smallest real ones, and ``eigh`` mixes nearly equal
    eigenvalues' vectors: they are given the largest diagonal entry instead (which does
    not move the largest eigenvalue, hence the cut-off), a decoupled direction whose
    solution is exactly zero, as the host path's (which leaves them out) is.
    """
    h = (h + h.mT) / 2
    diagonal = torch.diagonal(h, dim1=-2, dim2=-1)
    unseen = (diagonal == 0) & (g == 0)
    h = h + torch.diag_embed(torch.where(unseen, diagonal.amax(-1, keepdim=True), torch.zeros_like(diagonal)))
    lam, q = torch.linalg.eigh(h)
    cut = lam.amax(-1, keepdim=True).clamp_min(0.0) * RCOND * h.shape[-1]
    keep = lam > cut
    inverse = torch.where(keep, 1.0 / torch.where(keep, lam, torch.ones_like(lam)), torch.zeros_like(lam))

    def pinv(r: torch.Tensor) -> torch.Tensor:
        return (q @ (inverse * (q.mT @ r[..., None]).squeeze(-1))[..., None]).squeeze(-1)

    v = pinv(g)
    return v + pinv(g - (h @ v[..., None]).squeeze(-1))


def kkt_violation(h: np.ndarray, g: np.ndarray, v: np.ndarray, box: tuple[np.ndarray, np.ndarray] | None) -> float:
    """How far ``V`` is from optimal for ``min V^T H V - 2 g^T V`` over ``box``, relative to the problem's scale.

    The gradient ``H V - g`` must vanish on the free weights, point into the box at a bound
    held from inside it (``>= 0`` at the lower bound, ``<= 0`` at the upper). Returns the
    largest violation divided by ``|g| + |H| |V|`` (max norms): 0 at an exact optimum.
    """
    grad = h @ v - g
    if box is not None:
        lo, hi = box
        span = np.maximum(hi - lo, 0.0)
        at_lo = v <= lo + 1e-12 * span
        at_hi = v >= hi - 1e-12 * span
        grad = np.where(at_lo, np.minimum(grad, 0.0), np.where(at_hi, np.maximum(grad, 0.0), grad))
        grad[at_lo & at_hi] = 0.0  # a one-point box: nothing to move
    scale = np.abs(g).max(initial=0.0) + np.abs(h).max(initial=0.0) * np.abs(v).max(initial=0.0)
    return float(np.abs(grad).max(initial=0.0) / max(scale, 1e-300))


#: A solution whose :func:`kkt_violation` exceeds this is polished again before it is returned.
KKT_TOLERANCE = 1e-9


def solve_quadratic(
    problem: QuadraticProblem,
    box: tuple[np.ndarray, np.ndarray] | None,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Minimiser and minimum of a :class:`QuadraticProblem` over ``box`` (``None``: everywhere).

    Unconstrained: the minimum-norm solution of ``H V = g`` (:func:`minimum_norm_solution`).
    Boxed: that solution when it lies in the box; otherwise a primal-dual active-set
    solve (:func:`_active_set_qp`; projected Newton, :func:`_box_qp`, where it does not
    settle), started from the better of ``start`` (e.g. the previous horizon's
    optimum) and the unconstrained solution clipped to the box. No point is returned without
    its optimality conditions checked (:func:`kkt_violation`): one that fails them is
    polished by projected Newton until it passes (or stops improving).
    """
    return solve_quadratic_boxes(problem, [box], [start])[0]


def solve_quadratic_boxes(
    problem: QuadraticProblem,
    boxes: Sequence[tuple[np.ndarray, np.ndarray] | None],
    starts: Sequence[np.ndarray | None] | None = None,
    free_optimum: np.ndarray | None = None,
) -> list[tuple[np.ndarray, float]]:
    """:func:`solve_quadratic` for several boxes of one problem, sharing one ``eigh`` of ``H``.

    ``free_optimum``: the unconstrained optimum when already computed (by
    :func:`minimum_norm_solutions` on a device, for a whole group at once).
    """
    h = (problem.h + problem.h.T) / 2
    # Weights the objective does not see: a zero diagonal of the PSD H is a zero row, and
    # with g zero there too the quadratic is flat along them (an input pixel that is zero
    # on every sample: about 90 of the 785 weights of an autoencoder input-layer neuron at
    # the paper profile). Any value in the box is optimal; they stay where the start puts
    # them, and the minimum-norm solution is zero there: its eigh is of the rest alone.
    unseen = (np.diag(h) == 0) & (problem.g == 0)
    if free_optimum is None:
        seen = ~unseen
        free_optimum = np.zeros_like(problem.g)
        free_optimum[seen] = minimum_norm_solution(h[np.ix_(seen, seen)], problem.g[seen])
    results = []
    for box, start in zip(boxes, starts or [None] * len(boxes)):
        if box is None or (np.all(free_optimum >= box[0]) and np.all(free_optimum <= box[1])):
            v = free_optimum.copy()  # inside the box: the unconstrained optimum, once its gradient is checked
            results.append((v, problem.value(_checked(h, problem.g, v, box))))
            continue
        lo, hi = box
        candidates = [np.clip(free_optimum, lo, hi)] + ([np.clip(start, lo, hi)] if start is not None else [])
        v = min(candidates, key=problem.value)
        # Unseen weights, and weights whose box is one point (an unseen pixel's weight never
        # moves in training, so its iterate box is degenerate), are held out of the solve:
        # on them the active-set guesses flip between bound and free and never settle.
        held = unseen | (lo == hi)
        keep = ~held
        if keep.any():
            hk = h[np.ix_(keep, keep)]
            gk = problem.g[keep] - h[np.ix_(keep, held)] @ v[held]  # held weights' pull on the others

            def value(w: np.ndarray) -> float:
                full = v.copy()
                full[keep] = w
                return problem.value(full)

            start_k = v[keep]
            fast = _active_set_qp(hk, gk, lo[keep], hi[keep], start_k.copy())
            if fast is not None and value(fast) <= value(start_k):
                v[keep] = fast  # (checked below, and polished by projected Newton if it fails the check)
            else:  # projected Newton from the start where the active-set method did not settle
                v[keep] = _box_qp(hk, gk, lo[keep], hi[keep], start_k)
        results.append((v, problem.value(_checked(h, problem.g, v, box))))
    return results


def _checked(h: np.ndarray, g: np.ndarray, v: np.ndarray, box: tuple[np.ndarray, np.ndarray] | None,
             rounds: int = 5) -> np.ndarray:
    """``v`` (changed in place) once it meets the optimality conditions: projected Newton polishes it
    while :func:`kkt_violation` exceeds :data:`KKT_TOLERANCE` and the objective still falls."""
    lo, hi = box if box is not None else (np.full_like(v, -np.inf), np.full_like(v, np.inf))
    for _ in range(rounds):
        if kkt_violation(h, g, v, box) <= KKT_TOLERANCE:
            break
        before = float(v @ (h @ v) - 2 * g @ v)
        v[:] = _box_qp(h, g, lo, hi, v)
        if float(v @ (h @ v) - 2 * g @ v) >= before:
            break  # no further progress is possible in float64: the best point found stays
    return v


# --------------------------------------------------------------------------- cross-entropy

@dataclass
class LinearOperator:
    """``V -> A V`` (``(M, K)``) and its adjoint ``R -> A^T R`` (shaped like ``V``)."""

    apply: Callable[[torch.Tensor], torch.Tensor]
    adjoint: Callable[[torch.Tensor], torch.Tensor]


def jacobian_operator(j: torch.Tensor) -> LinearOperator:
    """Dense per-sample Jacobians ``J``: ``(M, K, P)``."""
    return LinearOperator(lambda v: torch.einsum("mkp,p->mk", j, v), lambda r: torch.einsum("mkp,mk->p", j, r))


def dense_operator(g: torch.Tensor, x: torch.Tensor) -> LinearOperator:
    """A dense layer's neurons from factors: ``J[m,k,c,q] = G[m,k,c] x~[m,q]``; ``V``: ``(C, Q)`` flattened.

    ``g``: ``(M, K, C)`` output-by-pre-activation Jacobian, ``x``: ``(M, Q)`` layer input with a 1.
    """
    c, q = g.shape[2], x.shape[1]

    def apply(v: torch.Tensor) -> torch.Tensor:
        return torch.einsum("mkc,mc->mk", g, x @ v.view(c, q).T)

    def adjoint(r: torch.Tensor) -> torch.Tensor:
        return (torch.einsum("mkc,mk->mc", g, r).T @ x).flatten()

    return LinearOperator(apply, adjoint)


@dataclass
class CrossEntropyProblem:
    """``F(V) = mean_m CE(b_m + A_m V, y_m)``, convex in ``V`` (the Taylor loss of a horizon).

    Attributes:
        offset: ``(M, K)`` ``b = f - J theta^n_S`` per sample (so ``b + J V = T^n_S(V; x)``).
        target: ``(M,)`` class labels.
        op: the :class:`LinearOperator` ``A = J``.
    """

    offset: torch.Tensor
    target: torch.Tensor
    op: LinearOperator

    def value_and_grad(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.offset + self.op.apply(v)
        logp = torch.log_softmax(z, dim=1)
        value = -logp.gather(1, self.target[:, None]).mean()
        r = logp.exp()
        r[torch.arange(len(self.target), device=r.device), self.target] -= 1.0
        return value, self.op.adjoint(r / len(self.target))

    def value(self, v: torch.Tensor) -> float:
        return float(self.value_and_grad(v)[0])


def solve_cross_entropy(
    problem: CrossEntropyProblem,
    starts: Sequence[np.ndarray],
    box: tuple[np.ndarray, np.ndarray] | None,
    tol: float = 1e-10,
    max_iter: int = 500,
) -> tuple[np.ndarray, float]:
    """L-BFGS-B on ``problem`` from the best of ``starts`` (projected onto ``box``).

    Returns the minimiser and the minimum in float64; the result is never above the
    objective at any start (the previous horizon's optimum and the recorded iterates).
    """
    from scipy.optimize import minimize

    dtype, device = problem.offset.dtype, problem.offset.device

    def fun(v: np.ndarray) -> tuple[float, np.ndarray]:
        # SciPy hands a read-only array: copy it rather than alias it as a tensor
        value, grad = problem.value_and_grad(torch.tensor(v, dtype=dtype, device=device))
        return float(value), grad.detach().cpu().numpy().astype(np.float64)

    clip = (lambda v: v) if box is None else (lambda v: np.clip(v, *box))
    candidates = [clip(np.asarray(s, dtype=np.float64)) for s in starts]
    values = [fun(c)[0] for c in candidates]
    best = int(np.argmin(values))
    bounds = None if box is None else list(zip(*box))
    result = minimize(
        fun, candidates[best], jac=True, method="L-BFGS-B", bounds=bounds,
        options={"maxiter": max_iter, "ftol": tol, "gtol": tol * 1e-2, "maxcor": 20},
    )
    if result.fun <= values[best]:
        return result.x, float(result.fun)
    return candidates[best], float(values[best])


__all__ = [
    "CrossEntropyProblem",
    "LinearOperator",
    "QuadraticProblem",
    "dense_operator",
    "iterate_box",
    "jacobian_operator",
    "minimum_norm_solution",
    "minimum_norm_solutions",
    "one_host_blas_thread",
    "solve_cross_entropy",
    "solve_quadratic",
    "solve_quadratic_boxes",
]
