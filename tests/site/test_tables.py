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


def test_the_claims_matrix_says_how_each_column_was_made(tmp_path):
    store, reference = tmp_path / "results", tmp_path / "reference"
    smoke, paper = get_profile("smoke"), get_profile("paper", {"tasks": "autoencoder", "device": "cpu"})
    claims.record(claims.c2_convnet_fits({"adam": 1.0, "rmsprop": 1.0, "sgd": 0.5}), smoke, root=store)
    shipped = claims.record(claims.c2_convnet_fits({"adam": 1.0, "rmsprop": 1.0, "sgd": 1.0}), paper,
                            root=tmp_path / "x")
    claims.record_build(paper, {"book/x": 3600.0}, "bash scripts/book.sh --profile paper --set tasks=autoencoder",
                        root=tmp_path / "x")
    (reference / shipped.parent.name).mkdir(parents=True)
    for name in ("C2.json", "build.json"):
        (reference / shipped.parent.name / name).write_text((shipped.parent / name).read_text())
    html = tables.claims_matrix(claims.columns(smoke, root=store, reference=reference))
    assert html.count("<th>") + html.count("<th style") == 2 + 2 and html.count('class="ntaylor-verdict"') == 2 * 7
    assert "recorded, not recomputed here" in html and "bash scripts/book.sh --profile paper" in html
    assert "book built in 1 h 00 min" in html and "commit <code>" in html
    assert "no claim records" in tables.claims_matrix([]).lower()
