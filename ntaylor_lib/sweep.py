"""Parameter sweeps: one notebook executed with papermill over a grid of parameters.

``python -m ntaylor_lib sweep CHAPTER -p NAME V1,V2 ...`` runs every point of
the cartesian product in a fresh kernel, in parallel local worker processes (one per GPU
where there are GPUs) or as tasks on an existing Dask distributed cluster, keeps each
executed notebook, and writes one tidy table: a row per point with its parameters, its
status, and its headline results, which are the values the notebook glued with
``myst_nb.glue(name, value, display=False)``.

Layout of a sweep's folder (default ``results/sweeps/<chapter>-<hash>/``)::

    notebooks/<point>-<hash>.ipynb   each point's executed notebook (kept; failed ones too)
    sweep.csv, sweep.json            the table; the json adds grid, base parameters, versions, times

A point whose notebook exists and completed is not executed again when the sweep is
rerun: its results are read back from the notebook. Failed points are retried. A
failing point is reported with its parameters and does not stop the others.

Book chapters take only ``profile`` and ``overrides`` in their parameters cell; a grid
name that is not a parameter of the notebook goes into ``overrides`` (a profile key),
and every point is validated with :func:`get_profile` before
anything runs.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import multiprocessing
import os
import platform
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from .notebooks import (
    QUIET_KERNEL,
    first_error,
    glued_values,
    is_notebook,
    parameter_defaults,
    parse_value,
    read_notebook,
    unexecuted_cells,
)
from .runs.files import (
    ROOT,
    atomic_save_json,
    atomic_write_bytes,
    default_results_root,
    git_commit,
    json_digest,
    writable_folder,
)
from .runs.profiles import DEFAULT_PROFILE, ParameterError, get_profile, parameter_names
from .runs.progress import note, progress_bar

BOOK = ROOT / "book"
BASE_COLUMNS = ("status", "error", "seconds", "notebook", "reused")


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep.

    Attributes:
        index: position in the grid (rows come back in this order).
        parameters: the grid point as given (the table's parameter columns).
        notebook_parameters: what papermill injects (grid names that are not parameters
            of the notebook folded into ``overrides``), base parameters included.
        notebook: where the executed notebook is kept.
    """

    index: int
    parameters: dict[str, Any]
    notebook_parameters: dict[str, Any] = field(default_factory=dict)
    notebook: str = ""


# --- the grid -------------------------------------------------------------------------

