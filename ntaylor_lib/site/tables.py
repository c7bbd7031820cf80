"""HTML tables for the book's pages: plain tables of rows, and the claims with their verdicts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from ..paper.claims import NOT_MEASURABLE, NOT_REPRODUCED, REPRODUCED, ClaimRow


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], caption: str = "") -> str:
    """A plain HTML table of ``rows`` (floats to 2 decimals, ``nan`` as an en dash)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "&ndash;" if math.isnan(v) else f"{v:.2f}"
        return escape(str(v))

    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f'<table class="ntaylor-table">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


VERDICT_COLOURS = {REPRODUCED: "#d7f0dc", NOT_REPRODUCED: "#f8d7da", NOT_MEASURABLE: "#e4e4e4"}


def chapter_link(chapter: str) -> str:
    """Relative URL of a chapter from any page of the built book (all chapters sit in ``_build/html/book/``)."""
    return f"{Path(chapter).name}.html"


def format_number(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def claims_table(rows: Sequence[ClaimRow], compact: bool = False) -> str:
    """The claims as an HTML table; each verdict links to the chapter holding its evidence.

    ``compact``: claim, statement, verdict and link only (the front page); otherwise also the rule
    and the measured numbers (the claims page).
    """
    head = ["claim", "statement", "verdict", "evidence"] if compact else \
        ["claim", "statement", "rule", "measured", "verdict", "evidence"]
    body = []
    for row in rows:
        r, link = row.result, escape(chapter_link(row.claim.chapter))
        verdict = (f'<a href="{link}" style="background:{VERDICT_COLOURS[r.verdict]};padding:0 0.3em;'
                   f'border-radius:3px;white-space:nowrap" class="ntaylor-verdict">{escape(r.verdict)}</a>')
        if r.reason:
            verdict += f'<br><small>{escape(r.reason)}</small>'
        cells = [f"<strong>{row.claim.id}</strong>", escape(row.claim.statement)]
        if not compact:
            numbers = "<br>".join(f"{escape(k)}: {escape(format_number(v))}" for k, v in r.numbers.items())
            cells += [escape(r.rule), f"<small>{numbers or '–'}</small>"]
        cells += [verdict, f'<a href="{link}">{escape(row.claim.title)}</a>']
        body.append("<tr>" + "".join(f'<td style="vertical-align:top">{c}</td>' for c in cells) + "</tr>")
    header = "".join(f"<th>{h}</th>" for h in head)
    return (f'<table class="ntaylor-table ntaylor-claims"><thead><tr>{header}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')
