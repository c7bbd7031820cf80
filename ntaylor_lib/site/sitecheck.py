"""Check the built book in a real browser: every page loads, every chart renders, no JavaScript error.

Runs Debian's headless Chromium on each HTML page (from ``file://``, so nothing is
fetched from the network), dumps the DOM after the page's scripts have run, and reads
the console log. ``python -m ntaylor_lib.site.sitecheck [_build/html]`` prints a report.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Console lines that mean something broke: uncaught exceptions, errors, failed loads,
# and the message our chart embedding logs when vegaEmbed rejects a spec.
_ERROR = re.compile(r"Uncaught|\bError\b|TypeError|ReferenceError|SyntaxError|Failed to load|ntaylor-chart failed")
_CONSOLE = re.compile(r':CONSOLE[^\]]*\] "(?P<message>.*)", source: (?P<source>.*)$')


@dataclass
class PageReport:
    page: str
    charts: int = 0
    rendered: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.rendered == self.charts


class _ChartFinder(HTMLParser):
    """Counts ``div.ntaylor-chart`` elements and those holding an ``<svg>`` or ``<canvas>``."""

    def __init__(self) -> None:
        super().__init__()
        self.charts = 0
        self.rendered = 0
        self._depth = 0  # nesting depth inside the current chart div, 0 = outside
        self._found = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if self._depth:
            if tag in ("svg", "canvas"):
                self._found = True
            if tag == "div":
                self._depth += 1
        elif tag == "div" and "ntaylor-chart" in classes:
            self.charts += 1
            self._depth, self._found = 1, False

    def handle_endtag(self, tag: str) -> None:
        if self._depth and tag == "div":
            self._depth -= 1
            if self._depth == 0 and self._found:
                self.rendered += 1


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def check_page(page: Path, chromium: str, budget_ms: int = 15000, timeout_s: int = 120) -> PageReport:
    """Load ``page`` in headless Chromium and report its charts and console errors."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             f"--virtual-time-budget={budget_ms}", "--dump-dom", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout_s,
        )
    report = PageReport(page=str(page))
    if done.returncode != 0 or "<html" not in done.stdout:
        report.errors.append(f"chromium exited {done.returncode} without a page: {done.stderr[-500:]}")
        return report
    finder = _ChartFinder()
    finder.feed(done.stdout)
    report.charts, report.rendered = finder.charts, finder.rendered
    for line in done.stderr.splitlines():
        match = _CONSOLE.search(line)
        if match and _ERROR.search(match["message"]):
            report.errors.append(f"{match['message']} ({match['source']})")
    return report


def check_site(html_dir: Path, chromium: str | None = None) -> list[PageReport]:
    """Check every content page of a built book (search and index pages excluded)."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no Chromium found: install Debian's package with `apt-get install chromium`")
    pages = sorted(p for p in Path(html_dir).rglob("*.html")
                   if "_static" not in p.parts and "_sources" not in p.parts
                   and p.name not in ("genindex.html", "search.html"))
    return [check_page(p, chromium) for p in pages]


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    html_dir = Path(args[0]) if args else Path("_build/html")
    reports = check_site(html_dir)
    for r in reports:
        print(f"{'ok  ' if r.ok else 'FAIL'} {r.page}: {r.rendered}/{r.charts} charts rendered"
              + "".join(f"\n     {e}" for e in r.errors))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