def parse_grid(specs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """The cartesian product of ``[(name, "v1,v2,..."), ...]``, values typed.

    A profile key's values are converted to that key's type and checked exactly as
    ``--set`` does (:func:`ntaylor_lib.runs.profiles.get_profile`); other values become bool,
    int, float or str (:func:`parse_value`).

    Example:
        ``parse_grid([("lr", "0.1,0.01"), ("optimizer", "sgd,adam")])`` gives four
        points, ``{"lr": 0.1, "optimizer": "sgd"}`` first, the last name varying fastest.

    Raises:
        ParameterError: a repeated name, an empty value, or a bad value of a profile key.
    """
    keys = set(parameter_names())
    axes: list[list[tuple[str, Any]]] = []
    seen: set[str] = set()
    for name, values in specs:
        name = name.strip()
        if not name or name in seen:
            raise ParameterError(f"sweep parameter {name!r} is empty or given twice; "
                                 "give each name once: -p NAME V1,V2")
        seen.add(name)
        texts = [v.strip() for v in str(values).split(",")]
        if not all(texts):
            raise ParameterError(f"sweep parameter {name!r}: empty value in {values!r}; write -p {name} V1,V2,...")
        if name in keys:
            # typed as --set types them; a list value as a JSON list, as papermill records it
            axis = [(name, _plain(get_profile(DEFAULT_PROFILE, {name: t})[name])) for t in texts]
        else:
            axis = [(name, parse_value(t)) for t in texts]
        axes.append(axis)
    return [dict(combo) for combo in itertools.product(*axes)]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# --- the notebook -----------------------------------------------------------------------

def chapter_stems() -> list[str]:
    """The book's notebooks, by file stem (what ``sweep CHAPTER`` accepts)."""
    return sorted(p.stem for p in BOOK.glob("*.md") if is_notebook(p))


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: what was kept, and how to go on, in one line."""


def resolve_chapter(chapter: str | Path) -> Path:
    """A book chapter's stem (``figure5``) or a path to a Jupytext ``.md`` / ``.ipynb`` notebook.

    Raises:
        ParameterError: no such chapter, or a file that is not a notebook (a Markdown file whose
            front matter names no kernel, an ``.ipynb`` that does not read).
    """
    path = Path(chapter)
    if path.is_file():
        if path.suffix == ".md" and not is_notebook(path):
            raise ParameterError(f"{path} is not a Jupytext notebook: its front matter names no kernel")
        if path.suffix not in (".md", ".ipynb"):
            raise ParameterError(f"{path} is not a notebook: give a Jupytext .md or an .ipynb file")
        try:
            read_notebook(path)
        except Exception as error:  # jupytext and nbformat raise many kinds on a file that is not a notebook
            raise ParameterError(f"{path} does not read as a notebook ({type(error).__name__}: {error})") from None
        return path.resolve()
    if (BOOK / f"{path.name}.md").is_file() and path.name in chapter_stems():
        return BOOK / f"{path.name}.md"
    raise ParameterError(
        f"unknown chapter {str(chapter)!r}; give a path to a .md or .ipynb notebook, "
        f"or one of: {', '.join(chapter_stems())}"
    )


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _digest(obj: Any, n: int = 10) -> str:
    return json_digest(obj, n, default=str)


def _slug(parameters: Mapping[str, Any]) -> str:
    text = "__".join(f"{k}={v}" for k, v in _flatten(parameters).items())
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", text)[:80] or "point"


def plan_points(
    source: Path,
    grid: Sequence[Mapping[str, Any]],
    out_dir: Path,
    base_parameters: Mapping[str, Any] | None = None,
) -> list[SweepPoint]:
    """Each grid point's papermill parameters and notebook path, validated before anything runs.

    A name that is a parameter of the notebook is injected as is; any other name goes into
    the notebook's ``overrides`` parameter when it has one. Where the notebook takes
    ``profile`` and ``overrides`` (every book chapter), each point's overrides are checked
    with :func:`get_profile` at the point's profile.

    Raises:
        ParameterError: a name the notebook cannot take (the valid names listed), or a bad value.
    """
    defaults = parameter_defaults(read_notebook(source))
    profiled = {"profile", "overrides"} <= set(defaults)
    keys = parameter_names() if profiled else []
    points = []
    for index, point in enumerate(grid):
        merged = {**dict(base_parameters or {}), **dict(point)}
        injected: dict[str, Any] = {}
        overrides: dict[str, Any] = {}
        for name, value in merged.items():
            if name == "overrides" and "overrides" in defaults:
                if not isinstance(value, Mapping):
                    raise ParameterError(f"overrides must be a mapping of profile keys, got {value!r}; "
                                         "sweep a key with -p KEY V1,V2")
                overrides.update(value)
            elif name in defaults:
                injected[name] = value
            elif "overrides" in defaults and (not profiled or name in keys):
                overrides[name] = value
            else:
                valid = ", ".join(sorted(defaults)) or "(no parameters cell)"
                more = f"; or a profile key: {', '.join(keys)}" if profiled else ""
                raise ParameterError(f"{name!r} is not a parameter of {source.name}: its parameters are {valid}{more}")
        if overrides or "overrides" in merged:
            injected["overrides"] = overrides
        if profiled:
            profile = injected.get("profile", defaults.get("profile") or DEFAULT_PROFILE)
            get_profile(str(profile), overrides)
        name = f"{_slug(point)}-{_digest(injected)}.ipynb"
        points.append(SweepPoint(index, dict(point), injected, str(out_dir / "notebooks" / name)))
    return points


# --- one point ---------------------------------------------------------------------------

def _row(point: SweepPoint, status: str, error: str, seconds: float, reused: bool,
         glued: Mapping[str, Any]) -> dict[str, Any]:
    row = {**_flatten(point.parameters), "status": status, "error": error, "seconds": round(seconds, 3),
           "notebook": point.notebook, "reused": reused}
    for name, value in glued.items():
        row[name if name not in row else f"glued_{name}"] = value
    return row


def completed_row(point: SweepPoint) -> dict[str, Any] | None:
    """The row of a point whose notebook exists and ran to the end without error (every code cell
    executed), else None."""
    import nbformat

    path = Path(point.notebook)
    if not path.is_file():
        return None
    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception:  # a notebook cut off mid-write: run the point again
        return None
    meta = notebook.metadata.get("papermill", {})
    if meta.get("exception") or not meta.get("end_time") or meta.get("parameters") != point.notebook_parameters:
        return None
    if first_error(notebook) is not None or unexecuted_cells(notebook):
        return None
    return _row(point, "ok", "", float(meta.get("duration") or 0.0), True, glued_values(notebook))


def execute_point(point: SweepPoint, source: str, cwd: str | None = None, gpu: str | None = None) -> dict[str, Any]:
    """Execute one point in a fresh kernel with papermill and return its row; never raises.

    Args:
        point: the point (its notebook path is where the executed notebook goes).
        source: the notebook as nbformat JSON text (so a remote worker needs no copy of it).
        cwd: the kernel's working folder (the chapter's folder), if it exists here.
        gpu: ``CUDA_VISIBLE_DEVICES`` for the kernel, or None to leave the environment as is.

    Returns:
        The row: parameters, ``status`` ok or failed, ``error``, ``seconds``, ``notebook``, glued values.
    """
    import nbformat
    import papermill

    output = Path(point.notebook)
    output.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    status, error = "ok", ""
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # the kernel inherits it
    try:
        papermill.execute_notebook(
            nbformat.reads(source, as_version=4), str(output), parameters=dict(point.notebook_parameters),
            kernel_name="python3", cwd=cwd if cwd and Path(cwd).is_dir() else None, progress_bar=False,
            extra_arguments=QUIET_KERNEL,
        )
    except papermill.PapermillExecutionError as exc:
        status, error = "failed", f"{exc.ename}: {exc.evalue}"
    except Exception as exc:  # a kernel that died, a notebook that cannot be written, ...
        status, error = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        if gpu is not None:
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES")
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved
    seconds = time.perf_counter() - started
    glued: dict[str, Any] = {}
    if output.is_file():
        try:
            notebook = nbformat.read(output, as_version=4)
            # papermill records an in-memory input as the whole notebook: name the chapter instead
            notebook.metadata.setdefault("papermill", {})["input_path"] = notebook.metadata.get("ntaylor_source", "")
            nbformat.write(notebook, output)
            if status == "ok" and first_error(notebook) is not None:
                status, error = "failed", first_error(notebook)
            if status == "ok" and unexecuted_cells(notebook):
                status, error = "failed", f"{unexecuted_cells(notebook)} code cells never ran (the kernel was stopped)"
            if status == "ok":
                glued = glued_values(notebook)
        except Exception as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
    return _row(point, status, error, seconds, False, glued)


# --- workers ---------------------------------------------------------------------------------

def visible_gpus() -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` where set, else every CUDA device."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    return [str(i) for i in range(torch.cuda.device_count())]


_WORKER_GPU: str | None = None


def _init_worker(gpus: Any) -> None:
    """Pool initializer: take one GPU id for this worker process (None where there are none)."""
    global _WORKER_GPU
    _WORKER_GPU = gpus.get() if gpus is not None else None


def _execute_in_worker(point: SweepPoint, source: str, cwd: str | None) -> dict[str, Any]:
    return execute_point(point, source, cwd, _WORKER_GPU)


def _run_local(
    points: Sequence[SweepPoint], source: str, cwd: str | None, workers: int, gpus: Sequence[str]
) -> Iterator[tuple[SweepPoint, dict[str, Any]]]:
    """Run ``points`` in this process (one worker) or in a pool of spawned processes; yield rows as they finish."""
    if not points:
        return
    workers = min(workers, len(points))
    if workers == 1:
        for point in points:
            yield point, execute_point(point, source, cwd, gpus[0] if gpus else None)
        return
    context = multiprocessing.get_context("spawn")
    with contextlib.ExitStack() as stack:
        queue = None
        if gpus:  # one GPU per worker process, round robin when there are more workers than GPUs
            queue = stack.enter_context(context.Manager()).Queue()
            for i in range(workers):
                queue.put(gpus[i % len(gpus)])
        pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                                       initargs=(queue,)))
        futures = {pool.submit(_execute_in_worker, p, source, cwd): p for p in points}
        try:
            for future in as_completed(futures):
                point = futures[future]
                try:
                    yield point, future.result()
                except Exception as exc:  # the worker process died
                    yield point, _row(point, "failed", f"{type(exc).__name__}: {exc}", 0.0, False, {})
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def connect(scheduler: str) -> Any:
    """A ``distributed.Client`` on the scheduler at ``scheduler`` (``tcp://host:8786``)."""
    try:
        from distributed import Client
    except ImportError:
        raise ParameterError("--scheduler needs dask distributed: bash scripts/setup.sh installs it "
                             "(requirements.txt)") from None
    try:
        return Client(scheduler, timeout="20s")
    except (OSError, ValueError) as exc:
        raise ParameterError(f"cannot reach the Dask scheduler at {scheduler!r} ({exc}); "
                             "start one with `dask scheduler`") from None


def _run_dask(points: Sequence[SweepPoint], source: str, cwd: str | None,
              client: Any) -> Iterator[tuple[SweepPoint, dict[str, Any]]]:
    """Submit one task per point to the cluster behind ``client``; yield rows as they finish, then close it."""
    from distributed import as_completed

    try:
        futures = {client.submit(execute_point, p, source, cwd, None, pure=False): p for p in points}
        for future in as_completed(list(futures)):
            point = futures[future]
            try:
                yield point, future.result()
            except Exception as exc:  # the worker died, or could not import ntaylor_lib
                yield point, _row(point, "failed", f"{type(exc).__name__}: {exc}", 0.0, False, {})
    finally:
        client.close()


# --- the sweep --------------------------------------------------------------------------------

def default_out_dir(source: Path, grid: Sequence[Mapping[str, Any]], base_parameters: Mapping[str, Any] | None) -> Path:
    """``results/sweeps/<chapter>-<hash of chapter, grid and base parameters>`` under the results root."""
    digest = _digest({"chapter": str(source), "grid": list(grid), "base": dict(base_parameters or {})})
    return default_results_root() / "sweeps" / f"{source.stem}-{digest}"


def _versions(scheduler: str | None) -> dict[str, str]:
    out = {"ntaylor_lib": __version__, "python": platform.python_version(), "platform": platform.platform(),
           "git_commit": git_commit()}
    cluster = ("dask", "distributed") if scheduler else ()
    for package in ("papermill", "nbclient", "jupytext", "myst-nb", "torch", *cluster):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out


def write_table(rows: Sequence[Mapping[str, Any]], out_dir: Path, meta: Mapping[str, Any]) -> Path:
    """Write ``sweep.csv`` (one row per point, every column) and ``sweep.json`` (``meta`` plus rows)."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out_dir / "sweep.csv", buffer.getvalue().encode())
    atomic_save_json({**meta, "columns": columns, "rows": list(rows)}, out_dir / "sweep.json")
    return out_dir / "sweep.csv"


def run_sweep(
    chapter: str | Path,
    grid: Sequence[Mapping[str, Any]],
    out_dir: str | Path | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    base_parameters: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Execute ``chapter`` once per grid point with papermill and return the tidy table.

    Args:
        chapter: a book chapter's file stem (``"figure5"``) or a path to a Jupytext ``.md`` or ``.ipynb`` notebook.
        grid: one dict of notebook parameters per point (see :func:`parse_grid`); names that are
            not parameters of the notebook go into its ``overrides``.
        out_dir: where notebooks and the table go (default ``results/sweeps/<chapter>-<hash>/``
            under ``$NTAYLOR_RESULTS`` or ``results/``).
        workers: local worker processes, each running one point at a time in its own kernel
            (None: one per GPU where there are GPUs, else 1). Each worker pins one GPU with
            ``CUDA_VISIBLE_DEVICES``.
        scheduler: address of a Dask distributed scheduler (``tcp://host:8786``); when given,
            every point is a task on that cluster instead of a local worker.
        base_parameters: passed to every point, e.g. ``{"profile": "smoke"}``.
        progress: show a progress bar over points.

    Returns:
        One row per point, in grid order: its parameters (one column each), ``status``
        (``ok`` or ``failed``), ``error`` (exception name and message), ``seconds``,
        ``notebook``, ``reused`` (read back from an earlier run), and every glued value.
        Also written to ``out_dir/sweep.csv`` and ``out_dir/sweep.json``, after every
        point while the sweep runs (the points not yet done marked ``pending``, ``ended``
        null) and once more at the end.

    Raises:
        ParameterError: an unknown chapter, a parameter the notebook cannot take, a bad
            value, an output folder that cannot be written, or an unreachable scheduler, before
            any point runs.
        SweepInterrupted: Ctrl-C; the points done so far are kept (and the table), and the same
            call runs the rest.
    """
    source = resolve_chapter(chapter)
    grid = [dict(p) for p in grid]
    if not grid:
        raise ParameterError("the sweep's grid is empty: give at least one -p NAME V1,V2")
    out = Path(out_dir).resolve() if out_dir is not None else default_out_dir(source, grid, base_parameters).resolve()
    points = plan_points(source, grid, out, base_parameters)
    gpus = visible_gpus()
    if workers is None:
        workers = max(1, len(gpus))
    if workers < 1:
        raise ParameterError(f"workers={workers} must be >= 1")
    try:
        writable_folder(out, "the sweep's folder")
    except ValueError as error:
        raise ParameterError(f"{error}; give another with --out") from None
    notebook = read_notebook(source)
    notebook.metadata["ntaylor_source"] = str(source)
    text = json.dumps(notebook)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")

    rows: dict[int, dict[str, Any]] = {}
    todo = []
    for point in points:
        done = completed_row(point)
        if done is None:
            todo.append(point)
        else:
            rows[point.index] = done
    cwd = str(source.parent)
    if scheduler:
        runner, where = _run_dask(todo, text, cwd, connect(scheduler)), f"on {scheduler}"
    else:
        runner, where = _run_local(todo, text, cwd, workers, gpus), f"with {workers} local worker{'s' * (workers > 1)}"
    print(f"[sweep] {source.stem}: {len(points)} point{'s' * (len(points) > 1)}, {len(rows)} already done, "
          f"{len(todo)} to run {where}", file=sys.stderr)
    bar = progress_bar(total=len(points), initial=len(rows), desc=f"sweep {source.stem}", unit="point",
                       disable=not progress, file=sys.stderr)
    meta = {
        "chapter": str(source), "grid": grid, "base_parameters": dict(base_parameters or {}),
        "points": [asdict(p) for p in points], "workers": None if scheduler else workers, "scheduler": scheduler,
        "started": started, "ended": None, "versions": _versions(scheduler),
    }
    try:
        for point, row in runner:
            rows[point.index] = row
            if row["status"] != "ok":
                shown = ", ".join(f"{k}={v!r}" for k, v in point.parameters.items())
                note(f"[sweep] point {point.index} ({shown}) failed: {row['error']}; notebook {point.notebook}")
            bar.update(1)
            # The table so far, the other points "pending": a long sweep can be read while it runs.
            write_table([rows.get(p.index) or _row(p, "pending", "", 0.0, False, {}) for p in points], out, meta)
    except KeyboardInterrupt:
        done = sum(1 for r in rows.values() if r["status"] == "ok")
        raise SweepInterrupted(f"interrupted: {done} of {len(points)} points done and kept in {out} (table: "
                               f"{out / 'sweep.csv'}); the same command runs the rest") from None
    finally:
        bar.close()
    table = [rows[p.index] for p in points]
    meta["ended"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_table(table, out, meta)
    return table
