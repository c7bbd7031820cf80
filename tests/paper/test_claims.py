"""Claims C1 to C7: each rule on both sides of its threshold and when it cannot be measured;
records round-trip per profile; the table never counts another profile's record; links and
execution order of the summary pages."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ntaylor_lib.paper import claims
from ntaylor_lib.paper.claims import NOT_MEASURABLE, NOT_REPRODUCED, REPRODUCED
from ntaylor_lib.runs.profiles import get_profile
from ntaylor_lib.site import book

ROOT = Path(__file__).resolve().parents[2]
NAN = float("nan")


def _fits(*slopes):
    return [{"slope": s, "task": "autoencoder", "optimizer": "sgd", "scale": f"s{i}"} for i, s in enumerate(slopes)]


def test_c1_slope_bound_and_unmeasured_fits():
    bound = 0.5 + claims.SLOPE_TOLERANCE
    assert claims.c1_regret_growth(_fits(0.3, bound - 1e-9, NAN)).verdict == REPRODUCED
    worse = claims.c1_regret_growth(_fits(0.3, bound + 1e-3))
    assert worse.verdict == NOT_REPRODUCED and worse.numbers["passing"] == 1 and worse.numbers["largest slope"] > bound
    none = claims.c1_regret_growth(_fits(NAN, NAN))
    assert none.verdict == NOT_MEASURABLE and "positive regret" in none.reason
    assert claims.c1_regret_growth([]).verdict == NOT_MEASURABLE


def test_c2_accuracy_threshold_and_diverged_run():
    ok = {"adam": 0.995, "rmsprop": 0.999, "sgd": claims.FIT_ACCURACY}
    assert claims.c2_convnet_fits(ok).verdict == REPRODUCED
    miss = claims.c2_convnet_fits({**ok, "sgd": claims.FIT_ACCURACY - 1e-4})
    assert miss.verdict == NOT_REPRODUCED and miss.numbers["lowest accuracy"] < claims.FIT_ACCURACY
    diverged = claims.c2_convnet_fits({**ok, "sgd": NAN})
    assert diverged.verdict == NOT_MEASURABLE and "sgd" in diverged.reason
    assert "adam" in claims.c2_convnet_fits({"rmsprop": 0.99, "sgd": 0.99}).reason


def test_c3_margin_over_the_worse_adaptive_optimizer():
    base = {"adam": 0.010, "rmsprop": 0.012}
    assert claims.c3_sgd_worse({**base, "sgd": 0.012 * claims.SGD_MARGIN * 1.01}).verdict == REPRODUCED
    # Worse than Adam by far, but not by the margin over RMSProp (the worse adaptive one).
    assert claims.c3_sgd_worse({**base, "sgd": 0.012 * claims.SGD_MARGIN * 0.99}).verdict == NOT_REPRODUCED
    assert claims.c3_sgd_worse({**base, "sgd": math.inf}).verdict == NOT_MEASURABLE


def test_c4_both_adaptive_gaps_below_sgd():
    assert claims.c4_taylor_gap({"adam": 1e-3, "rmsprop": 2e-3, "sgd": 3e-3}, layer=3, epoch=2).verdict == REPRODUCED
    result = claims.c4_taylor_gap({"adam": 1e-3, "rmsprop": 4e-3, "sgd": 3e-3})
    assert result.verdict == NOT_REPRODUCED
    assert claims.c4_taylor_gap({"adam": 1e-3, "sgd": 3e-3}).verdict == NOT_MEASURABLE


def _summary(rms=1.0, adam=0.5, sgd=(0.1, 0.2, 0.3)):
    runs = {"rmsprop": rms, "adam": adam, **{f"sgd {i}": v for i, v in enumerate(sgd)}}
    return {task: {label: {m: v for m in ("novelty", "switches", "volume")} for label, v in runs.items()}
            for task in ("convnet", "autoencoder")}


SGD = ["sgd 0", "sgd 1", "sgd 2"]


def test_c5_rmsprop_above_every_sgd_rate_in_every_cell():
    ok = claims.c5_rmsprop_explores(_summary(), SGD)
    assert ok.verdict == REPRODUCED and ok.numbers["cells holding"] == ok.numbers["cells"] == 6
    summary = _summary()
    summary["autoencoder"]["sgd 2"]["volume"] = 2.0  # one SGD rate beats RMSProp in one cell
    miss = claims.c5_rmsprop_explores(summary, SGD)
    assert miss.verdict == NOT_REPRODUCED and miss.numbers["autoencoder volume"] == "fails"
    assert miss.numbers["cells holding"] == 5
    summary["convnet"]["rmsprop"]["novelty"] = NAN  # fewer than two checkpoints
    assert claims.c5_rmsprop_explores(summary, SGD).verdict == NOT_MEASURABLE
    assert claims.c5_rmsprop_explores(_summary(), []).verdict == NOT_MEASURABLE


def test_c6_adam_between_sgd_and_rmsprop_ignores_volume():
    summary = _summary()
    for task in summary:
        summary[task]["adam"]["volume"] = 9.0  # not part of C6
    assert claims.c6_adam_between(summary, SGD).numbers["cells"] == 4
    assert claims.c6_adam_between(summary, SGD).verdict == REPRODUCED
    assert claims.c6_adam_between(_summary(adam=1.5), SGD).verdict == NOT_REPRODUCED  # above RMSProp
    assert claims.c6_adam_between(_summary(adam=0.25), SGD).verdict == NOT_REPRODUCED  # below an SGD rate


def test_c7_autoencoder_margin_and_convnet_equality():
    acc = {"adam": 0.990, "rmsprop": 0.985, "sgd": 0.990 - claims.EQUAL_ACCURACY / 2}
    ae = {"adam": 0.01, "rmsprop": 0.010, "sgd": 0.010 * claims.SGD_MARGIN * 1.01}
    assert claims.c7_better_optimum(ae, acc).verdict == REPRODUCED
    assert claims.c7_better_optimum({**ae, "sgd": 0.0105}, acc).verdict == NOT_REPRODUCED
    spread = claims.c7_better_optimum(ae, {**acc, "sgd": 0.990 - 2 * claims.EQUAL_ACCURACY})
    assert spread.verdict == NOT_REPRODUCED and spread.numbers["convnet accuracy spread"] > claims.EQUAL_ACCURACY
    assert claims.c7_better_optimum({**ae, "rmsprop": NAN}, acc).verdict == NOT_MEASURABLE
    # without the convnet (tasks=autoencoder) the claim is not measurable, its autoencoder half still read
    half = claims.c7_better_optimum(ae, {})
    assert half.verdict == NOT_MEASURABLE and half.numbers["autoencoder half"] == "holds"
    assert claims.c7_better_optimum({**ae, "sgd": 0.0105}, {}).numbers["autoencoder half"] == "fails"


def test_a_verdict_over_some_tasks_says_which():
    result = claims.c3_sgd_worse({"adam": 0.01, "rmsprop": 0.01, "sgd": 0.02})
    assert claims.scoped(result, get_profile("smoke")) == result
    scoped = claims.scoped(result, get_profile("smoke", {"tasks": "autoencoder"}))
    assert scoped.numbers["tasks run"] == "autoencoder" and scoped.verdict == result.verdict


def test_shared_rules_decide_claims_and_page_checks_alike():
    bound = 0.5 + claims.SLOPE_TOLERANCE
    assert claims.grows_like_sqrt_n(bound) and claims.grows_like_sqrt_n(-0.2)
    assert not claims.grows_like_sqrt_n(bound + 1e-9) and not claims.grows_like_sqrt_n(NAN)
    assert not claims.grows_like_sqrt_n(float("inf"))
    assert claims.adaptive_below_sgd({"adam": 1.0, "rmsprop": 2.0, "sgd": 3.0})
    assert not claims.adaptive_below_sgd({"adam": 1.0, "rmsprop": 3.0, "sgd": 3.0})
    assert not claims.adaptive_below_sgd({"adam": NAN, "rmsprop": 1.0, "sgd": 3.0})
    # C1 counts as passing exactly the slopes the shared rule accepts
    fits = _fits(0.2, bound, bound + 0.01, 1.5)
    assert claims.c1_regret_growth(fits).numbers["passing"] == sum(claims.grows_like_sqrt_n(f["slope"]) for f in fits)


def test_results_reject_unknown_claims_and_verdicts():
    with pytest.raises(ValueError, match="C1"):
        claims.ClaimResult("C8", REPRODUCED, {}, "")
    with pytest.raises(ValueError, match="not measurable"):
        claims.ClaimResult("C1", "maybe", {}, "")


def test_record_table_round_trip_per_profile(tmp_path):
    params = get_profile("smoke")
    result = claims.c3_sgd_worse({"adam": 0.01, "rmsprop": 0.01, "sgd": 0.02})
    path = claims.record(result, params, root=tmp_path)
    assert path == tmp_path / "claims" / "smoke" / "C3.json"
    stored = json.loads(path.read_text())
    assert stored["chapter"] == "book/training_curves" and stored["params"] == params.to_dict()
    assert stored["profile"] == "smoke" and stored["overrides"] == {}
    assert {"git_commit", "torch", "recorded_at"} <= set(stored["provenance"])
    rows = {r.claim.id: r for r in claims.table(params, root=tmp_path)}
    assert list(rows) == [f"C{i}" for i in range(1, 8)]
    assert rows["C3"].result == result and rows["C3"].provenance["recorded_at"]
    assert list(rows["C3"].result.numbers) == list(result.numbers)  # the rule's order, not sorted
    # Every other claim: its chapter has not run at this profile.
    assert rows["C1"].result.verdict == NOT_MEASURABLE
    assert rows["C1"].result.reason == "chapter book/theorem2 has not been executed at profile smoke"
    # The record does not count at another profile, nor with other overrides.
    other = {r.claim.id: r for r in claims.table(get_profile("cpu"), root=tmp_path)}
    assert other["C3"].result.verdict == NOT_MEASURABLE and "profile cpu" in other["C3"].result.reason
    changed = {r.claim.id: r for r in claims.table(get_profile("smoke", {"epochs": 5}), root=tmp_path)}
    assert changed["C3"].result.verdict == NOT_MEASURABLE and "overrides" in changed["C3"].result.reason


def test_records_with_list_overrides_match_the_profile_that_made_them(tmp_path):
    """Overrides are compared as they read back from JSON: a tuple-valued override still matches."""
    params = get_profile("smoke", {"taylor_box_scales": "1,inf", "epochs": "3"})
    claims.record(claims.c3_sgd_worse({"adam": 0.01, "rmsprop": 0.01, "sgd": 0.02}), params, root=tmp_path)
    row = claims.table(get_profile("smoke", {"epochs": 3, "taylor_box_scales": [1, float("inf")]}), root=tmp_path)[2]
    assert row.claim.id == "C3" and row.result.verdict == REPRODUCED


def test_a_record_claiming_another_profile_is_ignored(tmp_path):
    path = claims.record(claims.c4_taylor_gap({"adam": 1, "rmsprop": 1, "sgd": 2}), get_profile("cpu"), root=tmp_path)
    moved = tmp_path / "claims" / "smoke" / "C4.json"
    moved.parent.mkdir(parents=True)
    moved.write_text(path.read_text())  # a cpu record copied into the smoke folder
    row = claims.table(get_profile("smoke"), root=tmp_path)[3]
    assert row.claim.id == "C4" and row.result.verdict == NOT_MEASURABLE and "says profile cpu" in row.result.reason
    moved.write_text(json.dumps({**json.loads(path.read_text()), "profile": "smoke", "format": 0}))
    assert "record format 0" in claims.table(get_profile("smoke"), root=tmp_path)[3].result.reason
    moved.write_text("{not json")
    assert "cannot be read" in claims.table(get_profile("smoke"), root=tmp_path)[3].result.reason


def test_summary_pages_execute_after_every_other_chapter():
    order = book.execution_order(book.toc_files())
    assert order[-2:] == ["book/intro", "book/claims"]
    assert sorted(order) == sorted(book.toc_files())
    assert book.front_matter(ROOT / "book" / "claims.md")["ntaylor"] == {"execute": "last"}
    assert book.toc_files()[-1] == "book/claims"  # listed last in the table of contents
    # The flag, not the position, decides: a flagged page first in the list still runs last.
    assert book.execution_order(["book/claims", "book/figure5", "book/theorem2"]) == \
        ["book/figure5", "book/theorem2", "book/claims"]


def _fake_chapters(tmp_path, monkeypatch) -> list[str]:
    """Chapters 'execute' into an empty notebook under ``tmp_path``; the returned list names each
    executed chapter (``book/figure4``) in order."""
    calls: list[str] = []

    def fake_execute(source, parameters, output):
        calls.append(source.relative_to(ROOT).with_suffix("").as_posix())
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text("{}")
        return 0.0

    monkeypatch.setattr(book, "execute_chapter", fake_execute)
    monkeypatch.setenv("NTAYLOR_BUILD", str(tmp_path))
    return calls


def test_a_chapter_whose_tasks_are_not_run_is_a_page_that_says_so(tmp_path, monkeypatch):
    """tasks=autoencoder: Figure 3 (the convnet's) is not executed; its page keeps its label and title."""
    import nbformat

    calls = _fake_chapters(tmp_path, monkeypatch)
    assert book.build_book(get_profile("smoke", {"tasks": "autoencoder"}), html=False) == 0
    assert "book/figure3" not in calls and "book/figure4" in calls and "book/figure2" in calls
    page = nbformat.read(tmp_path / "_build" / "executed" / "book" / "figure3.ipynb", as_version=4)
    text = page.cells[0].source
    assert text.startswith("(figure3)=\n# Figure 3") and "Not run at this setting" in text and "convnet" in text
    calls.clear()
    assert book.build_book(get_profile("smoke", {"tasks": "convnet"}), html=False) == 0
    assert {"book/figure2", "book/figure4", "book/observation1"}.isdisjoint(calls) and "book/figure3" in calls


def test_chapters_beyond_the_paper_run_at_paper_only_when_named(tmp_path, monkeypatch):
    """A whole ``paper`` build leaves out the chapters marked ``opt_in: [paper]`` (hours each) with a
    page that gives the command running them; ``--only`` runs them; other profiles always do."""
    import nbformat

    calls = _fake_chapters(tmp_path, monkeypatch)
    paper = get_profile("paper", {"tasks": "autoencoder", "device": "cpu"})
    assert book.build_book(paper, html=False) == 0
    assert {"book/beyond_optimizers", "book/your_own_network"}.isdisjoint(calls) and "book/figure4" in calls
    page = nbformat.read(tmp_path / "_build" / "executed" / "book" / "beyond_optimizers.ipynb", as_version=4)
    text = page.cells[0].source
    assert text.startswith("(beyond-optimizers)=\n# Beyond the paper") and "Not run at this setting" in text
    assert "bash scripts/book.sh --profile paper --set device=cpu --set tasks=autoencoder --only beyond_optimizers" \
        in text
    calls.clear()
    assert book.build_book(paper, only=["beyond_optimizers"], html=False) == 0
    assert calls == ["book/beyond_optimizers", "book/intro", "book/claims"]
    calls.clear()
    assert book.build_book(get_profile("smoke"), html=False) == 0
    assert {"book/beyond_optimizers", "book/your_own_network"} <= set(calls)


def test_book_runs_summaries_last_and_refreshes_them_after_only(tmp_path, monkeypatch):
    """``book`` executes intro and claims after the chapters; ``--only figure4`` re-executes them too."""
    calls = _fake_chapters(tmp_path, monkeypatch)
    smoke = get_profile("smoke")
    assert book.build_book(smoke, html=False) == 0
    notebooks = [f for f in book.toc_files() if book.is_notebook(ROOT / f"{f}.md")]
    assert sorted(calls) == sorted(notebooks) and calls[-2:] == ["book/intro", "book/claims"]
    calls.clear()
    assert book.build_book(smoke, only=["figure4"], html=False) == 0
    assert calls == ["book/figure4", "book/intro", "book/claims"]
    calls.clear()
    assert book.build_book(smoke, only=["claims"], html=False) == 0
    assert calls == ["book/claims"]


def test_only_on_an_empty_build_executes_the_named_chapter_alone(tmp_path, monkeypatch):
    calls = _fake_chapters(tmp_path, monkeypatch)
    assert book.build_book(get_profile("smoke"), only=["lr_tuning"], html=False) == 0
    assert calls == ["book/lr_tuning"]  # not the other chapters, nor the summaries never executed
    assert book.build_book(get_profile("smoke"), only=["lr_tuning"], html=True) == 1  # the HTML needs them all


def test_settings_are_named_by_profile_and_overrides():
    assert claims.setting_name("smoke") == "smoke" and claims.setting_label("smoke") == "smoke"
    overrides = get_profile("paper", {"tasks": "autoencoder", "device": "cpu"}).overrides
    assert claims.setting_name("paper", overrides) == "paper+device=cpu+tasks=autoencoder"
    assert claims.setting_label("paper", overrides) == "paper (device=cpu, tasks=autoencoder)"
    long = {f"key{i}": "x" * 20 for i in range(10)}
    assert len(claims.setting_name("cpu", long)) < 40  # a digest instead of a long name


def test_columns_hold_every_setting_with_records_and_the_shipped_references(tmp_path):
    store, reference = tmp_path / "results", tmp_path / "reference"
    smoke, autoencoder = get_profile("smoke"), get_profile("smoke", {"tasks": "autoencoder"})
    paper = get_profile("paper", {"tasks": "autoencoder", "device": "cpu"})
    claims.record(claims.c3_sgd_worse({"adam": 0.01, "rmsprop": 0.01, "sgd": 0.02}), smoke, root=store)
    claims.record(claims.c3_sgd_worse({"adam": 0.01, "rmsprop": 0.01, "sgd": 0.011}), autoencoder, root=store)
    shipped = claims.record(claims.c3_sgd_worse({"adam": 0.1, "rmsprop": 0.1, "sgd": 0.5}), paper, root=tmp_path / "x")
    (reference / shipped.parent.name).mkdir(parents=True)
    (reference / shipped.parent.name / "C3.json").write_text(shipped.read_text())
    claims.record_build(paper, {"book/lr_tuning": 300.0}, "bash scripts/book.sh --profile paper", root=tmp_path / "x")
    (reference / shipped.parent.name / "build.json").write_text((shipped.parent / "build.json").read_text())
    columns = claims.columns(autoencoder, root=store, reference=reference)
    assert [c.label for c in columns] == ["smoke (tasks=autoencoder)", "smoke", "paper (device=cpu, tasks=autoencoder)"]
    assert [c.reference for c in columns] == [False, False, True]
    assert [c.rows[2].result.verdict for c in columns] == [NOT_REPRODUCED, REPRODUCED, REPRODUCED]
    assert columns[2].provenance()["wall_s"] == 300.0 and "paper" in columns[2].provenance()["command"]
    # recomputing a shipped setting in the store replaces its reference
    claims.record(claims.c3_sgd_worse({"adam": 0.1, "rmsprop": 0.1, "sgd": 0.1}), paper, root=store)
    again = claims.columns(None, root=store, reference=reference)
    assert [c.reference for c in again] == [False, False, False] and len(again) == 3


def test_a_build_note_keeps_each_chapters_latest_seconds(tmp_path):
    params = get_profile("smoke")
    claims.record_build(params, {"book/a": 10.0, "book/b": 5.0}, "cmd", root=tmp_path)
    path = claims.record_build(params, {"book/b": 7.0}, "cmd", root=tmp_path)
    note = json.loads(path.read_text())
    assert note["chapters"] == {"book/a": 10.0, "book/b": 7.0} and note["total_s"] == 17.0


def test_shipped_references_carry_a_manifest_and_the_command_and_an_edit_hides_them(tmp_path):
    store, reference = tmp_path / "results", tmp_path / "reference"
    paper = get_profile("paper", {"tasks": "autoencoder", "device": "cpu"})
    with pytest.raises(FileNotFoundError, match="no claim records"):
        claims.ship_reference(paper, root=store, reference=reference)
    claims.record(claims.c3_sgd_worse({"adam": 0.1, "rmsprop": 0.1, "sgd": 0.5}), paper, root=store)
    command = "bash scripts/book.sh --profile paper --set tasks=autoencoder --set device=cpu"
    claims.record_build(paper, {"book/lr_tuning": 300.0}, command, root=store)
    folder = claims.ship_reference(paper, root=store, reference=reference)
    assert folder.name == "paper+device=cpu+tasks=autoencoder"
    assert sorted(p.name for p in folder.iterdir()) == ["C3.json", "MANIFEST.json", "README.md", "build.json"]
    assert command in (folder / "README.md").read_text()
    other = tmp_path / "elsewhere"  # a store without this setting: the shipped column shows
    assert [c.reference for c in claims.columns(None, root=other, reference=reference)] == [True]
    (folder / "C3.json").write_text((folder / "C3.json").read_text().replace("0.5", "0.05"))
    with pytest.warns(UserWarning, match="differ from their MANIFEST"):
        assert claims.columns(None, root=other, reference=reference) == []
