"""The paper's claims C1 to C7 (DESIGN.md section 3): one rule each, verdicts recorded per profile.

Each claim is data (:data:`CLAIMS`: statement, the chapter holding its evidence, the rule
in words) and one small pure function from the measured numbers to a :class:`ClaimResult`
whose verdict is ``"reproduced"``, ``"not reproduced"`` or ``"not measurable"`` (with the
reason: a diverged run, no fitted slope, a missing optimizer). The chapters call these
functions, so a chapter and the claims page apply one rule, then :func:`record` the result::

    <results root>/claims/<profile>/<claim>.json   verdict, numbers, rule, chapter, parameters, provenance

(results root: ``$NTAYLOR_RESULTS``, else ``results/``, as for the run store). :func:`table`
reads the seven records back for one profile; a claim whose chapter has not been executed at
that profile (or was executed with other overrides) is "not measurable", never guessed.

Example::

    result = claims.c3_sgd_worse({"adam": 0.011, "rmsprop": 0.012, "sgd": 0.020})
    claims.record(result, profile="smoke", params=params)
    rows = claims.table("smoke")
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from .regret import REGRET_RESOLUTION
from .store import atomic_save_json, default_results_root, environment
from .training import resolve_device

REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE = "reproduced", "not reproduced", "not measurable"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE)
RECORD_FORMAT = 1

# Thresholds, moved unchanged from the chapters that first typed them.
SLOPE_TOLERANCE = 0.1  # C1: a log-log slope counts as sqrt(N) growth when <= 0.5 + this
FIT_ACCURACY = 0.99  # C2: "about 99%" training accuracy
SGD_MARGIN = 1.1  # C3, C7: "clearly / significantly worse" = final loss at least 10% higher
EQUAL_ACCURACY = 0.01  # C7: convnet optimizers "perform equally well" = accuracies within 1 point


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: what it says, where the book measures it, how it is decided."""

    id: str
    statement: str
    chapter: str  # book path, e.g. "book/theorem2"
    title: str  # the chapter's short name, for links
    rule: str


CLAIMS: dict[str, Claim] = {c.id: c for c in (
    Claim("C1", "Regret grows like sqrt N for every optimizer, scale and task (log-log slope).",
          "book/theorem2", "Theorem 2",
          f"Every fitted log-log slope of regret against N (box x1, every stored run and recorded scale) is at most "
          f"0.5 + {SLOPE_TOLERANCE:g}; fits without two horizons of positive regret above {REGRET_RESOLUTION:g} "
          f"of N TO(N) (the optimum's rounding) are not counted."),
    Claim("C2", "Convnet: all optimizers fit the training set (about 99% at paper scale).",
          "book/training_curves", "Figure 6",
          f"The lowest final training accuracy of Adam, RMSProp and SGD on the convnet is at least {FIT_ACCURACY:.0%}."),
    Claim("C3", "Autoencoder: the best fixed-rate SGD is clearly worse than Adam and RMSProp.",
          "book/training_curves", "Figure 6",
          f"SGD's final training loss on the autoencoder exceeds {SGD_MARGIN:g} times the worse of Adam's and RMSProp's."),
    Claim("C4", "Autoencoder: adaptive optimizers have a smaller gap between incurred and Taylor optimal loss.",
          "book/figure4", "Figure 4",
          "Adam's and RMSProp's AL(N) - TO(N) at the recorded autoencoder layer, last horizon, box x1, "
          "are both below SGD's."),
    Claim("C5", "RMSProp explores more than SGD on all three metrics, both tasks, every SGD rate.",
          "book/figure5", "Figure 5",
          "For each task and metric (novelty: mean over epochs >= 1; switches: mean over probe inputs; "
          "log-volume: median over units), RMSProp's number is larger than every SGD rate's, in all 6 cells."),
    Claim("C6", "Adam explores less than RMSProp but more than SGD (Hamming, switches).",
          "book/figure5", "Figure 5",
          "For each task and metric (novelty, switches), Adam's number is smaller than RMSProp's and larger than "
          "every SGD rate's, in all 4 cells."),
    Claim("C7", "RMSProp reaches a better optimum than SGD on the autoencoder, none better on the convnet.",
          "book/training_curves", "Figure 6",
          f"Autoencoder: SGD's final training loss exceeds {SGD_MARGIN:g} times RMSProp's. Convnet: the final "
          f"training accuracies of Adam, RMSProp and SGD lie within {100 * EQUAL_ACCURACY:g} percentage point of "
          f"each other. Both must hold."),
)}


