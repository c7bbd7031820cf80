"""Small Jupytext MyST notebooks for the tests that execute one (sweeps, interrupts, the book's progress)."""

from __future__ import annotations

FRONT_MATTER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""


def myst_notebook(parameters: str, *cells: str) -> str:
    """A notebook with a ``parameters`` cell holding ``parameters`` and then one code cell per ``cells``."""
    def cell(source: str, tags: str = "") -> str:
        return f"\n```{{code-cell}} ipython3\n{tags}{source.strip()}\n```\n"

    return FRONT_MATTER + cell(parameters, ":tags: [parameters]\n\n") + "".join(cell(c) for c in cells)
