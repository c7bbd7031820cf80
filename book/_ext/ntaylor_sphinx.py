"""Sphinx extension for the book: offline Vega charts, and no duplicated inline scripts.

- Serves vl-convert's bundle of Vega, Vega-Lite and vega-embed from ``_static``,
  wrapped in a function scope: as-is, its top-level ``const _`` clashes with Sphinx's
  own ``_`` global and ``vegaEmbed`` never gets defined.
- Serves MathJax from ``_static`` too (the files of the ``sphinx-mathjax-offline``
  wheel), instead of Sphinx's default CDN address.
- sphinx-thebe 0.3.1 adds its inline configuration twice (filename ``None`` and
  ``''``), so every page would log "Identifier 'THEBE_JS_URL' has already been
  declared"; scripts are de-duplicated on (filename or empty, inline body).
"""

from __future__ import annotations

from pathlib import Path

BUNDLE = "ntaylor-vega.js"


def _write_bundle(app) -> None:
    import vl_convert

    static = Path(app.doctreedir).parent / "_ntaylor_static"
    static.mkdir(parents=True, exist_ok=True)
    target = static / BUNDLE
    if not target.exists():
        target.write_text("(function () {\n" + vl_convert.javascript_bundle() + "\n})();\n")
    app.config.html_static_path.append(str(static))


def _mathjax_folder() -> Path | None:
    """The MathJax files shipped by the sphinx-mathjax-offline wheel (its folder is not an importable name)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("sphinx-mathjax-offline")
    except PackageNotFoundError:
        return None
    for file in dist.files or []:
        if file.name == "tex-chtml.js":
            return Path(dist.locate_file(file)).parent
    return None


def _offline_mathjax(app, config) -> None:
    folder = _mathjax_folder()
    if folder is not None:
        config.mathjax_path = "mathjax/tex-chtml.js"


def _copy_mathjax(app, exception) -> None:
    from sphinx.util.fileutil import copy_asset

    folder = _mathjax_folder()
    if exception is None and folder is not None and app.builder.format == "html":
        copy_asset(str(folder), str(Path(app.outdir) / "_static" / "mathjax"))


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        key = (str(getattr(script, "filename", script) or ""), getattr(script, "attributes", {}).get("body", ""))
        if key in seen:
            continue
        seen.add(key)
        kept.append(script)
    scripts[:] = kept


def setup(app):
    app.connect("config-inited", _offline_mathjax)
    app.connect("builder-inited", _write_bundle)
    app.connect("build-finished", _copy_mathjax)
    app.connect("html-page-context", _dedupe_scripts)
    # Loaded synchronously in <head>, before any chart's inline vegaEmbed call.
    app.add_js_file(BUNDLE, priority=200)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
