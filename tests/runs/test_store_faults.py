"""The run store under faults: damaged files are never served, interrupted work is redone, nothing
is left behind, and a process killed at any moment (during each atomic write too) resumes to the
numbers of an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ntaylor_lib.runs.config import run_config
from ntaylor_lib.runs.profiles import get_profile
from ntaylor_lib.runs.recorder import Recorder
from ntaylor_lib.runs.store import RunInterrupted, RunStore, StoreError, run_key
from tests.interrupt import Interrupt

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(tiny_params, mnist_root):
    return run_config(tiny_params, "autoencoder", "sgd", tiny_params["lr_autoencoder_sgd"])


@pytest.fixture
def stored(config, tmp_path):
    """A complete run in a store, and a second complete run (other seed) to swap files with."""
    store = RunStore(tmp_path / "store")
    run = store.get(config, progress=False)
    other = store.get(run_config(_params_with_seed(config, 1), "autoencoder", "sgd", config.lr), progress=False)
    return store, run, other


def _params_with_seed(config, seed):
    sizes = {k: getattr(config, k) for k in ("epochs", "train_size", "eval_size", "probe_size")}
    return get_profile("smoke", {**sizes, "seed": seed})


def _damage(run, how):
    folder = run.path
    if how == "empty manifest":
        (folder / "manifest.json").write_text("")
    elif how == "truncated manifest":
        text = (folder / "manifest.json").read_text()
        (folder / "manifest.json").write_text(text[: len(text) // 2])
    elif how == "manifest without status":
        manifest = json.loads((folder / "manifest.json").read_text())
        del manifest["status"]
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif how == "deleted model":
        (folder / "model.pt").unlink()
    elif how == "truncated model":
        data = (folder / "model.pt").read_bytes()
        (folder / "model.pt").write_bytes(data[: len(data) // 2])
    elif how == "garbled arrays":
        data = bytearray((folder / "arrays.npz").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / "arrays.npz").write_bytes(bytes(data))
    elif how == "truncated arrays":
        data = (folder / "arrays.npz").read_bytes()
        (folder / "arrays.npz").write_bytes(data[:100])


DAMAGE = ["empty manifest", "truncated manifest", "manifest without status", "deleted model", "truncated model",
          "garbled arrays", "truncated arrays"]


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_run_is_never_served_and_repair_trains_it_again(stored, config, how):
    store, run, _ = stored
    losses = run.round_loss.copy()
    _damage(run, how)
    fresh = RunStore(store.root)  # another process: nothing verified yet
    with pytest.raises(StoreError) as error:
        fresh.get(config, progress=False)
    message = str(error.value)
    assert run.key in message and str(run.path) in message and "--repair" in message and "\n" not in message
    with pytest.raises(StoreError):  # every later request says the same, it never serves the numbers
        RunStore(store.root).load(run.key)
    repaired = RunStore(store.root, repair=True).get(config, progress=False)
    np.testing.assert_array_equal(repaired.round_loss, losses)
    assert RunStore(store.root).load(run.key) is not None  # whole again


def test_another_runs_arrays_swapped_in_are_detected(stored, config):
    store, run, other = stored
    (run.path / "arrays.npz").write_bytes((other.path / "arrays.npz").read_bytes())
    with pytest.raises(StoreError, match="arrays.npz"):
        RunStore(store.root).get(config, progress=False)


def test_the_environment_turns_repair_on(stored, config, monkeypatch):
    store, run, _ = stored
    _damage(run, "deleted model")
    monkeypatch.setenv("NTAYLOR_REPAIR", "1")
    assert RunStore(store.root).get(config, progress=False).status == "complete"


def test_another_runs_checkpoint_is_not_resumed(config, tiny_params, tmp_path, capsys):
    """A checkpoint copied from another run would resume the wrong numbers: it is set aside."""
    rounds = tiny_params["train_size"] // config.batch_size
    store = RunStore(tmp_path)
    other = run_config(_params_with_seed(config, 1), "autoencoder", "sgd", config.lr)
    with pytest.raises(KeyboardInterrupt):
        store.get(other, recorders=[Interrupt(rounds + 1)], progress=False)
    planted = store.run_dir(run_key(other, [Interrupt()])) / "checkpoint.pt"
    target = store.run_dir(run_key(config, [Interrupt()])) / "checkpoint.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(planted.read_bytes())
    run = store.get(config, recorders=[Interrupt()], progress=False)
    assert "belongs to another run" in capsys.readouterr().err and run.manifest["resumed_from_epoch"] is None
    whole = RunStore(tmp_path / "whole").get(config, recorders=[Interrupt()], progress=False)
    np.testing.assert_array_equal(run.round_loss, whole.round_loss)


def test_ctrl_c_says_what_was_kept_and_how_to_resume(config, tiny_params, tmp_path):
    rounds = tiny_params["train_size"] // config.batch_size
    store = RunStore(tmp_path)
    with pytest.raises(RunInterrupted) as first:
        store.get(config, recorders=[Interrupt(2)], progress=False)  # before any epoch ended
    assert "kept nothing" in str(first.value) and not store.run_dir(run_key(config, [Interrupt()])).exists()
    with pytest.raises(RunInterrupted) as second:
        store.get(config, recorders=[Interrupt(rounds + 2)], progress=False)
    text = str(second.value)
    assert "after epoch 1" in text and "the same command resumes it" in text and "\n" not in text


class _Fails(Recorder):
    name = "fails"

    def setup(self, model, data, config):
        raise ValueError("a recorder that cannot start")


def test_an_error_after_the_lock_leaves_no_folder_behind(config, tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(ValueError, match="cannot start"):
        store.get(config, recorders=[_Fails()], progress=False)
    assert not store.run_dir(run_key(config, [_Fails()])).exists()


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_note(config, tiny_params, tmp_path, capsys):
    rounds = tiny_params["train_size"] // config.batch_size
    store = RunStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        store.get(config, recorders=[Interrupt(rounds + 1)], progress=False)
    folder = store.run_dir(run_key(config, [Interrupt()]))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / ".lock").write_text(dead.stdout.strip())
    (folder / f".arrays.npz.{dead.stdout.strip()}.tmp").write_bytes(b"half a file")
    run = store.get(config, recorders=[Interrupt()], progress=False)
    assert f"taking over from process {dead.stdout.strip()}" in capsys.readouterr().err
    assert run.manifest["resumed_from_epoch"] == 1 and not list(folder.glob(".*.tmp"))


KILLER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    from ntaylor_lib.runs import files
    from ntaylor_lib.runs.config import run_config
    from ntaylor_lib.runs.profiles import get_profile
    from ntaylor_lib.runs import store
    from ntaylor_lib.runs.store import RunStore

    target, nth = sys.argv[1], int(sys.argv[2])
    real, seen = files.os.replace, [0]

    def replace(src, dst):
        # die like kill -9 when the nth write of target is on disk under its temporary name
        if os.path.basename(dst) == target:
            seen[0] += 1
            if seen[0] == nth:
                os.kill(os.getpid(), 9)
        return real(src, dst)

    files.os.replace = replace
    store.CHECKPOINT_SPACING = 0.0  # a checkpoint every epoch: each write gets its turn to be killed in
    params = get_profile("smoke", {overrides!r})
    config = run_config(params, "autoencoder", "rmsprop", params["lr_autoencoder_rmsprop"])
    RunStore(sys.argv[3]).get(config, progress=False)
""")


