"""The table that maps the paper to pages and functions (front page and README) names only what exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _table_rows(text: str) -> list[list[str]]:
    start = text.index("| paper |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@pytest.mark.parametrize("source", ["README.md", "book/intro.md"])
def test_every_page_and_function_of_the_paper_map_exists(source):
    rows = _table_rows((ROOT / source).read_text())
    assert len(rows) >= 12
    for paper, page, functions in rows:
        stem = re.search(r"`([a-z_0-9]+)`|\{doc\}`([a-z_0-9]+)`", page)
        stem = next(g for g in stem.groups() if g)
        assert (ROOT / "book" / f"{stem}.md").is_file(), (source, paper, stem)
        for name in re.findall(r"`([a-z_.A-Z0-9]+)`", functions):
            module, _, attr = f"ntaylor_lib.{name}".rpartition(".")
            try:
                target = importlib.import_module(f"ntaylor_lib.{name}")  # a module named whole
            except ModuleNotFoundError:
                target = getattr(importlib.import_module(module), attr, None)
            assert target is not None, (source, paper, name)
