"""The paper's claims C1 to C7: one rule each, every threshold here, verdicts recorded per profile.

Each claim is data (:data:`CLAIMS`: statement, the chapter holding its evidence, the rule
in words) and one small pure function from the measured numbers to a :class:`ClaimResult`
whose verdict is ``"reproduced"``, ``"not reproduced"`` or ``"not measurable"`` (with the
reason: a diverged run, no fitted slope, a missing optimizer). The chapters call these
functions, so a chapter and the claims page apply one rule, then :func:`record` the result::

    <results root>/claims/<profile>/<claim>.json   verdict, numbers, rule, chapter, parameters, provenance

(results root: ``$NTAYLOR_RESULTS``, else ``results/``, as for the run store). :func:`table`
reads the seven records back for one profile; a claim whose chapter has not been executed at
that profile (or was executed with other overrides) is "not measurable", never guessed.

The pages' own checks that are not claims (Figure 3's and Figure 4's slope rules) use the
same thresholds through :func:`grows_like_sqrt_n` and :func:`adaptive_below_sgd`, so no
page types a threshold of its own.

Example::

    result = claims.c3_sgd_worse({"adam": 0.011, "rmsprop": 0.012, "sgd": 0.020})
    claims.record(result, params)             # params: the page's Profile
    rows = claims.table(params)
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..runs.config import resolve_device
from ..runs.files import ROOT, atomic_save_json, default_results_root, environment, file_digest, json_digest
from ..runs.profiles import TASKS, Profile
from ..taylor.regret import REGRET_RESOLUTION

REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE = "reproduced", "not reproduced", "not measurable"
#: Verdicts of the hypotheses beyond the paper (B1..B5): the paper made no such claim to reproduce.
SUPPORTED, NOT_SUPPORTED = "supported", "not supported"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE, SUPPORTED, NOT_SUPPORTED)
RECORD_FORMAT = 1

# Thresholds, moved unchanged from the chapters that first typed them.
SLOPE_TOLERANCE = 0.1  # C1: a log-log slope counts as sqrt(N) growth when <= 0.5 + this
FIT_ACCURACY = 0.99  # C2: "about 99%" training accuracy
SGD_MARGIN = 1.1  # C3, C7: "clearly / significantly worse" = final loss at least 10% higher
EQUAL_ACCURACY = 0.01  # C7: convnet optimizers "perform equally well" = accuracies within 1 point
BOOTSTRAP_LEVEL = 0.9  # B2-B5: two-sided percentile intervals over seeds
BOOTSTRAP_SAMPLES = 2000  # B2-B5: resamples of the seeds


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: what it says, where the book measures it, how it is decided."""

    id: str
    statement: str
    chapter: str  # book path, e.g. "book/theorem2"
    title: str  # the chapter's short name, for links
    rule: str
    beyond: bool = False  # a hypothesis beyond the paper (B1..B5), not one of its claims


