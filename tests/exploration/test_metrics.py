"""Exploration metrics (Figure 5) against their slow NumPy references, and Observation 3's helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntaylor_lib.exploration import metrics as ex
from ntaylor_lib.exploration.configurations import pack_bits
from ntaylor_lib.exploration.signed_gradient import cosine, signed_gradient, step_cosines

# (N checkpoints, D probes, M units): N = 1 and 2, M not a multiple of 8, D < N
# (the D x D Gram route), and one with more than one block of 64-bit words.
SHAPES = [(1, 5, 9), (2, 7, 13), (2, 1, 1), (6, 9, 20), (12, 4, 17), (9, 30, 64), (3, 200, 700)]


def random_configs(shape, seed):
    """Random configurations with per-unit activity rates, plus a unit that never changes."""
    rng = np.random.default_rng(seed)
    n, d, m = shape
    configs = rng.random(shape) < rng.random((1, 1, m))
    configs[:, :, 0] = configs[0, :, 0]
    return configs


def assert_metrics_match(configs, **volume):
    n, d, m = configs.shape
    packed = pack_bits(configs)
    np.testing.assert_array_equal(ex.novelty(packed, m), ex.novelty_reference(configs))
    np.testing.assert_allclose(ex.switches(packed, m), ex.switches_reference(configs), rtol=1e-12)
    np.testing.assert_allclose(
        ex.log_volume(packed, m, **volume), ex.log_volume_reference(configs, **volume), rtol=1e-9, atol=1e-8
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_metrics_equal_references_on_random_configurations(shape):
    assert_metrics_match(random_configs(shape, seed=sum(shape)))


def drifting_configs(n, d, m, seed):
    """Configurations as training makes them: each unit flips on a few probes per checkpoint,
    at a rate of its own (some never), so units change on anywhere from 0 to all probes."""
    rng = np.random.default_rng(seed)
    rate = rng.choice([0.0, 1e-4, 1e-3, 1e-2, 0.3], size=m)
    flips = rng.random((n - 1, d, m)) < rate
    start = rng.random((1, d, m)) < 0.5
    return np.concatenate([start, start ^ np.cumsum(flips, axis=0).astype(bool) % 2], axis=0).astype(bool)


@pytest.mark.parametrize("shape", [(40, 300, 50), (12, 64, 33)])
def test_volume_restricted_to_changing_probes_equals_reference(shape):
    """Units changing on few probes get small Grams (every size bucket); the volumes still match."""
    configs = drifting_configs(*shape, seed=3)
    changing = ex.changing_probes(pack_bits(configs), shape[2])
    np.testing.assert_array_equal(changing, (configs.max(0) != configs.min(0)).sum(0))
    assert changing.min() == 0 and changing.max() >= shape[0] and ((changing > 0) & (changing < shape[0] // 2)).any()
    assert_metrics_match(configs)
    assert_metrics_match(configs, values=5, floor=1e-2)


@pytest.mark.parametrize("fill", [False, True])
def test_all_zero_and_all_one_configurations(fill):
    configs = np.full((5, 6, 11), fill)
    assert_metrics_match(configs)
    packed = pack_bits(configs)
    assert np.isnan(ex.novelty(packed, 11)[0]) and (ex.novelty(packed, 11)[1:] == 0).all()
    assert (ex.switches(packed, 11) == 0).all()
    # nothing varies: every singular value is floored, k = min(50, N - 1, D) = 4 terms
    np.testing.assert_allclose(ex.log_volume(packed, 11, floor=1e-2), 4 * np.log(1e-2))


def test_single_checkpoint_is_nan_by_definition():
    packed = pack_bits(random_configs((1, 4, 10), 0))
    assert np.isnan(ex.novelty(packed, 10)).all()
    assert np.isnan(ex.switches(packed, 10)).all() and ex.switches(packed, 10).shape == (4,)
    assert np.isnan(ex.log_volume(packed, 10)).all() and ex.log_volume(packed, 10).shape == (10,)


def test_volume_options_chunking_and_subsampling():
    configs = random_configs((15, 12, 40), 3)
    assert_metrics_match(configs, values=5, floor=0.5)
    packed = pack_bits(configs)
    whole = ex.log_volume(packed, 40, sort=False)
    np.testing.assert_allclose(ex.log_volume(packed, 40, sort=False, chunk_entries=500), whole, rtol=1e-12)
    chosen = ex.subsample_units(40, 7, seed=1)
    assert len(set(chosen)) == 7 and (np.diff(chosen) > 0).all()
    np.testing.assert_array_equal(chosen, ex.subsample_units(40, 7, seed=1))
    np.testing.assert_allclose(
        ex.log_volume(packed, 40, sample=7, seed=1), ex.log_volume_reference(configs, unit_index=chosen), rtol=1e-9
    )
    np.testing.assert_allclose(ex.log_volume(packed, 40, sample=7, seed=1, sort=False), whole[chosen], rtol=1e-12)
    assert len(ex.subsample_units(40, 0)) == 40 and len(ex.subsample_units(40, 99)) == 40


def test_hamming_matrix_counts_differing_entries():
    configs = random_configs((4, 200, 700), 5)  # more than one block of words
    brute = np.array([[(a != b).sum() for b in configs] for a in configs])
    np.testing.assert_array_equal(ex.hamming_matrix(pack_bits(configs)), brute)


def test_one_switch_gives_the_documented_volume_and_rates():
    configs = np.zeros((4, 3, 2), dtype=bool)
    configs[2:, 1, 1] = True  # unit 1 switches on at checkpoint 2, for probe 1 only
    packed = pack_bits(configs)
    np.testing.assert_allclose(ex.novelty(packed, 2), [np.nan, 0, 1 / 6, 0])
    np.testing.assert_allclose(ex.switches(packed, 2), [1 / 6, 0, 0])
    # column (0, 0, 1, 1) centred: one singular value 1; k = min(50, 3, 3) = 3, two floored
    np.testing.assert_allclose(ex.log_volume(packed, 2, floor=1e-3), [2 * np.log(1e-3), 3 * np.log(1e-3)])


def test_exploration_metrics_reads_a_runs_arrays():
    configs = random_configs((6, 8, 19), 2)
    arrays = {
        "configurations/packed": pack_bits(configs),
        "configurations/units": np.array(19),
        "configurations/epoch": np.array([0, 0.5, 1, 1.5, 2, 3]),
        "configurations/epoch_end": np.array([True, False, True, False, True, True]),
    }
    out = ex.exploration_metrics(arrays, volume_units=5, seed=4)
    ends = configs[arrays["configurations/epoch_end"]]
    np.testing.assert_array_equal(out["novelty"], ex.novelty_reference(ends))
    np.testing.assert_array_equal(out["epoch"], [0, 1, 2, 3])
    np.testing.assert_allclose(out["switches"], ex.switches_reference(ends))
    np.testing.assert_allclose(out["volume"], ex.log_volume_reference(ends, unit_index=out["volume_units"]))
    assert len(ex.exploration_metrics(arrays, checkpoints="all")["novelty"]) == 6
    with pytest.raises(ValueError, match="checkpoints"):
        ex.exploration_metrics(arrays, checkpoints="epochs")


def test_signed_gradient_maximises_the_inner_product_over_the_infinity_ball():
    g = torch.randn(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    best = float(g @ signed_gradient(g))
    assert best == pytest.approx(float(g.abs().sum()))
    others = torch.rand(2000, 50, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1
    assert float((others @ g).max()) < best
    corners = torch.sign(torch.randn(2000, 50, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    assert float((corners @ g).max()) < best


def test_step_cosines():
    g = torch.tensor([3.0, -1.0, 0.5, 0.0])
    sgd = step_cosines(-0.1 * g, g)
    assert sgd["grad"] == pytest.approx(1.0)
    # ||g||_1 / (||g||_2 sqrt(3 nonzero))
    assert sgd["sign"] == pytest.approx(float(g.abs().sum() / (g.norm() * 3**0.5)))
    assert sgd["agreement"] == 1.0
    signed = step_cosines(-signed_gradient(g), g)
    assert signed["sign"] == pytest.approx(1.0)
    assert np.isnan(cosine(torch.zeros(3), torch.ones(3)))


def test_exploration_summary_means_and_median():
    from ntaylor_lib.exploration.metrics import exploration_summary

    summary = exploration_summary({"novelty": np.array([np.nan, 0.1, 0.3]), "switches": np.array([0.2, 0.0]),
                                   "volume": np.array([5.0, 1.0, -300.0])})
    assert summary == {"novelty": 0.2, "switches": 0.1, "volume": 1.0}
    assert np.isnan(exploration_summary({"novelty": np.array([np.nan]), "switches": np.full(3, np.nan),
                                         "volume": np.full(2, np.nan)})["novelty"])
