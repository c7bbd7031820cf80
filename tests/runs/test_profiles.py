"""Profiles: parsed once into a typed, read-only object.

Every bad value fails before training, naming the valid choices.
"""

from __future__ import annotations

import math

import pytest

from ntaylor_lib.runs.config import run_config
from ntaylor_lib.runs.profiles import (
    LIST_PARAMETERS,
    PROFILE_NAMES,
    ParameterError,
    get_profile,
    parameter_names,
    parse_assignments,
)


def test_profiles_exist_and_overrides_are_typed():
    for name in PROFILE_NAMES:
        params = get_profile(name)
        assert params.name == name and dict(params.overrides) == {}
        assert set(params) == set(parameter_names(name))  # the bookkeeping is apart from the parameters
    params = get_profile("smoke", {"epochs": "3", "lr_convnet_sgd": "0.5", "convnet_dataset": "mnist"})
    assert params["epochs"] == 3 and params["lr_convnet_sgd"] == 0.5
    assert dict(params.overrides) == {"epochs": 3, "lr_convnet_sgd": 0.5, "convnet_dataset": "mnist"}
    with pytest.raises(TypeError):
        params["epochs"] = 4  # read-only: a page cannot silently change its profile
    with pytest.raises(AttributeError):
        params.name = "paper"


def test_list_parameters_are_parsed_once_into_tuples():
    params = get_profile("smoke", {"taylor_box_scales": "1, 2,inf", "taylor_replay_layers": "",
                                   "exploration_sgd_rates": [0.5]})
    assert params["taylor_box_scales"] == (1.0, 2.0, math.inf)
    assert params["taylor_replay_layers"] == ()
    assert params["exploration_sgd_rates"] == (0.5,)
    assert params["tuning_rates_sgd"] == (0.01, 0.05) and all(isinstance(r, float) for r in params["tuning_rates_sgd"])
    for name in PROFILE_NAMES:  # every list parameter of every profile is a tuple of its element type
        for key, kind in LIST_PARAMETERS.items():
            value = get_profile(name)[key]
            assert isinstance(value, tuple) and all(type(v) is kind for v in value), (name, key)
    assert get_profile("smoke", {"taylor_replay_layers": "2.0,3"})["taylor_replay_layers"] == (2, 3)
    assert params.to_dict()["taylor_box_scales"] == [1.0, 2.0, math.inf]


@pytest.mark.parametrize(
    "name,overrides,message",
    [
        ("laptop", {}, "valid profiles: smoke, cpu, paper"),
        ("smoke", {"epoch": 2}, "valid parameters:.*epochs"),
        ("smoke", {"lr_autoencoder_adam": 0}, "must be > 0"),
        ("smoke", {"lr_convnet_sgd": -0.1}, "must be > 0"),
        ("smoke", {"batch_convnet": 0}, "must be >= 1"),
        ("smoke", {"epochs": 0}, "epochs=0 must be >= 1"),
        ("smoke", {"epochs": "two"}, "needs a int"),
        ("smoke", {"convnet_dataset": "svhn"}, "mnist, cifar10"),
        ("smoke", {"device": "tpu"}, "auto, cpu, cuda"),
        ("smoke", {"taylor_box_scales": "1,-2"}, "must be > 0"),
        ("smoke", {"taylor_round_stride": 0}, "must be >= 1"),
        ("smoke", {"exploration_sgd_rates": "fast"}, "comma-separated"),
        ("smoke", {"taylor_replay_layers": "2.5"}, "comma-separated ints"),
        ("smoke", {"taylor_replay_layers": "6"}, "among 1..5"),
        ("smoke", {"tuning_rates_adam": ""}, "at least one rate"),
        ("smoke", {"tuning_rates_sgd": "0.1,0.1"}, "lists a rate twice"),
    ],
)
def test_bad_parameters_list_valid_choices(name, overrides, message):
    with pytest.raises(ParameterError, match=message):
        get_profile(name, overrides)


def test_unknown_optimizer_and_missing_cifar(tmp_path, monkeypatch):
    params = get_profile("smoke")
    with pytest.raises(ParameterError, match="sgd, rmsprop, adam"):
        run_config(params, "autoencoder", "adagrad", 0.1)
    with pytest.raises(ParameterError, match="autoencoder, convnet"):
        run_config(params, "gan", "sgd", 0.1)
    monkeypatch.setenv("NTAYLOR_DATA", str(tmp_path))
    with pytest.raises(ParameterError, match="cifar-10-batches-py"):
        run_config(get_profile("smoke", {"convnet_dataset": "cifar10"}), "convnet", "sgd", 0.1)


def test_parse_assignments():
    assert parse_assignments(["a=1", "b = x"]) == {"a": "1", "b": "x"}
    with pytest.raises(ParameterError, match="key=value"):
        parse_assignments(["novalue"])
