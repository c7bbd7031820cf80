"""The Gram algebra of the MSE statistics against plain products."""

from __future__ import annotations

import pytest
import torch

from ntaylor_lib.taylor.recorders import gram


@pytest.mark.parametrize("rows", [1, 5, 70])  # the fused loop, and the two passes above 64 rows
def test_column_square_norms(rows):
    f = torch.randn(3, rows, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(gram.column_square_norms(f), (f * f).sum(1))


def test_weighted_grams_equal_the_dense_products():
    """Rows with zero weight and columns that are zero everywhere are skipped: the sums must not change."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 9, generator=g)
    x[:, [2, 7]] = 0  # pixels never lit
    x[x < 0.3] = 0  # sparse rows, as MNIST's
    w = torch.rand(200, 4, generator=g)
    w[w < 0.4] = 0  # the neuron is off on these samples
    w[:, 3] = 0  # and one never fires
    xd, wd = x.double(), w.double()
    reference = torch.einsum("nj,nq,nr->jqr", wd, xd, xd)
    h = gram.weighted_grams(x, w)
    assert h.dtype == torch.float64 and h.shape == (4, 9, 9)
    torch.testing.assert_close(h, reference, rtol=1e-12, atol=0)
    for block_rows in (1, 7, 64):  # the rows in blocks (the last one short), through reused workspaces
        torch.testing.assert_close(gram.weighted_grams(x, w, block_rows=block_rows), reference, rtol=1e-12, atol=0)
