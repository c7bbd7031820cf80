"""Build the book: execute every chapter with papermill, then build HTML with Jupyter Book.

Chapters are Jupytext MyST Markdown notebooks listed in ``_toc.yml``. Each is converted
to ``.ipynb``, executed with papermill at a profile (its ``parameters`` cell takes
``profile`` and ``overrides``), and written to ``_build/executed/``. The HTML is then
built from a staged copy of the book (``_build/stage``) in which every chapter is its executed notebook,
with execution off, so nothing runs twice. Chapters share runs through the run store.

Pages that summarise other chapters (the front page and the claims page read the verdicts
the chapters record) say so in their front matter with ``ntaylor: {execute: last}``; they are
executed after every other chapter, in ``_toc.yml`` order among themselves, whatever their
place in the table of contents (:func:`execution_order`), and again whenever another chapter
is, so that ``book --only figure4`` also refreshes the verdicts they show.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..notebooks import QUIET_KERNEL, front_matter, is_notebook
from ..paper.claims import record_build
from ..runs.files import ROOT, writable_folder
from ..runs.profiles import ParameterError, Profile
from ..runs.progress import ProgressFollower

# Cells that the page need not show: papermill's parameter cells (the set-up cell shows them).
HIDDEN_TAGS = {"parameters", "injected-parameters"}


def toc_files(root: Path = ROOT) -> list[str]:
    """Every file of ``_toc.yml`` (without extension), in reading order."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries: Sequence[Mapping[str, Any]]) -> None:
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections", []))
            for part in entry.get("parts", []):
                walk(part.get("chapters", []))

    walk(toc.get("chapters", []))
    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    return files


def executes_last(path: Path) -> bool:
    """Whether a page summarises the others: front matter ``ntaylor: {execute: last}``."""
    return (front_matter(path).get("ntaylor") or {}).get("execute") == "last"


def chapter_tasks(path: Path) -> list[str] | None:
    """The tasks a chapter needs (front matter ``ntaylor: {tasks: [...]}``), or ``None`` for any."""
    return (front_matter(path).get("ntaylor") or {}).get("tasks")


def opt_in_profiles(path: Path) -> list[str]:
    """Profiles at which a chapter runs only when asked for by name (front matter ``ntaylor: {opt_in: [...]}``):
    the chapters beyond the paper, whose ``paper`` settings take hours, are not part of a whole
    ``paper`` build; ``--only`` names them."""
    return list((front_matter(path).get("ntaylor") or {}).get("opt_in") or [])


def not_run_page(source: Path, params: Profile, output: Path, reason: str | None = None) -> None:
    """Write, in place of an executed chapter that this build does not run, a page that says why
    (with the chapter's label and title, so that links to it still resolve). ``reason``: the
    page's explanation; by default, that the profile does not run the tasks the chapter needs."""
    import nbformat

    lines = source.read_text().split("\n---", 1)[-1].splitlines()
    label = next((line for line in lines if line.startswith("(") and line.endswith(")=")), "")
    title = next((line for line in lines if line.startswith("# ")), f"# {source.stem}")
    if reason is None:
        needs = " and the ".join(chapter_tasks(source) or [])
        reason = (f"This chapter needs the {needs} task; this build, at profile `{params.name}`, runs "
                  f"`tasks={','.join(params['tasks'])}`. Build the book without that setting (or with the task "
                  "added) to compute it.")
    text = f"{label}\n{title}\n\n**Not run at this setting.** {reason}\n"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text)])
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    output.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, output)


def execution_order(notebooks: Sequence[str], root: Path = ROOT) -> list[str]:
    """``notebooks`` in execution order: those flagged ``ntaylor: {execute: last}`` after all others."""
    last = [n for n in notebooks if executes_last(root / f"{n}.md")]
    return [n for n in notebooks if n not in last] + last


def execute_chapter(source: Path, parameters: Mapping[str, Any], output: Path) -> float:
    """Convert ``source`` with Jupytext and execute it with papermill into ``output``; returns seconds.

    While it executes, the runs it trains and the optima it solves report their progress through
    a channel file (:class:`~ntaylor_lib.runs.progress.ProgressFollower`), drawn here: a bar on a
    terminal, a line every half minute in a log. The kernel's own log is kept to its errors that
    stop it (its notices, such as transport warnings, are not the reader's business).
    """
    import jupytext
    import nbformat
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    notebook = output.with_suffix(".source.ipynb")
    jupytext.write(jupytext.read(source), notebook)
    started = time.perf_counter()
    try:
        with ProgressFollower(output.with_suffix(".progress"), Path(str(source)).stem):
            papermill.execute_notebook(
                str(notebook),
                str(output),
                parameters=dict(parameters),
                kernel_name="python3",
                cwd=str(source.parent),
                progress_bar=False,
                extra_arguments=QUIET_KERNEL,
            )
    finally:
        notebook.unlink(missing_ok=True)
    executed = nbformat.read(output, as_version=4)
    for cell in executed.cells:
        tags = set(cell.metadata.get("tags", []))
        if tags & HIDDEN_TAGS:
            cell.metadata["tags"] = sorted(tags | {"remove-cell"})
    nbformat.write(executed, output)
    return time.perf_counter() - started


def output_root() -> Path:
    """Where ``_build/`` goes: ``$NTAYLOR_BUILD`` if set, else the checkout."""
    return Path(os.environ.get("NTAYLOR_BUILD") or ROOT)


