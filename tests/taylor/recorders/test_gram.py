"""The Gram algebra of the MSE statistics against plain products."""

from __future__ import annotations

import pytest
import torch

from ntaylor_lib.taylor.recorders import gram


@pytest.mark.parametrize("rows", [1, 5, 70])  # the fused loop, and the two passes above 64 rows
def test_column_square_norms(rows):
    f = torch.randn(3, rows, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(gram.column_square_norms(f), (f * f).sum(1))
