"""Sweeps: a grid of papermill executions in local worker processes or on a
local Dask cluster, one tidy table, failures reported without stopping the others, and
reruns that skip the points already done."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import nbformat
import pytest

from ntaylor_lib import cli
from ntaylor_lib.runs.profiles import ParameterError
from ntaylor_lib.sweep import SweepPoint, parse_grid, plan_points, resolve_chapter, run_sweep
from tests.notebooks import myst_notebook

# A notebook that multiplies its two parameters, glues the product, logs every execution
# to runs.log beside itself (the kernel's working folder), and fails for negative x.
TINY = myst_notebook("x = 1\ny = 1.0", """
import os

from myst_nb import glue

glue("gpu", os.environ.get("CUDA_VISIBLE_DEVICES", "unset"), display=False)
with open("runs.log", "a") as log:
    print(f"{x} {y}", file=log)
if x < 0:
    raise ValueError(f"x must be >= 0, got {x}")
glue("product", x * y, display=False)
glue("label", f"x{x}", display=False)
""")
X, Y = "2,-1", "4,0.5"


def _runs(folder: Path) -> list[str]:
    log = folder / "runs.log"
    return log.read_text().splitlines() if log.is_file() else []


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "tiny.md").write_text(TINY)
    return folder / "tiny.md"


@pytest.fixture(scope="module")
def local_sweep(tiny):
    """The tiny grid through the command line, as on a machine with GPUs 3 and 5: two local workers."""
    out = tiny.parent / "local"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
        code, stdout, stderr = _main(["sweep", str(tiny), "-p", "x", X, "-p", "y", Y, "--out", str(out),
                                      "--no-progress"])
    return code, stdout, stderr, out


def test_parse_grid_is_the_typed_product():
    grid = parse_grid([("lr", "0.1,0.01"), ("optimizer", "sgd,adam"), ("flag", "true")])
    assert grid == [
        {"lr": 0.1, "optimizer": "sgd", "flag": True}, {"lr": 0.1, "optimizer": "adam", "flag": True},
        {"lr": 0.01, "optimizer": "sgd", "flag": True}, {"lr": 0.01, "optimizer": "adam", "flag": True},
    ]
    # Profile keys are typed as --set types them: epochs is an int even when written 3.0.
    assert parse_grid([("epochs", "3.0,4"), ("n", "7")]) == [{"epochs": 3, "n": 7}, {"epochs": 4, "n": 7}]
    assert all(type(p["epochs"]) is int for p in parse_grid([("epochs", "3.0,4")]))
    with pytest.raises(ParameterError, match="epochs"):
        parse_grid([("epochs", "two")])
    with pytest.raises(ParameterError, match="twice"):
        parse_grid([("x", "1"), ("x", "2")])
    with pytest.raises(ParameterError, match="empty value"):
        parse_grid([("x", "1,,2")])


def test_local_sweep_table_failures_and_exit_code(local_sweep):
    code, stdout, stderr, out = local_sweep
    assert code == 1  # some point failed
    assert str(out / "sweep.csv") in stdout and "2 of 4 points ok, 2 failed" in stdout
    # Each failure is reported with its parameters and its error.
    assert "(x=-1, y=4) failed: ValueError: x must be >= 0, got -1" in stderr
    assert "(x=-1, y=0.5) failed" in stderr
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [(r["x"], r["y"]) for r in rows] == [(2, 4), (2, 0.5), (-1, 4), (-1, 0.5)]
    for row in rows:
        assert Path(row["notebook"]).is_file()  # kept, failed points too
        if row["x"] < 0:
            assert row["status"] == "failed" and "ValueError" in row["error"] and "product" not in row
        else:
            assert row["status"] == "ok" and row["error"] == "" and row["seconds"] > 0
            assert row["product"] == pytest.approx(row["x"] * row["y"]) and row["label"] == f"x{row['x']}"
    assert isinstance(rows[0]["product"], int) and isinstance(rows[1]["product"], float)
    with open(out / "sweep.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [t["status"] for t in table] == [r["status"] for r in rows]
    assert float(table[1]["product"]) == 1.0
    # One worker per GPU by default, and each kernel sees its worker's GPU only.
    assert {r["gpu"] for r in rows if r["status"] == "ok"} <= {3, 5}
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["workers"] == 2 and meta["versions"]["papermill"] and meta["started"] <= meta["ended"]
    assert len(meta["grid"]) == 4


def test_rerun_skips_done_points_and_retries_failed(tiny, local_sweep):
    _, _, _, out = local_sweep
    before = _runs(tiny.parent)
    assert sorted(before) == sorted(["2 4", "2 0.5", "-1 4", "-1 0.5"])
    first = json.loads((out / "sweep.json").read_text())["rows"]
    # A point interrupted by Ctrl-C: papermill ends its notebook as if it completed, with a
    # KeyboardInterrupt output in the cell it stopped in. It must run again too.
    interrupted = Path(first[1]["notebook"])
    notebook = nbformat.read(interrupted, as_version=4)
    notebook.cells[-1].outputs = [nbformat.v4.new_output("error", ename="KeyboardInterrupt", evalue="", traceback=[])]
    nbformat.write(notebook, interrupted)
    rows = run_sweep(tiny, parse_grid([("x", X), ("y", Y)]), out_dir=out, workers=1, progress=False)  # in this process
    # Only the two failed points and the interrupted one ran again.
    assert sorted(_runs(tiny.parent)[len(before):]) == ["-1 0.5", "-1 4", "2 0.5"]
    for old, new in zip(first, rows):
        assert new["status"] == old["status"] and new.get("product") == old.get("product")
        assert new["reused"] is (old["status"] == "ok" and old is not first[1])


def test_a_point_cut_off_before_its_last_cell_is_not_done(tiny, tmp_path):
    """Ctrl-C can leave a notebook that papermill closed as complete (end time, no exception) with
    cells that never ran: the point counts as done only when every code cell executed."""
    out = tmp_path / "cut"
    grid = parse_grid([("x", "7"), ("y", "3")])
    first = run_sweep(tiny, grid, out_dir=out, workers=1, progress=False)
    assert first[0]["status"] == "ok" and first[0]["product"] == 21
    path = Path(first[0]["notebook"])
    notebook = nbformat.read(path, as_version=4)
    last = notebook.cells[-1]
    last.execution_count, last.outputs = None, []
    nbformat.write(notebook, path)
    assert nbformat.read(path, as_version=4).metadata["papermill"]["end_time"]
    before = _runs(tiny.parent).count("7 3")
    again = run_sweep(tiny, grid, out_dir=out, workers=1, progress=False)
    assert _runs(tiny.parent).count("7 3") == before + 1  # it ran again
    assert again[0]["status"] == "ok" and again[0]["product"] == 21 and again[0]["reused"] is False
    third = run_sweep(tiny, grid, out_dir=out, workers=1, progress=False)
    assert third[0]["reused"] is True and _runs(tiny.parent).count("7 3") == before + 1


def test_dask_cluster_gives_the_same_table(tiny, local_sweep):
    distributed = pytest.importorskip("distributed")
    _, _, _, local_out = local_sweep
    expected = json.loads((local_out / "sweep.json").read_text())["rows"]
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    try:
        rows = run_sweep(tiny, parse_grid([("x", X), ("y", Y)]), out_dir=tiny.parent / "dask",
                         scheduler=cluster.scheduler_address, progress=False)
    finally:
        cluster.close()
    columns = ("x", "y", "status", "error", "product", "label")
    assert [[r.get(c) for c in columns] for r in rows] == [[r.get(c) for c in columns] for r in expected]
    assert json.loads((tiny.parent / "dask" / "sweep.json").read_text())["scheduler"] == cluster.scheduler_address


def test_validation_before_anything_runs(tiny, tmp_path):
    with pytest.raises(ParameterError, match="shattered_gradients"):
        resolve_chapter("no_such_chapter")
    with pytest.raises(ParameterError, match="its parameters are x, y"):
        plan_points(tiny, [{"z": 1}], tmp_path)
    chapter = resolve_chapter("shattered_gradients")
    with pytest.raises(ParameterError, match="profile key: .*shatter_depth"):
        plan_points(chapter, [{"nonsense": 1}], tmp_path)
    with pytest.raises(ParameterError, match="shatter_depth"):
        plan_points(chapter, [{"shatter_depth": 0}], tmp_path, {"profile": "smoke"})
    with pytest.raises(ParameterError, match="overrides must be a mapping"):
        plan_points(chapter, [{"overrides": "shatter_depth=4"}], tmp_path)
    points = plan_points(chapter, [{"shatter_depth": 4}], tmp_path, {"profile": "smoke"})
    assert isinstance(points[0], SweepPoint)
    assert points[0].notebook_parameters == {"profile": "smoke", "overrides": {"shatter_depth": 4}}
    code, _, stderr = _main(["sweep", "shattered_gradients", "-p", "shatter_depth", "4,x", "--out", str(tmp_path)])
    assert code == 2 and "shatter_depth" in stderr
    code, _, stderr = _main(["sweep", "shattered_gradients", "-p", "lr_convnet_sgd", "-0.1", "--out", str(tmp_path)])
    assert code == 2 and "must be > 0" in stderr
    assert not (tmp_path / "notebooks").exists()


def test_book_chapter_sweep_over_a_profile_key(tmp_path, monkeypatch):
    """What a user does: a real chapter, the smoke profile, two values of a profile key."""
    monkeypatch.setenv("NTAYLOR_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("NTAYLOR_BUILD", str(tmp_path / "build"))
    code, stdout, _ = _main(["sweep", "shattered_gradients", "-p", "shatter_depth", "4,6", "--profile", "smoke",
                             "--workers", "2", "--no-progress"])
    assert code == 0, stdout
    table = Path(stdout.strip().splitlines()[-1])
    assert table.is_file() and table.is_relative_to(tmp_path / "results" / "sweeps")
    rows = json.loads(table.with_suffix(".json").read_text())["rows"]
    assert [(r["shatter_depth"], r["status"]) for r in rows] == [(4, "ok"), (6, "ok")]
    assert [r["fig1_depth"] for r in rows] == [4, 6]  # the override reached the page
    for row in rows:
        assert row["fig1_kinks"] >= row["fig1_jumps"] >= 0 and row["fig1_verdict"] in ("holds", "does not hold")
