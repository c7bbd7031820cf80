"""Training and the run store: determinism, exact resume, store hits, divergence, manifests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntaylor_lib.runs import store as store_module
from ntaylor_lib.runs.config import run_config
from ntaylor_lib.runs.recorder import Recorder
from ntaylor_lib.runs.store import RunStore, run_key
from ntaylor_lib.runs.training import train
from tests.interrupt import Interrupt


class CountRounds(Recorder):
    """Counts rounds and sums the first weight, so resume must restore recorder state exactly."""

    name = "count"

    def __init__(self):
        self.rounds, self.total = 0, 0.0

    def on_round(self, n, model, x, y):
        self.rounds += 1
        self.total += float(next(model.parameters()).detach().sum())

    def state_dict(self):
        return {"rounds": self.rounds, "total": self.total}

    def load_state_dict(self, state):
        self.rounds, self.total = state["rounds"], state["total"]

    def arrays(self):
        return {"rounds": np.array(self.rounds), "total": np.array(self.total)}


@pytest.mark.parametrize("task", ["autoencoder", "convnet"])
def test_same_seed_gives_identical_losses(mnist_root, tiny_params, task):
    config = run_config(tiny_params, task, "adam", tiny_params[f"lr_{task}_adam"])
    first, second = train(config, progress=False), train(config, progress=False)
    assert first.history.round_loss == second.history.round_loss
    assert first.history.evals == second.history.evals
    other = train(run_config({**tiny_params, "seed": 1}, task, "adam", tiny_params[f"lr_{task}_adam"]), progress=False)
    assert other.history.round_loss != first.history.round_loss


@pytest.mark.parametrize("task,optimizer", [("autoencoder", "rmsprop"), ("convnet", "sgd")])
def test_resume_equals_uninterrupted(mnist_root, tiny_params, tmp_path, task, optimizer):
    config = run_config(tiny_params, task, optimizer, tiny_params[f"lr_{task}_{optimizer}"])
    rounds_per_epoch = tiny_params["train_size"] // config.batch_size
    whole = RunStore(tmp_path / "a").get(config, recorders=[Interrupt(None), CountRounds()], progress=False)

    interrupted = RunStore(tmp_path / "b")
    recorders = [Interrupt(rounds_per_epoch + 2), CountRounds()]  # mid-way through epoch 2
    with pytest.raises(KeyboardInterrupt):
        interrupted.get(config, recorders=recorders, progress=False)
    key = run_key(config, recorders)
    assert interrupted.load(key) is None and (interrupted.run_dir(key) / "checkpoint.pt").is_file()
    resumed = interrupted.get(config, recorders=[Interrupt(None), CountRounds()], progress=False)

    assert resumed.manifest["resumed_from_epoch"] == 1
    assert not (resumed.path / "checkpoint.pt").exists()
    for name in ("round_loss", "epoch_train_loss", "epoch_test_loss", "count/rounds", "count/total"):
        np.testing.assert_array_equal(resumed.arrays[name], whole.arrays[name], err_msg=name)
    for name, tensor in whole.model_state().items():
        assert torch.equal(tensor, resumed.model_state()[name]), name


def test_store_hit_trains_nothing(mnist_root, tiny_params, tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    config = run_config(tiny_params, "autoencoder", "sgd", tiny_params["lr_autoencoder_sgd"])
    first = store.get(config, profile="smoke", progress=False)

    def no_training(*args, **kwargs):
        raise AssertionError("a stored run was trained again")

    monkeypatch.setattr(store_module, "train", no_training)
    again = store.get(config, progress=False)
    assert again.key == first.key
    np.testing.assert_array_equal(again.round_loss, first.round_loss)
    # A different configuration is a different key, and would train.
    with pytest.raises(AssertionError, match="trained again"):
        store.get(run_config(tiny_params, "autoencoder", "sgd", lr=0.01), progress=False)


def test_manifest_says_how_the_run_was_made(mnist_root, tiny_params, tmp_path):
    config = run_config(tiny_params, "convnet", "rmsprop", tiny_params["lr_convnet_rmsprop"])
    run = RunStore(tmp_path).get(config, profile="smoke", progress=False)
    m = run.manifest
    assert m["profile"] == "smoke" and m["seed"] == config.seed and m["status"] == "complete"
    assert m["config"]["settings"] == {"decay": 0.9, "eps": 1e-10}
    for field in ("torch", "numpy", "ntaylor_lib", "device_name", "git_commit"):
        assert m["environment"][field]
    assert run.config == config
    table = run.epoch_table()
    assert [row["epoch"] for row in table] == list(range(config.epochs + 1))
    assert all(0.0 <= row["train_accuracy"] <= 1.0 for row in table)
    assert len(run.round_loss) == config.epochs * (config.train_size // config.batch_size)
    assert m["rounds"] == len(run.round_loss)


def test_divergence_is_a_result_not_a_crash(mnist_root, tiny_params, tmp_path):
    config = run_config(tiny_params, "autoencoder", "sgd", lr=1e6)
    run = RunStore(tmp_path).get(config, progress=False)
    assert run.status == "diverged"
    assert np.isfinite(run.round_loss).all()
    assert len(run.round_loss) < config.epochs * (config.train_size // config.batch_size)


def test_recorders_see_weights_before_each_step(mnist_root, tiny_params):
    """Round n's hook sees theta^n: the loss it computes equals the incurred loss L_n."""
    from ntaylor_lib.runs.losses import batch_loss

    class Loss(Recorder):
        def __init__(self):
            self.seen = []

        def on_round(self, n, model, x, y):
            with torch.no_grad():
                self.seen.append(float(batch_loss("autoencoder", model(x), y)))

    rec = Loss()
    result = train(run_config(tiny_params, "autoencoder", "adam", tiny_params["lr_autoencoder_adam"]),
                   recorders=[rec], progress=False)
    np.testing.assert_allclose(rec.seen, result.history.round_loss, rtol=1e-6)


