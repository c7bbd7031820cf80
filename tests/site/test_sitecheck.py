"""The browser check that guards every page: unrendered charts and script errors are caught."""

from __future__ import annotations

import pytest

from ntaylor_lib.site.sitecheck import check_page, find_chromium

pytestmark_chromium = pytest.mark.skipif(find_chromium() is None, reason="needs Debian's chromium")


@pytestmark_chromium
def test_sitecheck_catches_unrendered_charts_and_errors(tmp_path):
    good = tmp_path / "good.html"
    good.write_text('<html><body><div class="ntaylor-chart"><div><svg></svg></div></div></body></html>')
    blank = tmp_path / "blank.html"
    blank.write_text('<html><body><div class="ntaylor-chart"></div></body></html>')
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>const _ = 1;</script><script>const _ = 2;</script></body></html>")
    chromium = find_chromium()
    assert check_page(good, chromium).ok
    report = check_page(blank, chromium)
    assert (report.charts, report.rendered, report.ok) == (1, 0, False)
    report = check_page(broken, chromium)
    assert not report.ok and "already been declared" in report.errors[0]