@pytest.mark.parametrize("target,nth", [("checkpoint.pt", 1), ("checkpoint.pt", 2), ("arrays.npz", 1),
                                        ("model.pt", 1), ("manifest.json", 1)])
def test_killed_during_an_atomic_write_resumes_bit_identically(tiny_params, mnist_root, tmp_path, target, nth):
    overrides = {k: tiny_params[k] for k in ("epochs", "train_size", "eval_size", "probe_size")}
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(root=str(ROOT), overrides=overrides))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), target, str(nth), str(tmp_path / "a")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    store = RunStore(tmp_path / "a")
    config = run_config(tiny_params, "autoencoder", "rmsprop", tiny_params["lr_autoencoder_rmsprop"])
    folder = store.run_dir(run_key(config))
    assert list(folder.glob(".*.tmp")), "the kill left its temporary file"
    torch.set_num_threads(1)
    try:
        resumed = store.get(config, progress=False)
        whole = RunStore(tmp_path / "b").get(config, progress=False)
    finally:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    assert not list(folder.glob(".*.tmp")) and not (folder / "checkpoint.pt").exists()
    for name, value in whole.arrays.items():
        if name != "epoch_time":
            np.testing.assert_array_equal(resumed.arrays[name], value, err_msg=name)
    for name, tensor in whole.model_state().items():
        assert torch.equal(tensor, resumed.model_state()[name]), name