def stage_book(notebooks: Sequence[str], build: Path) -> Path:
    """Copy the book's sources to ``build/stage`` with chapters replaced by their executed notebooks."""
    import yaml

    stage, executed = build / "stage", build / "executed"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    (stage / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copy(ROOT / "_toc.yml", stage / "_toc.yml")
    shutil.copytree(ROOT / "book", stage / "book", ignore=shutil.ignore_patterns("__pycache__", "*.ipynb"))
    for name in notebooks:
        (stage / f"{name}.md").unlink()
        shutil.copy(executed / f"{name}.ipynb", stage / f"{name}.ipynb")
    return stage


def build_html(stage: Path, out: Path) -> int:
    """Run Jupyter Book on the staged sources, warnings as errors; HTML lands in ``out/_build/html``."""
    jb = Path(sys.executable).with_name("jupyter-book")
    command = [str(jb) if jb.exists() else "jupyter-book", "build", str(stage), "--path-output", str(out),
               "--builder", "html", "-W", "-n", "--keep-going"]
    return subprocess.run(command).returncode


class BookInterrupted(KeyboardInterrupt):
    """Ctrl-C while the book builds: what was kept, and how to go on, in one line."""


def notebook_chapters(root: Path = ROOT) -> list[str]:
    """The chapters of ``_toc.yml`` that are notebooks (executed with papermill), as ``book/<stem>``."""
    return [f for f in toc_files(root) if is_notebook(root / f"{f}.md")]


def check_only(only: Sequence[str], root: Path = ROOT) -> None:
    """Raise :class:`ParameterError` for a name given to ``--only`` that is no chapter, listing the chapters."""
    stems = [Path(n).name for n in notebook_chapters(root)]
    unknown = [name for name in only if name not in stems]
    if unknown:
        raise ParameterError(f"--only {', '.join(unknown)}: no such chapter; the chapters are {', '.join(stems)}")


def book_command(params: Profile) -> str:
    """The command that builds the book at ``params``'s profile and overrides."""
    sets = "".join(f" --set {k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                   for k, v in sorted(params.overrides.items()))
    return f"bash scripts/book.sh --profile {params.name}{sets}"


def build_book(params: Profile, only: Sequence[str] = (), html: bool = True) -> int:
    """Execute the chapters at the profile ``params`` and build the HTML.

    Args:
        params: the validated profile (checked before any chapter runs); its overrides are
            passed to every chapter as its ``overrides`` parameter.
        only: execute only these chapters (file stems; checked against the table of contents);
            the others keep their last execution, and the summary pages that read them are
            executed again when they have been before.
        html: build the HTML after executing (every chapter must have been executed once).

    Returns:
        0 on success; 1 when a chapter fails (its name and error are printed, and the
        chapters executed before it are kept), or when the HTML needs chapters never executed.

    Raises:
        ParameterError: an unknown chapter in ``only``, or a build folder that cannot be written.
        BookInterrupted: Ctrl-C; the chapters executed so far are kept.
    """
    import papermill

    check_only(only)
    out = output_root()
    build = out / "_build"
    try:
        writable_folder(build, "the build folder")
    except ValueError as error:
        raise ParameterError(f"{error}; set NTAYLOR_BUILD to another") from None
    executed = build / "executed"
    notebooks = notebook_chapters()
    # list values as lists: papermill injects them as literals and records them as JSON
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in params.overrides.items()}
    parameters = {"profile": params.name, "overrides": overrides}
    timings = {}
    for name in execution_order(notebooks):
        stem, done = Path(name).name, (executed / f"{name}.ipynb").is_file()
        # a summary page executed before reads the chapters that just ran: refresh it
        summary_stale = bool(timings) and done and executes_last(ROOT / f"{name}.md")
        if only and stem not in only and not summary_stale:
            continue
        if params.name in opt_in_profiles(ROOT / f"{name}.md") and stem not in only:
            print(f"[book] {name}: not run at profile {params.name} unless named (--only {stem})", flush=True)
            not_run_page(ROOT / f"{name}.md", params, executed / f"{name}.ipynb", reason=(
                f"This chapter goes beyond the paper, and at profile `{params.name}` it takes hours, so a whole "
                f"`{params.name}` build leaves it out. It runs when named: `{book_command(params)} --only {stem}`."))
            continue
        needs = chapter_tasks(ROOT / f"{name}.md")
        if needs is not None and not set(needs) & set(params["tasks"]):
            print(f"[book] {name}: not run at this setting (it needs {', '.join(needs)}; "
                  f"tasks={','.join(params['tasks'])})", flush=True)
            not_run_page(ROOT / f"{name}.md", params, executed / f"{name}.ipynb")
            continue
        print(f"[book] executing {name} at profile {params.name} ...", flush=True)
        try:
            timings[name] = execute_chapter(ROOT / f"{name}.md", parameters, executed / f"{name}.ipynb")
        except papermill.PapermillExecutionError as error:
            print(f"[book] chapter {name} failed: {error.ename}: {error.evalue}", file=sys.stderr)
            print(f"[book] its partial output is in {executed / name}.ipynb", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            kept = ", ".join(Path(n).name for n in timings) or "no chapter"
            raise BookInterrupted(f"interrupted in {name}: {kept} executed and kept in {executed}; runs the store "
                                  "finished are kept and a run cut off resumes from its last epoch: the same "
                                  f"command (or --only {stem} ...) goes on") from None
        print(f"[book] {name} done in {timings[name]:.1f} s", flush=True)
        record_build(params, {name: timings[name]}, book_command(params))  # the summaries show the build's time
    missing = [n for n in notebooks if not (executed / f"{n}.ipynb").is_file()]
    if missing and html:
        print(f"[book] not executed yet: {', '.join(missing)}; build the whole book once (without --only), "
              "or add them to --only", file=sys.stderr)
        return 1
    (executed / "timings.json").write_text(json.dumps({"profile": params.name, "seconds": timings}, indent=2))
    if not html:
        return 0
    code = build_html(stage_book(notebooks, build), out)
    if code == 0:
        print(f"[book] open {build / 'html' / 'index.html'}")
    return code