@dataclass(frozen=True)
class ClaimResult:
    """A claim's verdict at one profile, the numbers it was decided on, and the rule used."""

    claim: str
    verdict: str
    numbers: dict[str, Any]
    rule: str
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.claim not in CLAIMS:
            raise ValueError(f"unknown claim {self.claim!r}; the claims are {', '.join(CLAIMS)}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; use one of {', '.join(VERDICTS)}")


def _result(claim: str, holds: bool, numbers: dict[str, Any]) -> ClaimResult:
    return ClaimResult(claim, REPRODUCED if holds else NOT_REPRODUCED, numbers, CLAIMS[claim].rule)


def _unmeasurable(claim: str, reason: str, numbers: dict[str, Any] | None = None) -> ClaimResult:
    return ClaimResult(claim, NOT_MEASURABLE, numbers or {}, CLAIMS[claim].rule, reason)


def _missing(values: Mapping[str, float], needed: Sequence[str], what: str) -> str | None:
    """A reason when some needed value is absent or not finite (a diverged run), else None."""
    absent = [k for k in needed if k not in values]
    bad = [k for k in needed if k in values and not math.isfinite(float(values[k]))]
    if absent:
        return f"no {what} for {', '.join(absent)} at this profile"
    if bad:
        return f"{', '.join(bad)} diverged or has no finite {what}"
    return None


def final_values(runs: Mapping[str, Any], key: str) -> dict[str, float]:
    """Last-epoch ``key`` of each stored run (``Run.epoch_table``); NaN for a run that did not complete."""
    out = {}
    for name, run in runs.items():
        table = run.epoch_table() if run.status == "complete" else []
        out[name] = float(table[-1][key]) if table else float("nan")
    return out


