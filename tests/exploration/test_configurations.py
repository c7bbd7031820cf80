"""Activation configurations: packing, Definition 2 against a hand-written forward pass, the recorders."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ntaylor_lib.exploration.configurations import (
    ConfigurationRecorder,
    activation_configuration,
    layer_unit_counts,
    pack_bits,
    packed_configuration,
    unpack_bits,
)
from ntaylor_lib.exploration.signed_gradient import SignedGradientRecorder
from ntaylor_lib.runs.config import run_config
from ntaylor_lib.runs.data import task_data
from ntaylor_lib.runs.models import autoencoder, build_model, convnet, relu_unit_count
from ntaylor_lib.runs.recorder import Recorder
from ntaylor_lib.runs.store import RunStore, run_key
from ntaylor_lib.runs.training import train
from tests.interrupt import Interrupt


@pytest.mark.parametrize("units", [1, 7, 8, 9, 180])
def test_packing_round_trips_and_matches_numpy(units):
    bits = np.random.default_rng(units).random((3, 5, units)) < 0.5
    packed = pack_bits(bits)
    assert packed.shape == (3, 5, (units + 7) // 8) and packed.dtype == np.uint8
    np.testing.assert_array_equal(packed, np.packbits(bits, axis=-1))
    from_torch = pack_bits(torch.from_numpy(bits))
    assert isinstance(from_torch, torch.Tensor) and from_torch.dtype == torch.uint8
    np.testing.assert_array_equal(from_torch.numpy(), packed)
    np.testing.assert_array_equal(unpack_bits(packed, units), bits)
    np.testing.assert_array_equal(unpack_bits(from_torch, units), bits)
    with pytest.raises(ValueError, match="bytes per row"):
        unpack_bits(packed, units + 8)


def hand_masks(model, x):
    """``a > 0`` of every hidden layer, from the layers' weights with torch.nn.functional only."""
    masks, last = [], len(model.layers) - 1
    for l, layer in enumerate(model.layers):
        if isinstance(layer, nn.Linear):
            a = x.flatten(1) @ layer.weight.T + layer.bias
        else:
            a = F.conv2d(x, layer.weight, layer.bias, padding=layer.padding)
        if l == last:
            break
        masks.append((a > 0).flatten(1))
        x = F.relu(a)
        if model.pool[l]:
            x = F.max_pool2d(x, 2)
    return torch.cat(masks, 1)


@pytest.mark.parametrize("make,shape", [(autoencoder, (784,)), (lambda: convnet(1, 28, width=3), (1, 28, 28))])
def test_configuration_is_every_relu_unit_in_layer_order(make, shape):
    torch.manual_seed(0)
    model, x = make(), torch.randn(37, *shape)
    config = activation_configuration(model, x, chunk=10)
    assert config.dtype == torch.bool and config.shape == (37, relu_unit_count(model, x))
    with torch.no_grad():
        assert torch.equal(config, hand_masks(model, x))
    assert sum(layer_unit_counts(model, x)) == config.shape[1]
    np.testing.assert_array_equal(packed_configuration(model, x, chunk=16), np.packbits(config.numpy(), axis=-1))


class Snapshots(Recorder):
    """Keeps copies of the model at chosen rounds and epoch ends, to check recorders against."""

    name = "snapshots"

    def __init__(self, rounds):
        self.rounds, self.models = set(rounds), {}

    def on_round(self, n, model, x, y):
        if n in self.rounds:
            self.models[("round", n)] = copy.deepcopy(model)

    def on_epoch_end(self, epoch, model):
        self.models[("epoch", epoch)] = copy.deepcopy(model)