def test_training_flushes_subnormal_numbers_and_restores_the_default_afterwards(mnist_root, tiny_params):
    """Inside ``train`` a float32 product below 1.2e-38 is zero (Adam's second moments fill with such
    numbers, which cost the CPU many cycles each); outside it, PyTorch's default keeps them."""
    tiny = torch.tensor(1e-30, dtype=torch.float32)

    class Probe(Recorder):
        products: list[float] = []

        def on_round(self, n, model, x, y):
            self.products.append(float(tiny * torch.tensor(1e-9)))  # 1e-39: subnormal in float32

    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush subnormal numbers")
    before = float(tiny * torch.tensor(1e-9))
    train(run_config(tiny_params, "autoencoder", "adam", tiny_params["lr_autoencoder_adam"]), recorders=[Probe()],
          progress=False)
    assert before > 0 and Probe.products and all(p == 0.0 for p in Probe.products)
    assert float(tiny * torch.tensor(1e-9)) == before


@pytest.mark.parametrize("task", ["autoencoder", "convnet"])
def test_a_tracing_recorder_leaves_the_steps_unchanged(mnist_root, tiny_params, task):
    """With a recorder that asks for the trace, the loop runs ReluNet.trace and keeps the
    pre-activations' gradients: the same operations, so the same losses and weights, bit for bit;
    and the gradients it hands over are those of the incurred loss."""
    from ntaylor_lib.runs.losses import batch_loss

    class Tracer(Recorder):
        uses_trace = True

        def __init__(self):
            self.checked = 0

        def on_round(self, n, model, x, y):
            self.model, self.x, self.y = model, x, y

        def on_backward(self, n, trace, grads, y, loss):
            if self.checked < 2:  # the loss and its gradient by the output, against a fresh pass
                with torch.enable_grad():
                    f = self.model(self.x).detach().requires_grad_()
                    fresh = batch_loss(task, f, self.y)
                    expected = torch.autograd.grad(fresh, f)[0]
                torch.testing.assert_close(grads[-1], expected)
                assert torch.equal(loss, fresh.detach()) and not loss.requires_grad
                assert all(not t.requires_grad for t in trace.pre + trace.inputs)
                self.checked += 1

    config = run_config(tiny_params, task, "adam", tiny_params[f"lr_{task}_adam"])
    plain, tracer = train(config, progress=False), Tracer()
    traced = train(config, recorders=[tracer], progress=False)
    assert tracer.checked == 2
    assert traced.history.round_loss == plain.history.round_loss
    for (name, a), b in zip(plain.model.state_dict().items(), traced.model.state_dict().values()):
        assert torch.equal(a, b), name


class _Pickled:
    """Stands for a class a checkpoint of an older library version pickled (its module path is gone)."""


@pytest.mark.parametrize("content", ["pickled class", "garbage", "empty"])
def test_an_unreadable_checkpoint_is_set_aside_and_the_run_trained_from_its_start(mnist_root, tiny_params, tmp_path,
                                                                                 capsys, content):
    """Checkpoints load with ``weights_only=True``: one that holds a pickled class (as those of earlier
    versions did), or is cut off, never runs code and never blocks the run: it is a cache, set aside
    with a note, and the run trains from its start to the numbers of an uninterrupted run."""
    config = run_config(tiny_params, "autoencoder", "sgd", tiny_params["lr_autoencoder_sgd"])
    whole = RunStore(tmp_path / "a").get(config, recorders=[CountRounds()], progress=False)
    store = RunStore(tmp_path / "b")
    key = run_key(config, [CountRounds()])
    checkpoint = store.run_dir(key) / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    if content == "pickled class":
        torch.save({"epoch": 1, "history": _Pickled()}, checkpoint)
    else:
        checkpoint.write_bytes(b"\x80\x02garbage" if content == "garbage" else b"")
    run = store.get(config, recorders=[CountRounds()], progress=False)
    assert "cannot be resumed from" in capsys.readouterr().err
    assert run.manifest["resumed_from_epoch"] is None and not checkpoint.exists()
    for name in ("round_loss", "count/rounds", "count/total"):
        np.testing.assert_array_equal(run.arrays[name], whole.arrays[name], err_msg=name)
