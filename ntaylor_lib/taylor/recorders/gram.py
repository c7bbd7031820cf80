"""The tensor algebra of the exact MSE statistics: pure functions on stacked rounds.

For a dense ReLU network the per-sample Jacobian of the output by layer ``l``'s weights
factors as ``J = J_L (x) x~^T`` (the output-by-pre-activation Jacobian ``J_L`` times the
padded layer input ``x~ = [x, 1]``), so ``J^T J = (x~ x~^T) kron (J_L^T J_L)``. These
functions compute the Grams ``J_L^T J_L`` of every layer by one backward recursion over a
chunk of rounds at once (the round as a batch dimension), and the triangle layouts in
which :class:`~ntaylor_lib.taylor.recorders.mse.MSEStatsRecorder` accumulates them.

Shapes: ``R`` rounds, ``N`` samples per round, ``C_l`` units of layer ``l``, ``K`` outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def upper_positions(k: int, device=None) -> torch.Tensor:
    """Where ``triu_indices(k, k)`` lie in a row-major ``k x k`` matrix: the storage order of the statistics."""
    i, j = torch.triu_indices(k, k, device=device)
    return i * k + j


def triangle_index(k: int) -> torch.Tensor:
    """For each ``(i, j)`` of a ``k x k`` symmetric matrix (row-major), its position in ``triu_indices(k, k)``."""
    i, j = torch.triu_indices(k, k)
    position = torch.empty(k, k, dtype=torch.long)
    position[i, j] = torch.arange(i.numel())
    position[j, i] = torch.arange(i.numel())
    return position.flatten()


def column_square_norms(f: torch.Tensor) -> torch.Tensor:
    """``sum_k f[:, k]^2`` of ``f`` ``(R, rows, ...)``. With few rows, one fused multiply-add per row
    into a small accumulator reads ``f`` once (on the CPU about twice as fast as squaring ``f``
    and then summing); with many, the two passes."""
    if f.shape[1] > 64:
        return f.square().sum(1)
    out = f[:, 0] * f[:, 0]
    for k in range(1, f.shape[1]):
        out.addcmul_(f[:, k], f[:, k])
    return out


def padded_transpose(x: torch.Tensor) -> torch.Tensor:
    """``x~ = [x, 1]`` of ``x`` ``(N, Q - 1)``, transposed: a contiguous ``(Q, N)``."""
    out = x.new_empty(x.shape[1] + 1, x.shape[0])
    out[:-1] = x.T
    out[-1] = 1.0
    return out


def triangle_rows(xt: torch.Tensor) -> torch.Tensor:
    """The upper triangle of ``x x^T`` per sample, from ``x`` transposed ``(Q, N)``: ``(Q(Q+1)/2, N)``
    with rows in ``triu_indices`` order. One product per row ``i`` (``x_i x_j`` for ``j >= i``), each
    writing contiguous memory: several times faster than gathering both factors by index."""
    q, n = xt.shape
    out = xt.new_empty(q * (q + 1) // 2, n)
    at = 0
    for i in range(q):
        torch.mul(xt[i:], xt[i : i + 1], out=out[at : at + q - i])
        at += q - i
    return out


def weighted_grams(x: torch.Tensor, w: torch.Tensor, block_rows: int = 4096) -> torch.Tensor:
    """``H[j] = sum_n w[n, j] x_n x_n^T`` in float64, ``(m, Q, Q)``, from rows ``x`` and weights ``w`` ``(R, m)``.

    The input layer's neuron ``j`` sees sample ``n`` with weight ``w[n, j] = ||J_L[n, :, j]||^2``,
    zero where the neuron is off (about 30% of the rows at the paper profile), and MNIST's
    pixels are zero on about 80% of the entries (about 90 of the 785 columns on every row).
    Each neuron's product is therefore taken over its own rows with ``w > 0`` and the columns
    that are nonzero somewhere: about half the work of the dense products, same sums.
    (The neurons' row sets differ, hence one product per neuron rather than one batched one.)
    The rows go through in blocks of ``block_rows``, gathered into workspaces allocated once:
    a paper-scale horizon holds 200k rows, and a float64 copy of a neuron's rows (1.2 GB)
    for each of 50 neurons cost more in page faults than in arithmetic.
    """
    q = x.shape[1]
    seen = (x != 0).any(0).nonzero().squeeze(1)
    xs = x[:, seen]
    h = torch.zeros(w.shape[1], q, q, dtype=torch.float64, device=x.device)
    block = (seen[:, None], seen[None, :])
    rows_max = max(1, min(int(block_rows), x.shape[0]))
    gathered = xs.new_empty(rows_max, xs.shape[1])
    wide = torch.empty(rows_max, xs.shape[1], dtype=torch.float64, device=x.device)
    weighted = torch.empty_like(wide)
    acc = torch.zeros(xs.shape[1], xs.shape[1], dtype=torch.float64, device=x.device)
    # H is symmetric: its upper block triangle alone is formed, as PANELS row panels (rows i of
    # H, columns from i on), then mirrored. 4 panels: 0.70x the time of the whole product on the
    # 2-core CPU (benchmarks/bench_weighted_grams.py), where the finer panels' smaller products lose
    # what their fewer flops save.
    cuts = [round(i * xs.shape[1] / PANELS) for i in range(PANELS + 1)]
    for j in range(w.shape[1]):
        rows = (w[:, j] != 0).nonzero().squeeze(1)
        acc.zero_()
        for start in range(0, len(rows), rows_max):
            part = rows[start : start + rows_max]
            k = len(part)
            torch.index_select(xs, 0, part, out=gathered[:k])
            wide[:k].copy_(gathered[:k])  # float32 -> float64: exact
            torch.mul(wide[:k], w[part, j, None].to(torch.float64), out=weighted[:k])
            for a, b in zip(cuts, cuts[1:]):
                acc[a:b, a:].addmm_(weighted[:k, a:b].T, wide[:k, a:])
        upper = acc.triu()
        h[j][block] = upper + upper.triu(1).T
    return h


#: Row panels of :func:`weighted_grams`' upper block triangle.
PANELS = 4


def stacked_trace(weights: list[torch.Tensor], biases: list[torch.Tensor], x: torch.Tensor):
    """Forward pass of a dense :class:`ReluNet` with a different ``theta`` per round.

    Args: ``weights[l]`` ``(R, C, Q')``, ``biases[l]`` ``(R, C)``, ``x`` ``(R, N, D)``.
    Returns: pre-activations ``a_l`` and layer inputs ``x_{l-1}``, each ``(R, N, .)``.
    """
    pre, inputs, h = [], [], x
    for l, (w, b) in enumerate(zip(weights, biases)):
        inputs.append(h)
        pre.append(torch.baddbmm(b[:, None, :], h, w.transpose(1, 2)))
        if l < len(weights) - 1:
            h = torch.relu(pre[-1])
    return pre, inputs


def output_factor(w_last: torch.Tensor) -> torch.Tensor:
    """``F`` with ``F^T F = W_L^T W_L`` per round: ``W_L`` itself, or a Cholesky factor when ``K > C``."""
    k, c = w_last.shape[1:]
    if k <= c:
        return w_last
    a = (w_last.transpose(1, 2) @ w_last).double()
    chol, info = torch.linalg.cholesky_ex(a)
    if bool(info.any()):  # singular: a square root from the eigendecomposition
        lam, q = torch.linalg.eigh(a)
        chol = q * lam.clamp_min(0).sqrt()[:, None, :]
    return chol.transpose(1, 2).to(w_last.dtype)


def stacked_grams(weights: list[torch.Tensor], pre: list[torch.Tensor], errors: dict[int, torch.Tensor], full: set[int],
                   diagonals: Mapping[int, Sequence[int]], lowest: int, cut: int = 0,
                   subset: torch.Tensor | None = None):
    """Per-sample Grams ``Gram_l = J_L^T J_L`` of the output by the pre-activations, and ``r_l = J_L^T e``.

    ``J_L`` is carried as a factor ``F_l`` with ``F_l^T F_l = Gram_l`` and only ``min(K, C_{L-1})``
    rows: ``F_{L-1} = F D_{L-1}`` with ``F^T F = W_L^T W_L``, then ``F_l = F_{l+1} W_{l+1} D_l``.
    The factors are laid out ``(R, rows, N, C_l)``, so each step is one GEMM per round with
    rows x samples as the long dimension and the mask a broadcast over the contiguous last
    dimension. ``F_{L-1}`` is never formed: the first step is ``F (D_{L-1} W_{L-1})``, whose
    per-sample operand has ``C_{L-1} C_{L-2}`` entries instead of ``rows C_{L-1}``.
    A full Gram is formed only where a layer is solved whole; a neuron's ``Gram_l[alpha, alpha]``
    is the squared norm of column ``alpha`` of ``F_l``.

    The factors stay in the network's dtype, but every Gram is formed from them in float64: a
    product of two float32 numbers is exact in float64, so each sample's Gram is positive
    semidefinite to float64 rounding. (Formed in float32, the sums over a horizon came out
    indefinite at about 1e-8 of their largest eigenvalue, and the box QPs, which then are not
    convex, could not meet their optimality check: seconds per neuron instead of milliseconds.)

    Args:
        weights: ``W_l`` ``(R, C_l, C_{l-1})`` per layer, one per round.
        pre: pre-activations ``(R, N, C_l)``.
        errors: ``r_l`` ``(R, N, C_l)`` where already known (from the training pass's gradients), or
            ``{L: e}``, the output errors ``(R, N, K)``, from which the rest are computed.
        full: layers whose full ``(R, N, C, C)`` Gram is returned.
        diagonals: ``{l: neurons}`` whose ``(R, N, m)`` diagonal entries are returned.
        lowest: the lowest layer needed.
        cut, subset: below layer ``cut`` only the rounds ``subset`` (a bool ``(R,)``) are computed.

    Returns:
        ``grams[l]``, ``diags[l]`` and ``resid[l]`` ``(R, N, C_l)`` (``R`` = the subset's rounds below
        ``cut``; ``resid`` where given or computable).
    """
    depth = len(weights)
    grams: dict[int, torch.Tensor | None] = {depth: None}
    diags: dict[int, torch.Tensor] = {}
    dtype = weights[0].dtype
    resid = {depth: errors[depth]} if depth in errors else {}
    factor = above = None  # F (R, rows, C_{L-1}); the mask D_{l+1} of the layer above
    f = None  # F_l, (R, rows, N, C_l), from the second hidden layer from the top down
    sliced = False  # whether the carried factor state holds the strided rounds only
    for l in range(depth - 1, lowest - 1, -1):
        mask, w, r_next = (pre[l - 1] > 0).to(dtype), weights[l], resid.get(l + 1)  # w: layer l+1, (R, C', C)
        gram_above = grams.get(l + 1)
        if subset is not None and l < cut:
            mask, w = mask[subset], w[subset]
            if l == min(cut, depth) - 1:  # the first layer below the cut: what is carried down, too
                r_next = None if r_next is None else r_next[subset]
                gram_above = None if gram_above is None else gram_above[subset]
                if not sliced:
                    f, factor, above = (None if t is None else t[subset] for t in (f, factor, above))
                    sliced = True
        if l in errors:
            resid[l] = errors[l] if subset is None or l >= cut else errors[l][subset]
        elif r_next is not None:
            resid[l] = torch.bmm(r_next, w) * mask
        r, n, c = mask.shape
        chosen = list(diagonals.get(l, ()))
        if l == depth - 1:  # F_{L-1}[n] = F D_{L-1}[n]: its Gram and column norms without forming it
            factor = output_factor(w)
            if chosen:
                norms = factor.square().sum(1)  # ||W_L[:, alpha]||^2, (R, C)
                diags[l] = norms[:, None, chosen] * mask[..., chosen]
            if l in full:
                wide = factor.double()
                product = (wide.transpose(1, 2) @ wide)[:, None]  # W_L^T W_L, (R, 1, C, C)
                grams[l] = product * mask[..., :, None] * mask[..., None, :]
            above = mask
            continue
        from_above = bool(chosen) and l not in full and gram_above is not None
        if from_above:  # Gram_l[a, a] = D_l[a] W_{l+1}[:, a]^T Gram_{l+1} W_{l+1}[:, a]: no factor needed
            # as one product per round: the flat Gram by the flat outer products W[:, a] W[:, a]^T
            c_above, w_chosen = gram_above.shape[-1], w[..., chosen].double()
            outer = (w_chosen[:, :, None, :] * w_chosen[:, None, :, :]).reshape(r, c_above * c_above, -1)
            diags[l] = torch.bmm(gram_above.reshape(r, n, c_above * c_above), outer) * mask[..., chosen]
            if l == lowest:
                continue
            if subset is not None and l - 1 < cut and not sliced:  # F_l serves the strided rounds below only
                f, factor, above = (None if t is None else t[subset] for t in (f, factor, above))
                mask, w, sliced = mask[subset], w[subset], True
                r = mask.shape[0]
        narrowed = l == lowest and l not in full and bool(chosen)  # nothing below reads F_l: its
        if narrowed:  # neurons' columns alone
            w, mask, c = w[..., chosen], mask[..., chosen], len(chosen)
        if f is None:  # F_l = F (D_{L-1} W_{L-1}) D_l: D_{L-1} W_{L-1} laid out (R, C_{L-1}, N, C_l)
            c_above = w.shape[1]
            # the masked rows as outer products (one batched product with a single term each:
            # exact, and on the CPU about twice as fast as the broadcast multiplication)
            masked = torch.bmm(above.transpose(1, 2).reshape(r * c_above, n, 1), w.reshape(r * c_above, 1, c))
            f = torch.bmm(factor, masked.view(r, c_above, n * c)).view(r, -1, n, c)
        else:
            rows = f.shape[1]
            f = torch.bmm(f.view(r, rows * n, -1), w).view(r, rows, n, c)
        f.mul_(mask[:, None])  # D_l
        if l in full:
            per_sample = f.permute(0, 2, 1, 3).reshape(r * n, -1, c).double()  # (R N, rows, C)
            grams[l] = torch.bmm(per_sample.transpose(1, 2), per_sample).view(r, n, c, c)
            if chosen:
                diags[l] = grams[l].diagonal(dim1=2, dim2=3)[..., chosen]
        elif chosen and not from_above:
            norms = column_square_norms(f)
            diags[l] = norms if narrowed else norms[..., chosen]  # (R, N, m)
        above = mask
    return grams, diags, resid
