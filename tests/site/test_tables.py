"""HTML tables of the pages: plain rows, and the claims linked to the chapters that decide them."""

from __future__ import annotations

from pathlib import Path

from ntaylor_lib.paper import claims
from ntaylor_lib.paper.claims import NOT_MEASURABLE, NOT_REPRODUCED, REPRODUCED
from ntaylor_lib.runs.profiles import get_profile
from ntaylor_lib.site import book, tables
from ntaylor_lib.site.tables import html_table

ROOT = Path(__file__).resolve().parents[2]


def test_html_table():
    text = html_table([{"a": 0.123, "b": float("nan"), "c": "<x>"}], ["a", "b", "c"], caption="t")
    assert "0.12" in text and "&ndash;" in text and "&lt;x&gt;" in text and "<caption>t</caption>" in text


def test_table_html_links_each_verdict_to_an_existing_chapter_in_the_toc(tmp_path):
    toc = set(book.toc_files())
    for claim in claims.CLAIMS.values():
        assert claim.chapter in toc and (ROOT / f"{claim.chapter}.md").is_file(), claim
        assert tables.chapter_link(claim.chapter) == f"{Path(claim.chapter).name}.html"
    claims.record(claims.c2_convnet_fits({"adam": 1.0, "rmsprop": 1.0, "sgd": 0.5}), get_profile("smoke"),
                  root=tmp_path)
    rows = claims.table(get_profile("smoke"), root=tmp_path)
    for compact in (False, True):
        html = tables.claims_table(rows, compact=compact)
        assert html.count('class="ntaylor-verdict"') == 7
        assert 'href="training_curves.html"' in html and 'href="theorem2.html"' in html
        assert "not reproduced" in html and "has not been executed at profile smoke" in html
        assert ("lowest accuracy" in html) is not compact
    assert claims.counts(rows) == {REPRODUCED: 0, NOT_REPRODUCED: 1, NOT_MEASURABLE: 6}
