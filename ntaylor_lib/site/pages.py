"""Helpers for the book's pages: the set-up cell every chapter starts with.

Imported only by notebooks (needs IPython).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from IPython.display import HTML, display

from ..paper.tuning import learning_rate
from ..runs.allocator import retain_freed_memory
from ..runs.files import default_results_root
from ..runs.profiles import OPTIMIZERS, TASKS, ParameterError, Profile, get_profile


def figure_dir(params: Profile) -> Path:
    """Where a page saves its static figures: beside the run results, one folder per profile."""
    return default_results_root() / "figures" / params.name


def _shown_value(params: Profile, key: str) -> str:
    """A parameter as the runs use it: a learning rate from the tuning when ``lr_source`` is tuned."""
    prefix, _, rest = key.partition("_")
    task, _, optimizer = rest.rpartition("_")
    tuned = params["lr_source"] == "tuned" and key not in params.overrides
    value = params[key]
    if prefix != "lr" or task not in TASKS or optimizer not in OPTIMIZERS or not tuned:
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if isinstance(value, tuple) \
            else str(value)
    try:
        return f"{learning_rate(params, task, optimizer):g} (tuned; profile default {params[key]:g})"
    except ParameterError:
        return f"{params[key]:g} (tuning not run yet)"


def page_setup(profile: str, overrides: Mapping[str, Any] | None = None, keys: Sequence[str] = ()) -> Profile:
    """Resolve the page's profile and show, at the top of the page, what it runs with.

    Args:
        profile: the profile name (the page's papermill parameter).
        overrides: ``{key: value}`` on top of the profile (the page's other parameter).
        keys: the parameters this page uses, listed in the table.

    Returns:
        The validated parameters.
    """
    retain_freed_memory()  # the page's kernel reuses freed blocks (ntaylor_lib.runs.allocator)
    params = get_profile(profile, dict(overrides or {}))
    changed = set(overrides or {})
    note = f" with {', '.join(f'<code>{escape(k)}</code>' for k in sorted(changed))} overridden" if changed else ""
    rows = "".join(
        f"<tr><td><code>{escape(k)}</code></td><td><code>{escape(_shown_value(params, k))}</code>"
        f"{' (set)' if k in changed else ''}</td></tr>"
        for k in keys
    )
    display(HTML(
        f'<div class="ntaylor-parameters"><p>Run at profile <strong><code>{escape(profile)}</code></strong>{note}.</p>'
        f"<table><thead><tr><th>parameter</th><th>value</th></tr></thead><tbody>{rows}</tbody></table></div>"
    ))
    return params