CLAIMS: dict[str, Claim] = {c.id: c for c in (
    Claim("C1", "Regret grows like sqrt N for every optimizer, scale and task (log-log slope).",
          "book/theorem2", "Theorem 2",
          f"Every fitted log-log slope of regret against N (box x1, every stored run and recorded scale) is at most "
          f"0.5 + {SLOPE_TOLERANCE:g}; fits without two horizons of positive regret above {REGRET_RESOLUTION:g} "
          f"of N TO(N) (the optimum's rounding) are not counted."),
    Claim("C2", "Convnet: all optimizers fit the training set (about 99% at paper scale).",
          "book/training_curves", "Figure 6",
          f"The lowest final training accuracy of Adam, RMSProp and SGD on the convnet is at least "
          f"{FIT_ACCURACY:.0%}."),
    Claim("C3", "Autoencoder: the best fixed-rate SGD is clearly worse than Adam and RMSProp.",
          "book/training_curves", "Figure 6",
          f"SGD's final training loss on the autoencoder exceeds {SGD_MARGIN:g} times the worse of Adam's and "
          f"RMSProp's."),
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


_INTERVAL = f"{BOOTSTRAP_LEVEL:.0%} bootstrap interval over seeds ({BOOTSTRAP_SAMPLES} resamples)"
BEYOND_CLAIMS: dict[str, Claim] = {c.id: c for c in (
    Claim("B1", "Optimizers the paper did not run (momentum, Nesterov, Adagrad, AdamW, signSGD) also have regret "
          "growing like sqrt N.", "book/beyond_optimizers", "Beyond: optimizers",
          f"For each of those optimizers and each task, the mean over seeds of the fitted log-log slope (box x1, "
          f"mean over the recorded scales) is at most 0.5 + {SLOPE_TOLERANCE:g}.", True),
    Claim("B2", "Exploration goes with performance: runs that explore more end with a lower training loss "
          "(open question 1).", "book/beyond_optimizers", "Beyond: optimizers",
          f"Per task, over every run of the study (each optimizer and noise variant at its tuned rate, each seed), "
          f"Spearman's rank correlation between final training loss and novelty, and between final training loss "
          f"and switches, is negative with its {_INTERVAL} below 0, on both tasks.", True),
    Claim("B3", "Adaptive optimizers explore more than SGD in early layers than in late ones (open question 3).",
          "book/beyond_optimizers", "Beyond: optimizers",
          f"For RMSProp and Adam on each task, novelty relative to SGD's (the ratio of seed means) is larger at "
          f"the first activation layer than at the last, the {_INTERVAL} of the difference above 0.", True),
    Claim("B4", "Annealed gradient noise makes SGD explore more and end lower (Neelakantan et al., 2016).",
          "book/beyond_optimizers", "Beyond: optimizers",
          f"On each task, at some noise scale, noisy SGD's novelty minus SGD's has its {_INTERVAL} above 0 and "
          f"its final training loss minus SGD's has it below 0.", True),
    Claim("B5", "Momentum changes exploration in the direction RMSProp's normalisation does.",
          "book/beyond_optimizers", "Beyond: optimizers",
          f"On each task, momentum's and Nesterov's novelty minus SGD's has the sign of RMSProp's minus SGD's, "
          f"all three differences with their {_INTERVAL} excluding 0.", True),
)}
#: Every claim and hypothesis by id (records, tables and results look them up here).
ALL_CLAIMS: dict[str, Claim] = {**CLAIMS, **BEYOND_CLAIMS}


@dataclass(frozen=True)
class ClaimResult:
    """A claim's verdict at one profile, the numbers it was decided on, and the rule used."""

    claim: str
    verdict: str
    numbers: dict[str, Any]
    rule: str
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.claim not in ALL_CLAIMS:
            raise ValueError(f"unknown claim {self.claim!r}; the claims are {', '.join(ALL_CLAIMS)}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; use one of {', '.join(VERDICTS)}")


def grows_like_sqrt_n(slope: float, tolerance: float = SLOPE_TOLERANCE) -> bool:
    """Whether a fitted log-log slope of regret against ``N`` counts as ``sqrt N`` growth or slower:
    finite and at most ``0.5 + tolerance`` (the rule of C1, Figure 3 and Figure 4)."""
    return math.isfinite(slope) and slope <= 0.5 + tolerance


def adaptive_below_sgd(values: Mapping[str, float]) -> bool:
    """Whether Adam's and RMSProp's values are both below SGD's (the rule of C4 and of Figure 4 (c))."""
    return values["adam"] < values["sgd"] and values["rmsprop"] < values["sgd"]


# Checks that the chapters make of the paper's figures and observations (not claims C1 to C7:
# they test the maths and the code on a run, and a page states each verdict with its rule).

#: Figure 2: at each iterate the Taylor loss equals the true loss to this relative error (float32 round-off)...
TAYLOR_VALUE_TOLERANCE = 1e-5
#: ...and its slope along the line equals the true loss's to this relative error.
TAYLOR_SLOPE_TOLERANCE = 1e-3
#: Figure 2: a second difference below ``-CONVEXITY_TOLERANCE`` times the largest value is a sign of non-convexity.
CONVEXITY_TOLERANCE = 1e-6
#: Observation 2: the clamped network equals the Taylor approximation to this relative error (float64).
CLAMPING_TOLERANCE = 1e-10


def taylor_touches_loss(value_error: float, slope_error: float) -> bool:
    """Figure 2: the Taylor loss meets the true loss at the iterate, in value and in slope."""
    return value_error <= TAYLOR_VALUE_TOLERANCE and slope_error <= TAYLOR_SLOPE_TOLERANCE


def convex_on_grid(values: Sequence[float]) -> bool:
    """Figure 2: whether values on an evenly spaced grid are convex (no second difference below the
    round-off allowance :data:`CONVEXITY_TOLERANCE` of the largest value)."""
    values = np.asarray(values, dtype=np.float64)
    return bool((np.diff(values, 2) >= -CONVEXITY_TOLERANCE * np.abs(values).max()).all())


def kinks_grow_with_depth(mean_kinks: Sequence[float]) -> bool:
    """Figure 1: the mean number of kinks never falls as depth grows, and the deepest net has more than the
    shallowest."""
    return all(b >= a for a, b in zip(mean_kinks, mean_kinks[1:])) and mean_kinks[-1] > mean_kinks[0]


def kinks_are_switches(summary: Mapping[str, int]) -> bool:
    """Observation 1: along the line, no slope jump without a change of activation, and no change without a jump
    (``summary`` from :func:`ntaylor_lib.exploration.observations.line_walk_summary`)."""
    return summary["jump_without_change"] == 0 and summary["change_without_jump"] == 0


def clamped_equals_taylor(worst_relative_error: float) -> bool:
    """Observation 2: the clamped network equals the Taylor approximation at every layer and neuron scale."""
    return worst_relative_error < CLAMPING_TOLERANCE


def adaptive_above_sgd(values: Mapping[str, float]) -> bool:
    """Whether Adam's and RMSProp's values are both above SGD's (Observation 3: closer to the signed gradient)."""
    return values["adam"] > values["sgd"] and values["rmsprop"] > values["sgd"]


def _result(claim: str, holds: bool, numbers: dict[str, Any]) -> ClaimResult:
    return ClaimResult(claim, REPRODUCED if holds else NOT_REPRODUCED, numbers, CLAIMS[claim].rule)


def scoped(result: ClaimResult, params: Mapping[str, Any]) -> ClaimResult:
    """``result`` with the tasks it was decided on among its numbers, where the profile runs only some
    (a verdict over the autoencoder's cells alone says so)."""
    if set(params["tasks"]) == set(TASKS):
        return result
    return dataclasses.replace(result, numbers={**result.numbers, "tasks run": ",".join(params["tasks"])})


def unmeasurable(claim: str, reason: str, numbers: dict[str, Any] | None = None) -> ClaimResult:
    """``claim`` as not measurable at this profile, with the reason (and whatever numbers there are)."""
    return ClaimResult(claim, NOT_MEASURABLE, numbers or {}, ALL_CLAIMS[claim].rule, reason)


def hypothesis(claim: str, holds: bool, numbers: dict[str, Any]) -> ClaimResult:
    """A hypothesis beyond the paper (B1..B5) decided by its rule: supported or not."""
    return ClaimResult(claim, SUPPORTED if holds else NOT_SUPPORTED, numbers, BEYOND_CLAIMS[claim].rule)


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
    """C1 from fitted slopes ``[{"slope", "task", "optimizer", "scale"}, ...]`` (NaN: fewer than two positive
    horizons)."""
    measured = [f for f in fits if math.isfinite(float(f["slope"]))]
    numbers: dict[str, Any] = {"fits": len(fits), "measured": len(measured), "bound": 0.5 + tolerance}
    if not measured:
        return unmeasurable("C1", f"none of the {len(fits)} fits had two horizons with resolved positive regret "
                                   "(regret stayed at or below zero, or no scale was recorded)", numbers)
    slopes = sorted(float(f["slope"]) for f in measured)
    worst = max(measured, key=lambda f: float(f["slope"]))
    numbers.update({"passing": sum(1 for s in slopes if grows_like_sqrt_n(s, tolerance)),
                    "median slope": slopes[len(slopes) // 2],
                    "largest slope": float(worst["slope"]),
                    "largest at": ", ".join(str(worst.get(k, "?")) for k in ("task", "optimizer", "scale"))})
    return _result("C1", numbers["passing"] == len(measured), numbers)


def c2_convnet_fits(accuracies: Mapping[str, float], threshold: float = FIT_ACCURACY) -> ClaimResult:
    """C2 from the convnet's final training accuracy (fraction) per optimizer."""
    numbers = {f"{opt} accuracy": float(v) for opt, v in accuracies.items()}
    reason = _missing(accuracies, ("adam", "rmsprop", "sgd"), "final training accuracy")
    if reason:
        return unmeasurable("C2", reason, numbers)
    numbers["lowest accuracy"] = min(float(v) for v in accuracies.values())
    return _result("C2", numbers["lowest accuracy"] >= threshold, numbers)


def c3_sgd_worse(losses: Mapping[str, float], margin: float = SGD_MARGIN) -> ClaimResult:
    """C3 from the autoencoder's final training loss per optimizer."""
    numbers = {f"{opt} loss": float(v) for opt, v in losses.items()}
    reason = _missing(losses, ("adam", "rmsprop", "sgd"), "final training loss")
    if reason:
        return unmeasurable("C3", reason, numbers)
    worse_adaptive = max(losses["adam"], losses["rmsprop"])
    numbers["sgd / worse adaptive"] = losses["sgd"] / worse_adaptive if worse_adaptive > 0 else float("inf")
    return _result("C3", losses["sgd"] > margin * worse_adaptive, numbers)


def c4_taylor_gap(gaps: Mapping[str, float], layer: int | None = None, epoch: int | None = None) -> ClaimResult:
    """C4 from the autoencoder's gap ``AL(N) - TO(N)`` at the last horizon, per optimizer."""
    numbers: dict[str, Any] = {f"{opt} gap": float(v) for opt, v in gaps.items()}
    numbers.update({k: v for k, v in (("layer", layer), ("epoch", epoch)) if v is not None})
    reason = _missing(gaps, ("adam", "rmsprop", "sgd"), "Taylor gap")
    if reason:
        return unmeasurable("C4", reason, numbers)
    return _result("C4", adaptive_below_sgd(gaps), numbers)


def _exploration_cells(summary: Mapping[str, Mapping[str, Mapping[str, float]]], metrics: Sequence[str],
                       needed: Sequence[str], claim: str) -> tuple[list[tuple[str, str]], ClaimResult | None]:
    """The (task, metric) cells to decide, or a not-measurable result when a number is missing."""
    cells = [(task, metric) for task in summary for metric in metrics]
    if not cells:
        return cells, unmeasurable(claim, "no exploration summaries at this profile")
    for task, metric in cells:
        values = {label: s[metric] for label, s in summary[task].items() if metric in s}
        reason = _missing(values, needed, f"{metric} on the {task}")
        if reason:
            return cells, unmeasurable(claim, reason)
    return cells, None


def _cell_numbers(held: Mapping[tuple[str, str], bool]) -> dict[str, Any]:
    """``{"<task> <metric>": "holds" | "fails", ..., "cells holding": k, "cells": n}``."""
    cells: dict[str, Any] = {f"{task} {metric}": "holds" if ok else "fails" for (task, metric), ok in held.items()}
    return {**cells, "cells holding": sum(held.values()), "cells": len(held)}


def c5_rmsprop_explores(summary: Mapping[str, Mapping[str, Mapping[str, float]]], sgd: Sequence[str]) -> ClaimResult:
    """C5 from ``summary[task][run label][metric]`` (``exploration.exploration_summary``); ``sgd``: SGD labels."""
    if not sgd:
        return unmeasurable("C5", "no SGD runs at this profile")
    cells, missing = _exploration_cells(summary, ("novelty", "switches", "volume"), ["rmsprop", *sgd], "C5")
    if missing:
        return missing
    held = {(t, m): all(summary[t]["rmsprop"][m] > summary[t][label][m] for label in sgd) for t, m in cells}
    return _result("C5", all(held.values()), _cell_numbers(held))


def c6_adam_between(summary: Mapping[str, Mapping[str, Mapping[str, float]]], sgd: Sequence[str]) -> ClaimResult:
    """C6 from ``summary[task][run label][metric]`` (novelty and switches only); ``sgd``: SGD labels."""
    if not sgd:
        return unmeasurable("C6", "no SGD runs at this profile")
    cells, missing = _exploration_cells(summary, ("novelty", "switches"), ["adam", "rmsprop", *sgd], "C6")
    if missing:
        return missing
    held = {(t, m): summary[t]["adam"][m] < summary[t]["rmsprop"][m]
            and all(summary[t]["adam"][m] > summary[t][label][m] for label in sgd) for t, m in cells}
    return _result("C6", all(held.values()), _cell_numbers(held))


def c7_better_optimum(autoencoder_losses: Mapping[str, float], convnet_accuracies: Mapping[str, float],
                      margin: float = SGD_MARGIN, equal: float = EQUAL_ACCURACY) -> ClaimResult:
    """C7 from the autoencoder's final training loss and the convnet's final training accuracy per optimizer."""
    numbers = {f"autoencoder {opt} loss": float(v) for opt, v in autoencoder_losses.items()
               if opt in ("rmsprop", "sgd")}
    numbers.update({f"convnet {opt} accuracy": float(v) for opt, v in convnet_accuracies.items()})
    reason_ae = _missing(autoencoder_losses, ("rmsprop", "sgd"), "final autoencoder training loss")
    reason = reason_ae or _missing(convnet_accuracies, ("adam", "rmsprop", "sgd"), "final convnet training accuracy")
    if reason:
        if not reason_ae:  # the autoencoder's half can still be read, though the claim needs both
            rms, sgd = autoencoder_losses["rmsprop"], autoencoder_losses["sgd"]
            numbers["autoencoder sgd / rmsprop"] = sgd / rms if rms > 0 else float("inf")
            numbers["autoencoder half"] = "holds" if sgd > margin * rms else "fails"
        return unmeasurable("C7", reason, numbers)
    rms, sgd = autoencoder_losses["rmsprop"], autoencoder_losses["sgd"]
    numbers["autoencoder sgd / rmsprop"] = sgd / rms if rms > 0 else float("inf")
    spread = max(convnet_accuracies.values()) - min(convnet_accuracies.values())
    numbers["convnet accuracy spread"] = float(spread)
    return _result("C7", sgd > margin * rms and spread <= equal, numbers)


# Recording and reading back.


def _plain(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides as they read back from a record's JSON (tuples as lists), so the two compare equal."""
    return json.loads(json.dumps(dict(overrides), default=str))


def _text(value: Any) -> str:
    return ",".join(_text(v) for v in value) if isinstance(value, (list, tuple)) else f"{value:g}" \
        if isinstance(value, float) else str(value)


def setting_label(profile: str, overrides: Mapping[str, Any] | None = None) -> str:
    """How a setting reads: ``paper`` or ``paper (tasks=autoencoder, device=cpu)``."""
    shown = ", ".join(f"{k}={_text(v)}" for k, v in sorted(_plain(overrides or {}).items()))
    return f"{profile} ({shown})" if shown else profile


def setting_name(profile: str, overrides: Mapping[str, Any] | None = None) -> str:
    """The folder of a setting's records: the profile, then each override (``paper+device=cpu+tasks=autoencoder``);
    a long one ends in a digest instead."""
    parts = [f"{k}={_text(v)}" for k, v in sorted(_plain(overrides or {}).items())]
    name = "+".join([profile, *parts])
    name = "".join(c if c.isalnum() or c in "+=,._-" else "_" for c in name)
    return name if len(name) <= 100 else f"{profile}+{json_digest(_plain(overrides or {}), 12)}"


def record_path(claim: str, profile: str, root: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Path:
    """``<root>/claims/<setting>/<claim>.json``, the setting being the profile and its overrides."""
    return Path(root or default_results_root()) / "claims" / setting_name(profile, overrides) / f"{claim}.json"


def record(result: ClaimResult, params: Profile, root: Path | None = None) -> Path:
    """Write ``result`` for the profile ``params`` atomically, with the chapter, parameters and provenance.

    Returns the record's path (:func:`record_path`).
    """
    claim = ALL_CLAIMS[result.claim]
    payload = {
        "format": RECORD_FORMAT, "claim": result.claim, "statement": claim.statement, "chapter": claim.chapter,
        "verdict": result.verdict, "reason": result.reason, "rule": result.rule,
        "numbers": [[k, v] for k, v in result.numbers.items()],  # pairs: JSON keeps their order
        "profile": params.name, "overrides": _plain(params.overrides), "params": params.to_dict(),
        "provenance": {**environment(resolve_device(str(params["device"]))),
                       "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }
    path = record_path(result.claim, params.name, root, params.overrides)
    atomic_save_json(payload, path)
    return path


@dataclass(frozen=True)
class ClaimRow:
    """One line of the claims table: the claim, its result at the profile, and how that was recorded."""

    claim: Claim
    result: ClaimResult
    provenance: dict[str, Any] = field(default_factory=dict)


def _read(claim: Claim, profile: str, overrides: Mapping[str, Any], root: Path | None,
          folder: Path | None = None) -> ClaimRow:
    path = (folder / f"{claim.id}.json") if folder is not None else record_path(claim.id, profile, root, overrides)
    shown = setting_label(profile, overrides).replace(" (", " with overrides ", 1).rstrip(")")
    not_run = f"chapter {claim.chapter} has not been executed at profile {shown}"
    if not path.is_file():
        return ClaimRow(claim, unmeasurable(claim.id, not_run))
    try:
        data = json.loads(path.read_text())
        if data.get("format") != RECORD_FORMAT:
            raise ValueError(f"record format {data.get('format')}, this library reads {RECORD_FORMAT}")
        numbers = {str(k): v for k, v in data["numbers"]}
        result = ClaimResult(claim.id, data["verdict"], numbers, data["rule"], data.get("reason"))
        if data["profile"] != profile or data["claim"] != claim.id:
            return ClaimRow(claim, unmeasurable(claim.id, f"{not_run} (the record at {path} says profile "
                                                           f"{data['profile']}, claim {data['claim']})"))
    except (OSError, ValueError, KeyError, TypeError) as error:
        return ClaimRow(claim, unmeasurable(claim.id, f"the record {path} cannot be read ({error}); "
                                                       f"execute chapter {claim.chapter} again"))
    if dict(data.get("overrides") or {}) != dict(overrides):
        return ClaimRow(claim, unmeasurable(
            claim.id, f"chapter {claim.chapter} was last executed at profile {profile} with overrides "
                      f"{data.get('overrides') or {}}, not {dict(overrides)}"))
    return ClaimRow(claim, result, dict(data.get("provenance") or {}))


def table(params: Profile, root: Path | None = None, beyond: bool = False) -> list[ClaimRow]:
    """C1..C7 (``beyond``: the hypotheses B1..B5) at the profile ``params`` (its name and overrides),
    read from the records; one whose chapter has not recorded it there is not measurable."""
    registry = BEYOND_CLAIMS if beyond else CLAIMS
    return [_read(claim, params.name, _plain(params.overrides), root) for claim in registry.values()]


# Verdicts across settings: one column per profile and overrides that has records, from the run
# store, and the reference records shipped with the book for settings it did not compute.

#: Records shipped with the book (a paper-scale build, say), one folder per setting as in the store.
REFERENCE = ROOT / "book" / "reference"
#: Beside a setting's records: how its book build ran (command, chapters' seconds, commit, device).
BUILD_FILE = "build.json"


@dataclass(frozen=True)
class Column:
    """The verdicts of one setting (a profile and its overrides) and how they were made."""

    name: str
    label: str
    rows: list[ClaimRow]
    build: dict[str, Any]
    reference: bool  # shipped with the book: recorded, not recomputed here

    def provenance(self) -> dict[str, Any]:
        """Date, commit, device and wall time of the records (the latest record; the build's total seconds)."""
        recorded = [r.provenance for r in self.rows if r.provenance]
        last = max(recorded, key=lambda p: p.get("recorded_at", ""), default={})
        return {"date": last.get("recorded_at", "")[:10], "commit": str(last.get("git_commit", ""))[:12],
                "device": last.get("device_name", ""), "wall_s": self.build.get("total_s"),
                "command": self.build.get("command", "")}


def record_build(params: Profile, seconds: Mapping[str, float], command: str, root: Path | None = None) -> Path:
    """Note, beside a setting's claim records, how long each chapter of its book build took and the command
    (merged with earlier builds of the setting: each chapter keeps its latest execution)."""
    path = record_path("C1", params.name, root, params.overrides).with_name(BUILD_FILE)
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        earlier = {}
    chapters = {**earlier.get("chapters", {}), **{k: round(float(v), 1) for k, v in seconds.items()}}
    atomic_save_json({"profile": params.name, "overrides": _plain(params.overrides), "command": command,
                      "chapters": chapters, "total_s": round(sum(chapters.values()), 1),
                      "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, path)
    return path


def _reference_intact(folder: Path) -> bool:
    """Whether shipped records still match their manifest (no manifest: nothing to check)."""
    try:
        manifest = json.loads((folder / REFERENCE_MANIFEST).read_text())["sha256"]
    except FileNotFoundError:
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((folder / name).is_file() and file_digest(folder / name) == digest for name, digest in manifest.items())


def _column(folder: Path, reference: bool) -> Column | None:
    first = next(iter(sorted(folder.glob("C*.json"))), None)
    if first is None:
        return None
    if reference and not _reference_intact(folder):
        warnings.warn(f"{folder}: the shipped records differ from their {REFERENCE_MANIFEST}; not shown "
                      "(restore them with git, or ship them again with python -m ntaylor_lib reference)", stacklevel=2)
        return None
    try:
        data = json.loads(first.read_text())
        profile, overrides = str(data["profile"]), dict(data.get("overrides") or {})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        build = json.loads((folder / BUILD_FILE).read_text())
    except (OSError, ValueError):
        build = {}
    rows = [_read(claim, profile, overrides, None, folder) for claim in CLAIMS.values()]
    return Column(folder.name, setting_label(profile, overrides), rows, build, reference)


def columns(params: Profile | None = None, root: Path | None = None, reference: Path = REFERENCE) -> list[Column]:
    """Every setting with claim records: the store's, ``params``'s own first, then the shipped reference
    records of the settings the store has none of (recomputing a setting replaces its reference)."""
    store = Path(root or default_results_root()) / "claims"
    found = [c for c in (_column(f, False) for f in sorted(store.glob("*")) if f.is_dir()) if c is not None]
    names = {c.name for c in found}
    found += [c for c in (_column(f, True) for f in sorted(Path(reference).glob("*")) if f.is_dir())
              if c is not None and c.name not in names]
    if params is not None:
        own = setting_name(params.name, params.overrides)
        found.sort(key=lambda c: c.name != own)
    return found


#: Beside shipped records: each file's SHA-256, so that an edited record is not shown as recorded.
REFERENCE_MANIFEST = "MANIFEST.json"


def ship_reference(params: Profile, root: Path | None = None, reference: Path = REFERENCE) -> Path:
    """Copy the store's claim records of ``params``'s setting, with its ``build.json``, into
    ``reference/<setting>/``, with a manifest of their SHA-256 and a README naming the command that
    recomputes them. Small JSON only: no runs. Returns the folder."""
    source = record_path("C1", params.name, root, params.overrides).parent
    files = sorted(source.glob("C*.json")) + ([source / BUILD_FILE] if (source / BUILD_FILE).is_file() else [])
    if not any(f.name.startswith("C") for f in files):
        raise FileNotFoundError(f"no claim records in {source}: build the book at this setting first "
                                f"(bash scripts/book.sh --profile {params.name} ...)")
    target = Path(reference) / source.name
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.json"):
        old.unlink()
    digests = {}
    for f in files:
        (target / f.name).write_bytes(f.read_bytes())
        digests[f.name] = file_digest(target / f.name)
    build = json.loads((source / BUILD_FILE).read_text()) if (source / BUILD_FILE).is_file() else {}
    atomic_save_json({"setting": source.name, "sha256": digests}, target / REFERENCE_MANIFEST)
    command = build.get("command") or f"bash scripts/book.sh --profile {params.name}"
    (target / "README.md").write_text(
        f"# Reference claim records: {setting_label(params.name, params.overrides)}\n\n"
        "Recorded by this project's book build and shipped with the book, so that a reader of another\n"
        "setting sees these verdicts too (marked as recorded, not recomputed). They were made by\n\n"
        f"    {command}\n\n"
        "which recomputes them: once the results store holds records of this setting, the book shows\n"
        "those instead. `build.json` gives each chapter's seconds; `MANIFEST.json` the SHA-256 of every\n"
        f"file here. Refreshed with `python -m ntaylor_lib reference --profile {params.name}"
        + "".join(f" --set {k}={_text(v)}" for k, v in sorted(_plain(params.overrides).items())) + "`.\n")
    return target


def counts(rows: Sequence[ClaimRow]) -> dict[str, int]:
    """How many claims have each verdict: the paper's three verdicts, or for hypotheses beyond it
    (B1..B5) supported, not supported and not measurable."""
    kinds = (SUPPORTED, NOT_SUPPORTED, NOT_MEASURABLE) if rows and rows[0].claim.beyond else \
        (REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE)
    return {v: sum(1 for r in rows if r.result.verdict == v) for v in kinds}


__all__ = [
    "ALL_CLAIMS", "BEYOND_CLAIMS", "CLAIMS", "Claim", "ClaimResult", "ClaimRow", "Column", "VERDICTS",
    "adaptive_above_sgd", "adaptive_below_sgd", "c1_regret_growth", "c2_convnet_fits", "c3_sgd_worse",
    "c4_taylor_gap", "c5_rmsprop_explores", "c6_adam_between", "c7_better_optimum", "clamped_equals_taylor",
    "columns", "convex_on_grid", "counts", "final_values", "grows_like_sqrt_n", "hypothesis", "kinks_are_switches",
    "kinks_grow_with_depth", "record", "record_build", "record_path", "scoped", "setting_label", "setting_name",
    "ship_reference", "table", "taylor_touches_loss", "unmeasurable",
]
