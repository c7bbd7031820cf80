"""The optimizers beyond the paper's three: their updates as defined, their settings checked like the others."""

from __future__ import annotations

import math

import pytest
import torch

from ntaylor_lib.runs.optimizers import NOISE_GAMMA, OPTIMIZER_CLASSES, NoisySGD, SignSGD, build_optimizer
from ntaylor_lib.runs.profiles import ParameterError


def _param(values):
    p = torch.nn.Parameter(torch.tensor(values, dtype=torch.float64))
    p.grad = torch.tensor([0.5, -2.0, 0.0], dtype=torch.float64)
    return p


def test_signsgd_moves_every_coordinate_by_the_rate_against_its_gradient_sign():
    p = _param([1.0, 1.0, 1.0])
    SignSGD([p], lr=0.1).step()
    assert p.detach().tolist() == pytest.approx([0.9, 1.1, 1.0])


def test_noisy_sgd_adds_annealed_gaussian_noise_from_its_own_seed():
    p, q = _param([0.0, 0.0, 0.0]), _param([0.0, 0.0, 0.0])
    a, b = NoisySGD([p], lr=0.1, eta=0.3, seed=4), NoisySGD([q], lr=0.1, eta=0.3, seed=4)
    for _ in range(3):
        a.step()
        b.step()
    assert torch.equal(p, q)  # same seed, same noise
    g = torch.Generator().manual_seed(4)
    expected = torch.zeros(3, dtype=torch.float64)
    for t in range(3):
        sigma = math.sqrt(0.3 / (1 + t) ** NOISE_GAMMA)
        expected -= 0.1 * (torch.tensor([0.5, -2.0, 0.0], dtype=torch.float64)
                           + sigma * torch.randn(3, generator=g, dtype=torch.float64))
    torch.testing.assert_close(p.detach(), expected)
    zero = _param([0.0, 0.0, 0.0])
    NoisySGD([zero], lr=0.1, eta=0.0).step()  # no noise: plain SGD
    assert zero.detach().tolist() == pytest.approx([-0.05, 0.2, 0.0])


@pytest.mark.parametrize("name", list(OPTIMIZER_CLASSES))
def test_every_optimizer_builds_and_steps_downhill_on_a_quadratic(name):
    p = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
    opt = build_optimizer(name, [p], 0.05)
    before = float((p ** 2).sum())
    for _ in range(5):
        opt.zero_grad()
        (p ** 2).sum().backward()
        opt.step()
    assert float((p ** 2).sum()) < before


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "lion"}, "optimizer='lion' is not one of"),
    ({"lr": 0.0}, "lr=0.0 must be"),
    ({"lr": -1.0}, "lr=-1.0"),
    ({"lr": math.inf}, "lr=inf"),
    ({"lr": math.nan}, "lr=nan"),
    ({"lr": 1e308}, "at most"),
    ({"lr": True}, "lr=True"),
    ({"lr": "0.1"}, "lr='0.1'"),
    ({"noise": -0.1}, "noise=-0.1"),
    ({"noise": math.inf}, "noise=inf"),
    ({"name": "adam", "noise": 0.1}, "for sgd only"),
])
def test_bad_optimizer_settings_are_refused(kwargs, match):
    args = {"name": "sgd", "lr": 0.1, **kwargs}
    with pytest.raises(ParameterError, match=match):
        build_optimizer(args.pop("name"), [torch.nn.Parameter(torch.zeros(2))], **args)
