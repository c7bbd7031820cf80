"""The book: every chapter executes at the smoke profile, the HTML builds, and every page
renders its charts in headless Chromium with no JavaScript error; papermill sweeps work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from ntaylor_lib.runs.profiles import get_profile
from ntaylor_lib.site import book
from ntaylor_lib.site.sitecheck import check_site, find_chromium

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _glued(notebook: Path) -> dict[str, str]:
    """``myst_nb.glue`` values of an executed notebook, as their text/plain."""
    values = {}
    for cell in nbformat.read(notebook, as_version=4).cells:
        for output in cell.get("outputs", []):
            scrap = output.get("metadata", {}).get("scrapbook", {})
            if "name" in scrap:
                values[scrap["name"]] = output["data"][scrap.get("mime_prefix", "") + "text/plain"]
    return values


@pytest.fixture(scope="module")
def built_book(tmp_path_factory, mnist_root):
    """The whole book at the smoke profile, built into a temporary folder (results too)."""
    out = tmp_path_factory.mktemp("book")
    env = {"NTAYLOR_BUILD": str(out), "NTAYLOR_RESULTS": str(out / "results")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        code = book.build_book(get_profile("smoke"))
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert code == 0
    return out


def test_every_toc_chapter_executes_and_builds(built_book):
    html = built_book / "_build" / "html"
    assert (html / "index.html").is_file()
    for name in book.toc_files():
        assert (html / f"{name}.html").is_file(), name
        if book.is_notebook(ROOT / f"{name}.md"):
            executed = built_book / "_build" / "executed" / f"{name}.ipynb"
            nb = nbformat.read(executed, as_version=4)
            assert nb.metadata["papermill"]["parameters"]["profile"] == "smoke"
            page = (html / f"{name}.html").read_text()
            assert "Run at profile" in page
            # the code shows, collapsed, and the executed notebook can be downloaded from the page
            assert "tag_hide-input" in page, name
            source = Path(os.path.relpath(html / "_sources" / f"{name}.ipynb", (html / name).parent)).as_posix()
            assert f'href="{source}"' in page and (html / "_sources" / f"{name}.ipynb").is_file(), name
    # Figures are also saved as static files beside the run results.
    assert list((built_book / "results" / "figures" / "smoke").glob("*.svg"))


def test_every_number_in_prose_is_glued(built_book):
    """Each {glue:text} role of a chapter has a value in its executed notebook."""
    import re

    for name in book.toc_files():
        source = ROOT / f"{name}.md"
        if not book.is_notebook(source):
            continue
        roles = set(re.findall(r"\{glue:text\}`([a-zA-Z0-9_]+)", source.read_text()))
        glued = _glued(built_book / "_build" / "executed" / f"{name}.ipynb")
        assert roles and roles <= set(glued), (name, roles - set(glued))


@pytest.mark.skipif(find_chromium() is None, reason="needs Debian's chromium (scripts/test.sh installs it)")
def test_pages_render_in_chromium(built_book):
    reports = check_site(built_book / "_build" / "html")
    assert len(reports) >= len(book.toc_files())
    assert sum(r.charts for r in reports) >= 4
    for report in reports:
        assert report.ok, (report.page, report.rendered, report.charts, report.errors)


def test_papermill_sweep_uses_injected_values(tmp_path, mnist_root):
    """What a user does: jupytext to ipynb, then papermill -p / -y with new values."""
    source = ROOT / "book" / "shattered_gradients.md"
    notebook = tmp_path / "chapter.ipynb"
    subprocess.run([str(BIN / "jupytext"), "--to", "ipynb", str(source), "-o", str(notebook)], check=True,
                   capture_output=True)
    out = tmp_path / "out.ipynb"
    subprocess.run([str(BIN / "papermill"), str(notebook), str(out), "-p", "profile", "smoke",
                    "-y", "overrides: {shatter_depth: 3, shatter_points: 301}", "--cwd", str(source.parent)],
                   check=True, capture_output=True, env={**os.environ, "NTAYLOR_RESULTS": str(tmp_path / "results")})
    glued = _glued(out)
    assert glued["fig1_depth"] == "3" and glued["fig1_points"] == "301"
    text = json.dumps(nbformat.read(out, as_version=4).cells)
    assert "shatter_depth" in text and "(set)" in text


def test_failing_chapter_stops_the_build_and_keeps_the_others(tmp_path, capsys, monkeypatch):
    """Without MNIST the training chapter fails: the build stops naming it; earlier chapters are kept."""
    monkeypatch.setenv("NTAYLOR_BUILD", str(tmp_path))
    monkeypatch.setenv("NTAYLOR_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("NTAYLOR_DATA", str(tmp_path / "no-data"))
    # The tuning chapter comes first and needs MNIST too: take it as executed already, so
    # that the build reaches a chapter that needs no data and then the training chapter.
    tuned = tmp_path / "_build" / "executed" / "book" / "lr_tuning.ipynb"
    tuned.parent.mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(), tuned)
    assert book.build_book(get_profile("smoke"), only=["shattered_gradients", "training_curves"], html=False) == 1
    err = capsys.readouterr().err
    assert "chapter book/training_curves failed" in err and "MissingDataError" in err
    assert (tmp_path / "_build" / "executed" / "book" / "shattered_gradients.ipynb").is_file()