def test_two_processes_asking_for_one_run_train_it_once(tiny_params, mnist_root, tmp_path):
    """One trains under the lock; the other waits, then serves the stored run (it trains nothing)."""
    overrides = [f"--set={k}={tiny_params[k]}" for k in ("epochs", "train_size", "eval_size", "probe_size")]
    command = [sys.executable, "-m", "ntaylor_lib", "run", "--task", "autoencoder", "--optimizer", "adam",
               "--profile", "smoke", "--no-progress", "--results", str(tmp_path), *overrides]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    both = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    assert outputs[0][0] == outputs[1][0]  # the same run, the same numbers
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["resumed_from_epoch"] is None


def test_checkpoints_are_spaced_by_their_cost(config, tmp_path, monkeypatch):
    """A checkpoint that takes long to write waits CHECKPOINT_SPACING times as long before the next:
    a large recorder state no longer dominates the run. Resuming still gives the same numbers."""
    import ntaylor_lib.runs.store as store_module

    writes, real = [], store_module.atomic_save_torch
    now = [0.0]
    monkeypatch.setattr(store_module.time, "monotonic", lambda: now[0])

    def slow_save(obj, path):  # each checkpoint "takes" 1 s to write; each epoch of training 7 s
        if path.name == "checkpoint.pt":
            writes.append(obj["epoch"])
            now[0] += 1.0
        return real(obj, path)

    monkeypatch.setattr(store_module, "atomic_save_torch", slow_save)
    monkeypatch.setattr(store_module, "train", _clocked_train(store_module.train, now, 7.0))
    params = _params_with_seed(config, 0)
    long = run_config(get_profile("smoke", {**{k: params[k] for k in ("train_size", "eval_size", "probe_size")},
                                            "epochs": 8}), "autoencoder", "sgd", config.lr)
    run = RunStore(tmp_path).get(long, progress=False)
    assert writes == [1, 4, 7]  # 1 s to write: the next after 20 s of training (epochs of 7 s)
    whole = RunStore(tmp_path / "other").get(long, progress=False)
    np.testing.assert_array_equal(run.round_loss, whole.round_loss)


def _clocked_train(train, now, seconds_per_epoch):
    """``train`` with the fake clock advanced by each epoch, at the checkpoint call."""
    def clocked(config, checkpoint=None, **kwargs):
        def tick(state):
            now[0] += seconds_per_epoch
            return checkpoint(state)
        return train(config, checkpoint=tick if checkpoint else None, **kwargs)
    return clocked


def test_a_streamed_checkpoint_is_the_buffered_bytes_with_their_digest(tmp_path):
    """atomic_save_torch streams to disk (a paper-scale checkpoint is gigabytes): the file holds exactly
    what torch.save writes to a buffer, its manifest entry is that file's SHA-256 and size, it loads
    back, and no temporary file is left."""
    import io

    from ntaylor_lib.runs.files import atomic_save_torch, file_digest

    state = {"rows": [(torch.randn(300, 17), torch.arange(9))], "epoch": 3, "name": "x"}
    info = atomic_save_torch(state, tmp_path / "checkpoint.pt")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    assert (tmp_path / "checkpoint.pt").read_bytes() == buffer.getvalue()
    assert info == {"sha256": file_digest(tmp_path / "checkpoint.pt"), "bytes": len(buffer.getvalue())}
    back = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert torch.equal(back["rows"][0][0], state["rows"][0][0]) and back["epoch"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