def c1_regret_growth(fits: Sequence[Mapping[str, Any]], tolerance: float = SLOPE_TOLERANCE) -> ClaimResult:
    """C1 from fitted slopes ``[{"slope", "task", "optimizer", "scale"}, ...]`` (NaN: fewer than two positive horizons)."""
    measured = [f for f in fits if math.isfinite(float(f["slope"]))]
    numbers: dict[str, Any] = {"fits": len(fits), "measured": len(measured), "bound": 0.5 + tolerance}
    if not measured:
        return _unmeasurable("C1", f"none of the {len(fits)} fits had two horizons with resolved positive regret "
                                   "(regret stayed at or below zero, or no scale was recorded)", numbers)
    slopes = sorted(float(f["slope"]) for f in measured)
    worst = max(measured, key=lambda f: float(f["slope"]))
    numbers.update({"passing": sum(1 for s in slopes if s <= 0.5 + tolerance), "median slope": slopes[len(slopes) // 2],
                    "largest slope": float(worst["slope"]),
                    "largest at": f"{worst.get('task', '?')}, {worst.get('optimizer', '?')}, {worst.get('scale', '?')}"})
    return _result("C1", numbers["passing"] == len(measured), numbers)


def c2_convnet_fits(accuracies: Mapping[str, float], threshold: float = FIT_ACCURACY) -> ClaimResult:
    """C2 from the convnet's final training accuracy (fraction) per optimizer."""
    numbers = {f"{opt} accuracy": float(v) for opt, v in accuracies.items()}
    reason = _missing(accuracies, ("adam", "rmsprop", "sgd"), "final training accuracy")
    if reason:
        return _unmeasurable("C2", reason, numbers)
    numbers["lowest accuracy"] = min(float(v) for v in accuracies.values())
    return _result("C2", numbers["lowest accuracy"] >= threshold, numbers)


def c3_sgd_worse(losses: Mapping[str, float], margin: float = SGD_MARGIN) -> ClaimResult:
    """C3 from the autoencoder's final training loss per optimizer."""
    numbers = {f"{opt} loss": float(v) for opt, v in losses.items()}
    reason = _missing(losses, ("adam", "rmsprop", "sgd"), "final training loss")
    if reason:
        return _unmeasurable("C3", reason, numbers)
    worse_adaptive = max(losses["adam"], losses["rmsprop"])
    numbers["sgd / worse adaptive"] = losses["sgd"] / worse_adaptive if worse_adaptive > 0 else float("inf")
    return _result("C3", losses["sgd"] > margin * worse_adaptive, numbers)


def c4_taylor_gap(gaps: Mapping[str, float], layer: int | None = None, epoch: int | None = None) -> ClaimResult:
    """C4 from the autoencoder's gap ``AL(N) - TO(N)`` at the last horizon, per optimizer."""
    numbers: dict[str, Any] = {f"{opt} gap": float(v) for opt, v in gaps.items()}
    numbers.update({k: v for k, v in (("layer", layer), ("epoch", epoch)) if v is not None})
    reason = _missing(gaps, ("adam", "rmsprop", "sgd"), "Taylor gap")
    if reason:
        return _unmeasurable("C4", reason, numbers)
    return _result("C4", gaps["adam"] < gaps["sgd"] and gaps["rmsprop"] < gaps["sgd"], numbers)


def _exploration_cells(summary: Mapping[str, Mapping[str, Mapping[str, float]]], metrics: Sequence[str],
                       needed: Sequence[str], claim: str) -> tuple[list[tuple[str, str]], ClaimResult | None]:
    """The (task, metric) cells to decide, or a not-measurable result when a number is missing."""
    cells = [(task, metric) for task in summary for metric in metrics]
    if not cells:
        return cells, _unmeasurable(claim, "no exploration summaries at this profile")
    for task, metric in cells:
        values = {label: s[metric] for label, s in summary[task].items() if metric in s}
        reason = _missing(values, needed, f"{metric} on the {task}")
        if reason:
            return cells, _unmeasurable(claim, reason)
    return cells, None


def _cell_numbers(held: Mapping[tuple[str, str], bool]) -> dict[str, Any]:
    """``{"<task> <metric>": "holds" | "fails", ..., "cells holding": k, "cells": n}``."""
    cells: dict[str, Any] = {f"{task} {metric}": "holds" if ok else "fails" for (task, metric), ok in held.items()}
    return {**cells, "cells holding": sum(held.values()), "cells": len(held)}


def c5_rmsprop_explores(summary: Mapping[str, Mapping[str, Mapping[str, float]]], sgd: Sequence[str]) -> ClaimResult:
    """C5 from ``summary[task][run label][metric]`` (``exploration.exploration_summary``); ``sgd``: SGD labels."""
    if not sgd:
        return _unmeasurable("C5", "no SGD runs at this profile")
    cells, unmeasurable = _exploration_cells(summary, ("novelty", "switches", "volume"), ["rmsprop", *sgd], "C5")
    if unmeasurable:
        return unmeasurable
    held = {(t, m): all(summary[t]["rmsprop"][m] > summary[t][label][m] for label in sgd) for t, m in cells}
    return _result("C5", all(held.values()), _cell_numbers(held))


def c6_adam_between(summary: Mapping[str, Mapping[str, Mapping[str, float]]], sgd: Sequence[str]) -> ClaimResult:
    """C6 from ``summary[task][run label][metric]`` (novelty and switches only); ``sgd``: SGD labels."""
    if not sgd:
        return _unmeasurable("C6", "no SGD runs at this profile")
    cells, unmeasurable = _exploration_cells(summary, ("novelty", "switches"), ["adam", "rmsprop", *sgd], "C6")
    if unmeasurable:
        return unmeasurable
    held = {(t, m): summary[t]["adam"][m] < summary[t]["rmsprop"][m]
            and all(summary[t]["adam"][m] > summary[t][label][m] for label in sgd) for t, m in cells}
    return _result("C6", all(held.values()), _cell_numbers(held))


def c7_better_optimum(autoencoder_losses: Mapping[str, float], convnet_accuracies: Mapping[str, float],
                      margin: float = SGD_MARGIN, equal: float = EQUAL_ACCURACY) -> ClaimResult:
    """C7 from the autoencoder's final training loss and the convnet's final training accuracy per optimizer."""
    numbers = {f"autoencoder {opt} loss": float(v) for opt, v in autoencoder_losses.items() if opt in ("rmsprop", "sgd")}
    numbers.update({f"convnet {opt} accuracy": float(v) for opt, v in convnet_accuracies.items()})
    reason = (_missing(autoencoder_losses, ("rmsprop", "sgd"), "final autoencoder training loss")
              or _missing(convnet_accuracies, ("adam", "rmsprop", "sgd"), "final convnet training accuracy"))
    if reason:
        return _unmeasurable("C7", reason, numbers)
    rms, sgd = autoencoder_losses["rmsprop"], autoencoder_losses["sgd"]
    numbers["autoencoder sgd / rmsprop"] = sgd / rms if rms > 0 else float("inf")
    spread = max(convnet_accuracies.values()) - min(convnet_accuracies.values())
    numbers["convnet accuracy spread"] = float(spread)
    return _result("C7", sgd > margin * rms and spread <= equal, numbers)


# Recording and reading back.


def record_path(claim: str, profile: str, root: Path | None = None) -> Path:
    return Path(root or default_results_root()) / "claims" / profile / f"{claim}.json"


def record(result: ClaimResult, profile: str, params: Mapping[str, Any] | None = None,
           overrides: Mapping[str, Any] | None = None, root: Path | None = None) -> Path:
    """Write ``result`` for ``profile`` atomically, with the chapter, parameters and provenance; returns the path."""
    claim = CLAIMS[result.claim]
    payload = {
        "format": RECORD_FORMAT, "claim": result.claim, "statement": claim.statement, "chapter": claim.chapter,
        "verdict": result.verdict, "reason": result.reason, "rule": result.rule,
        "numbers": [[k, v] for k, v in result.numbers.items()],  # pairs: JSON keeps their order
        "profile": profile, "overrides": dict(overrides or {}), "params": dict(params or {}),
        "provenance": {**environment(resolve_device(str((params or {}).get("device", "cpu")))),
                       "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }
    path = record_path(result.claim, profile, root)
    atomic_save_json(payload, path)
    return path


@dataclass(frozen=True)
class ClaimRow:
    """One line of the claims table: the claim, its result at the profile, and how that was recorded."""

    claim: Claim
    result: ClaimResult
    provenance: dict[str, Any] = field(default_factory=dict)


def _read(claim: Claim, profile: str, overrides: Mapping[str, Any], root: Path | None) -> ClaimRow:
    path = record_path(claim.id, profile, root)
    not_run = f"chapter {claim.chapter} has not been executed at profile {profile}"
    if not path.is_file():
        return ClaimRow(claim, _unmeasurable(claim.id, not_run))
    try:
        data = json.loads(path.read_text())
        if data.get("format") != RECORD_FORMAT:
            raise ValueError(f"record format {data.get('format')}, this library reads {RECORD_FORMAT}")
        numbers = {str(k): v for k, v in data["numbers"]}
        result = ClaimResult(claim.id, data["verdict"], numbers, data["rule"], data.get("reason"))
        if data["profile"] != profile or data["claim"] != claim.id:
            return ClaimRow(claim, _unmeasurable(claim.id, f"{not_run} (the record at {path} says profile "
                                                           f"{data['profile']}, claim {data['claim']})"))
    except (OSError, ValueError, KeyError, TypeError) as error:
        return ClaimRow(claim, _unmeasurable(claim.id, f"the record {path} cannot be read ({error}); "
                                                       f"execute chapter {claim.chapter} again"))
    if dict(data.get("overrides") or {}) != dict(overrides):
        return ClaimRow(claim, _unmeasurable(
            claim.id, f"chapter {claim.chapter} was last executed at profile {profile} with overrides "
                      f"{data.get('overrides') or {}}, not {dict(overrides)}"))
    return ClaimRow(claim, result, dict(data.get("provenance") or {}))


def table(profile: str, overrides: Mapping[str, Any] | None = None, root: Path | None = None) -> list[ClaimRow]:
    """C1..C7 at ``profile`` (with ``overrides``), read from the records; unrecorded claims are not measurable."""
    return [_read(claim, profile, dict(overrides or {}), root) for claim in CLAIMS.values()]


# Display.

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


def html_table(rows: Sequence[ClaimRow], compact: bool = False) -> str:
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


def counts(rows: Sequence[ClaimRow]) -> dict[str, int]:
    """How many claims have each verdict."""
    return {v: sum(1 for r in rows if r.result.verdict == v) for v in VERDICTS}


__all__ = [
    "CLAIMS", "Claim", "ClaimResult", "ClaimRow", "VERDICTS", "c1_regret_growth", "c2_convnet_fits", "c3_sgd_worse",
    "c4_taylor_gap", "c5_rmsprop_explores", "c6_adam_between", "c7_better_optimum", "chapter_link", "counts",
    "final_values", "html_table", "record", "record_path", "table",
]
