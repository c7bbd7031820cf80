"""HTML tables for the book's pages: plain tables of rows, and the claims with their verdicts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from ..paper.claims import NOT_MEASURABLE, NOT_REPRODUCED, NOT_SUPPORTED, REPRODUCED, SUPPORTED, ClaimRow, Column


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


VERDICT_COLOURS = {REPRODUCED: "#d7f0dc", NOT_REPRODUCED: "#f8d7da", NOT_MEASURABLE: "#e4e4e4",
                   SUPPORTED: "#d7f0dc", NOT_SUPPORTED: "#f8d7da"}


def chapter_link(chapter: str) -> str:
    """Relative URL of a chapter from any page of the built book (all chapters sit in ``_build/html/book/``)."""
    return f"{Path(chapter).name}.html"


def format_number(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _verdict(result: Any, link: str) -> str:
    """A verdict as a coloured link to the chapter holding its evidence, its reason beneath."""
    badge = (f'<a href="{escape(link)}" style="background:{VERDICT_COLOURS[result.verdict]};padding:0 0.3em;'
             f'border-radius:3px;white-space:nowrap" class="ntaylor-verdict">{escape(result.verdict)}</a>')
    return badge + (f"<br><small>{escape(result.reason)}</small>" if result.reason else "")


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
        verdict = _verdict(r, chapter_link(row.claim.chapter))
        cells = [f"<strong>{row.claim.id}</strong>", escape(row.claim.statement)]
        if not compact:
            numbers = "<br>".join(f"{escape(k)}: {escape(format_number(v))}" for k, v in r.numbers.items())
            cells += [escape(r.rule), f"<small>{numbers or '–'}</small>"]
        cells += [verdict, f'<a href="{link}">{escape(row.claim.title)}</a>']
        body.append("<tr>" + "".join(f'<td style="vertical-align:top">{c}</td>' for c in cells) + "</tr>")
    header = "".join(f"<th>{h}</th>" for h in head)
    return (f'<table class="ntaylor-table ntaylor-claims"><thead><tr>{header}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _duration(seconds: float | None) -> str:
    if not seconds:
        return "–"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def claims_matrix(columns: Sequence[Column]) -> str:
    """The verdicts of every setting side by side: a row per claim, a column per setting, each column
    headed by how its records were made (date, commit, device, the book build's wall time) and, for a
    reference shipped with the book, that it was recorded, not recomputed, with the command that recomputes it."""
    if not columns:
        return "<p>No claim records yet.</p>"
    heads = []
    for column in columns:
        p = column.provenance()
        facts = [f"recorded {escape(p['date'] or '–')}", f"commit <code>{escape(p['commit'] or '–')}</code>",
                 escape(p["device"] or "–"), f"book built in {_duration(p['wall_s'])}"]
        if column.reference:
            facts.append("<strong>shipped with the book: recorded, not recomputed here</strong>")
            if p["command"]:
                facts.append(f"recompute: <code>{escape(p['command'])}</code>")
        facts_html = "<br>".join(facts)
        heads.append(f'<th style="vertical-align:top">{escape(column.label)}<br><small>{facts_html}</small></th>')
    body = []
    for i, claim in enumerate(columns[0].rows):
        cells = [f"<td><strong>{claim.claim.id}</strong></td>", f"<td>{escape(claim.claim.statement)}</td>"]
        for column in columns:
            cell = _verdict(column.rows[i].result, chapter_link(claim.claim.chapter))
            cells.append(f'<td style="vertical-align:top">{cell}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="ntaylor-table ntaylor-claims"><thead><tr><th>claim</th><th>statement</th>{"".join(heads)}'
            f'</tr></thead><tbody>{"".join(body)}</tbody></table>')