def test_recorder_matches_direct_forward_passes(mnist_root, tiny_params):
    config = run_config(tiny_params, "convnet", "adam", tiny_params["lr_convnet_adam"])
    data = task_data("convnet", "mnist", config.train_size, config.eval_size, config.probe_size)
    rounds_per_epoch = config.train_size // config.batch_size  # 4
    recorder, snapshots = ConfigurationRecorder(round_stride=3), Snapshots([3, 6, 9])
    result = train(config, recorders=[snapshots, recorder], data=data, progress=False)
    arrays = recorder.arrays()

    expected_rounds = [0, 3, 4, 6, 8, 9, 12]  # 3 epochs of 4 rounds; 12 = 3 * 4 is an epoch end
    np.testing.assert_array_equal(arrays["round"], expected_rounds)
    np.testing.assert_array_equal(arrays["epoch_end"], [n % rounds_per_epoch == 0 for n in expected_rounds])
    np.testing.assert_allclose(arrays["epoch"], np.array(expected_rounds) / rounds_per_epoch)
    units = relu_unit_count(result.model, data.probe_x)
    assert int(arrays["units"]) == units and int(arrays["probes"]) == config.probe_size
    assert arrays["packed"].shape == (7, config.probe_size, (units + 7) // 8)
    np.testing.assert_array_equal(arrays["layer_units"], layer_unit_counts(result.model, data.probe_x))
    for i, n in enumerate(expected_rounds):
        key = ("epoch", n // rounds_per_epoch) if n % rounds_per_epoch == 0 else ("round", n)
        model = snapshots.models[key]
        with torch.no_grad():
            direct = hand_masks(model, data.probe_x)
        np.testing.assert_array_equal(unpack_bits(arrays["packed"][i], units), direct.numpy(), err_msg=str(key))
    torch.manual_seed(config.seed)  # epoch 0 is the initial network
    initial = build_model("convnet", "mnist", config.width)
    np.testing.assert_array_equal(arrays["packed"][0], packed_configuration(initial, data.probe_x))


def test_recorders_resume_exactly_and_leave_training_alone(mnist_root, tiny_params, tmp_path):
    config = run_config(tiny_params, "autoencoder", "rmsprop", tiny_params["lr_autoencoder_rmsprop"])
    recorders = lambda stop: [Interrupt(stop), ConfigurationRecorder(round_stride=3), SignedGradientRecorder(2)]  # noqa: E731
    whole = RunStore(tmp_path / "a").get(config, recorders=recorders(None), progress=False)
    store = RunStore(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        store.get(config, recorders=recorders(10), progress=False)  # mid-way through epoch 2 (8 rounds each)
    assert store.load(run_key(config, recorders(None))) is None
    resumed = store.get(config, recorders=recorders(None), progress=False)
    assert resumed.manifest["resumed_from_epoch"] == 1
    names = [k for k in whole.arrays if k.startswith(("configurations/", "signed_gradient/"))]
    assert len(names) == 13
    for name in names:
        np.testing.assert_array_equal(resumed.arrays[name], whole.arrays[name], err_msg=name)
    # the recorders change no number of the training itself
    plain = train(config, progress=False)
    np.testing.assert_array_equal(whole.round_loss, plain.history.round_loss)
    np.testing.assert_array_equal(whole.arrays["signed_gradient/round"], np.arange(0, 24, 2))


def test_sgd_steps_are_the_negative_gradient(mnist_root, tiny_params):
    config = run_config({**tiny_params, "epochs": 1}, "convnet", "sgd", tiny_params["lr_convnet_sgd"])
    recorder = SignedGradientRecorder(round_stride=1)
    train(config, recorders=[recorder], progress=False)
    arrays = recorder.arrays()
    np.testing.assert_array_equal(arrays["round"], np.arange(4))
    np.testing.assert_allclose(arrays["cos_grad"], 1.0, atol=1e-5)
    np.testing.assert_allclose(arrays["layer_cos_grad"], 1.0, atol=1e-5)
    assert arrays["layer_cos_sign"].shape == (4, 5) and (arrays["cos_sign"] < 0.99).all()
    assert (arrays["agreement"] > 0.999).all()
