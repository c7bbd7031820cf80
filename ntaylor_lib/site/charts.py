"""Altair chart builders, and display that works offline in the static book.

:func:`show` emits a chart twice in one output: as Vega-Lite JSON (JupyterLab renders
it natively) and as ``text/html`` holding a ``<div>`` and a ``vegaEmbed`` call, which
the book renders with the Vega bundle served from its own ``_static`` folder (see
``book/_ext/ntaylor_sphinx.py``), so no page needs the internet. Each chart is also
saved as a static SVG beside the run results.

Imported only by pages: the core library never needs Altair.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import altair as alt
from IPython.display import display

# Okabe-Ito colours, readable by colour-blind readers, one per optimizer.
OPTIMIZER_COLOURS = {"adam": "#0072B2", "rmsprop": "#D55E00", "sgd": "#009E73"}
INTEGER_AXES = ("epoch", "depth")
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]


def _field(name: str, kind: str, title: str | None = None, **kwargs: Any) -> dict[str, Any]:
    return {"field": name, "type": kind, "title": title or name.replace("_", " "), **kwargs}


def lines(
    rows: Sequence[dict[str, Any]],
    x: str,
    y: str,
    color: str | None = None,
    *,
    title: str = "",
    x_title: str | None = None,
    y_title: str | None = None,
    log_x: bool = False,
    log_y: bool = False,
    dash: str | None = None,
    detail: str | None = None,
    colours: dict[str, str] | None = None,
    tooltip: Sequence[str] = (),
    width: int = 280,
    height: int = 220,
    points: bool = False,
    select: bool = True,
    dashes: dict[str, list[int]] | None = None,
) -> alt.Chart:
    """Lines of ``y`` against ``x`` from tidy rows, one per ``color`` value.

    With ``color`` set, clicking the legend highlights one series (legend selection);
    every point has a tooltip. ``dash`` maps a field to the stroke dash, ``detail``
    separates lines without colouring them (e.g. individual neurons); ``dashes`` fixes the
    dash pattern of each ``dash`` value (``[]`` solid, ``[4, 3]`` dashed). When layering several
    of these charts (``a + b``), give all but one ``select=False``: a layer may hold one
    legend selection only.
    """
    data = alt.Data(values=list(rows))
    enc: dict[str, Any] = {
        "x": alt.X(**_field(x, "quantitative", x_title),
                   scale=alt.Scale(type="log") if log_x else alt.Scale(zero=False),
                   # epochs and depths are counts: no fractional ticks on short runs
                   axis=alt.Axis(tickMinStep=1) if x in INTEGER_AXES else alt.Undefined),
        "y": alt.Y(**_field(y, "quantitative", y_title),
                   scale=alt.Scale(type="log") if log_y else alt.Scale(zero=False)),
        "tooltip": [alt.Tooltip(**_field(t, "quantitative" if t in (x, y) else "nominal")) for t in (x, y, *tooltip)]
        + ([alt.Tooltip(**_field(color, "nominal"))] if color else []),
    }
    chart = alt.Chart(data).mark_line(point=points, clip=True)
    if color:
        scale = alt.Scale(domain=list(colours), range=list(colours.values())) if colours else alt.Scale(range=PALETTE)
        enc["color"] = alt.Color(**_field(color, "nominal"), scale=scale)
        if select:
            pick = alt.selection_point(fields=[color], bind="legend")
            enc["opacity"] = alt.condition(pick, alt.value(1.0), alt.value(0.15))
            chart = chart.add_params(pick)
    if dash:
        dash_scale = alt.Scale(domain=list(dashes), range=list(dashes.values())) if dashes else alt.Undefined
        enc["strokeDash"] = alt.StrokeDash(**_field(dash, "nominal"), scale=dash_scale)
    if detail:
        enc["detail"] = alt.Detail(**_field(detail, "nominal"))
    return chart.encode(**enc).properties(title=title, width=width, height=height)


def band(
    rows: Sequence[dict[str, Any]],
    x: str,
    lower: str,
    upper: str,
    color: str | None = None,
    *,
    colours: dict[str, str] | None = None,
    opacity: float = 0.2,
    y_title: str | None = None,
    width: int = 280,
    height: int = 220,
) -> alt.Chart:
    """A shaded band between ``lower`` and ``upper`` (e.g. mean +- 1 sd), one per ``color`` value.

    Layer it under :func:`lines` of the same rows (``band(...) + lines(...)``) with the same
    ``y_title``; its colour legend merges with the lines', whose selection stays the only one.
    """
    enc: dict[str, Any] = {
        "x": alt.X(**_field(x, "quantitative")),
        "y": alt.Y(**_field(lower, "quantitative", y_title)),
        "y2": alt.Y2(field=upper),
    }
    if color:
        scale = alt.Scale(domain=list(colours), range=list(colours.values())) if colours else alt.Scale(range=PALETTE)
        enc["color"] = alt.Color(**_field(color, "nominal"), scale=scale)
    return (alt.Chart(alt.Data(values=list(rows))).mark_area(opacity=opacity, clip=True)
            .encode(**enc).properties(width=width, height=height))


def exploration_colours(labels: Sequence[str]) -> dict[str, str]:
    """Colours for Figure 5's runs: Adam's and RMSProp's own, then one Okabe-Ito colour per SGD rate
    (SGD's green first)."""
    spare = iter(["#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#000000", "#F0E442"])
    return {label: OPTIMIZER_COLOURS.get(label) or next(spare) for label in labels}


def scatter(
    rows: Sequence[dict[str, Any]],
    x: str,
    y: str,
    color: str | None = None,
    *,
    title: str = "",
    x_title: str | None = None,
    y_title: str | None = None,
    log_y: bool = False,
    colours: dict[str, str] | None = None,
    tooltip: Sequence[str] = (),
    width: int = 280,
    height: int = 220,
) -> alt.Chart:
    """Points of ``y`` against ``x``, one colour per ``color`` value (legend selection as in :func:`lines`)."""
    return lines(rows, x, y, color, title=title, x_title=x_title, y_title=y_title, log_y=log_y, colours=colours,
                 tooltip=tooltip, width=width, height=height).mark_point(filled=True, size=30, clip=True)


def row(*charts: alt.TopLevelMixin) -> alt.HConcatChart:
    """Charts side by side, sharing one legend selection per field.

    Altair merges the panels' identical legend selections (so a click highlights the
    same optimizer everywhere) and warns that it did; that merge is what we want.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Automatically deduplicated selection parameter")
        return alt.hconcat(*charts)


def spec_of(chart: alt.TopLevelMixin) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Automatically deduplicated selection parameter")
        return chart.to_dict()


def embed_html(spec: dict[str, Any]) -> str:
    """A ``<div>`` and the ``vegaEmbed`` call that fills it; the id is a hash of the spec, so re-runs match."""
    payload = json.dumps(spec, sort_keys=True)
    chart_id = "ntaylor-chart-" + hashlib.sha256(payload.encode()).hexdigest()[:12]
    return (
        f'<div class="ntaylor-chart" id="{chart_id}"></div>\n'
        "<script type=\"text/javascript\">\n"
        "(function () {\n"
        f"  var spec = {payload};\n"
        f"  function draw() {{ window.vegaEmbed('#{chart_id}', spec, {{actions: false, renderer: 'svg'}})"
        ".catch(function (e) { console.error('ntaylor-chart failed: ' + e); }); }\n"
        "  if (window.vegaEmbed) { draw(); } else { window.addEventListener('load', draw); }\n"
        "})();\n"
        "</script>"
    )


def save_static(chart: alt.TopLevelMixin, path: Path) -> Path:
    """Save the chart as a static SVG (through vl-convert, offline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Automatically deduplicated selection parameter")
        chart.save(str(path), format="svg")
    return path


def show(chart: alt.TopLevelMixin, name: str | None = None, save_dir: Path | None = None) -> None:
    """Display ``chart`` for both JupyterLab and the static book; save it as ``save_dir/name.svg``."""
    # Legends below the panels: beside two panels they overflow the page's ~740 px column.
    chart = chart.configure_legend(orient="bottom")
    spec = spec_of(chart)
    bundle = {
        f"application/vnd.vegalite.v{alt.SCHEMA_VERSION.lstrip('v').split('.')[0]}+json": spec,
        "text/html": embed_html(spec),
        "text/plain": f"<chart {name or ''}>",
    }
    display(bundle, raw=True)
    if name and save_dir is not None:
        save_static(chart, Path(save_dir) / f"{name}.svg")
