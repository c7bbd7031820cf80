"""Progress: a bar on a terminal, lines in a log, and a channel from a chapter's kernel to the book command."""

from __future__ import annotations

import io
import json
import time

from ntaylor_lib.runs import progress
from ntaylor_lib.runs.progress import CHANNEL, ChannelBar, LineBar, ProgressFollower, describe, progress_bar
from tests.notebooks import myst_notebook


def test_describe_gives_counts_share_and_time_left():
    assert describe("train", 30, 120, "round", 90.0) == "train: 30/120 rounds (25%), 1m30s left"
    assert describe("train", 120, 120, "round", 0.0) == "train: 120/120 rounds (100%)"
    assert describe("solve", 3, None, "problem") == "solve: 3 problems"
    assert "1h05m left" in describe("x", 1, 2, "it", 3900.0)


def test_a_line_bar_says_where_it_starts_and_ends_and_estimates_from_its_own_rate(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    bar = LineBar(total=100, desc="autoencoder/adam", unit="round", initial=20, every=30.0, file=out)
    now[0] = 10.0
    bar.update(10)  # not yet 30 s since the last line
    now[0] = 40.0
    bar.update(10)  # a line: 20 rounds of this process in 40 s, 60 left: 2 minutes
    now[0] = 50.0
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines == ["autoencoder/adam: 20/100 rounds (20%)",
                     "autoencoder/adam: 40/100 rounds (40%), 2m00s left",
                     "autoencoder/adam: 40/100 rounds (40%), 2m30s left"]


def test_a_bar_off_a_terminal_is_lines_and_disabled_is_nothing(capsys, monkeypatch):
    monkeypatch.delenv(CHANNEL, raising=False)
    assert isinstance(progress_bar(total=3, desc="x"), LineBar)  # pytest's stderr is no terminal
    assert not isinstance(progress_bar(total=3, desc="x", disable=True), LineBar)


def test_a_kernel_reports_through_the_channel_and_the_follower_draws_it(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(CHANNEL, raising=False)
    with ProgressFollower(tmp_path / "chapter.progress", "figure4") as follower:
        bar = progress_bar(total=4, desc="convnet/sgd lr=0.1", unit="round", disable=True)
        assert isinstance(bar, ChannelBar)  # reports even where a terminal bar is off
        for _ in range(4):
            bar.update()
            time.sleep(0.05)
        bar.close()
        time.sleep(1.2)
        assert not follower.bars  # closed
    err = capsys.readouterr().err
    assert "figure4 | convnet/sgd lr=0.1: 0/4 rounds" in err and "figure4 | convnet/sgd lr=0.1: 4/4 rounds" in err
    assert CHANNEL not in __import__("os").environ and not (tmp_path / "chapter.progress").exists()


def test_channel_lines_are_whole_json_records(tmp_path, monkeypatch):
    path = tmp_path / "p"
    monkeypatch.setenv(CHANNEL, str(path))
    bar = progress_bar(total=2, desc="d", unit="u")
    bar.update(2)
    bar.close()
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["event"] for e in events][0] == "start" and events[-1]["event"] == "close"
    assert events[-1]["n"] == 2 and {e["id"] for e in events} == {events[0]["id"]}


def test_the_book_draws_a_chapters_progress_and_no_kernel_notices(tmp_path, capfd):
    """What the book command shows while a chapter trains: the bars its kernel reports, no TCP notice."""
    from ntaylor_lib.site.book import execute_chapter

    source = tmp_path / "chapter.md"
    source.write_text(CHAPTER)
    execute_chapter(source, {"profile": "smoke", "overrides": {}}, tmp_path / "out" / "chapter.ipynb")
    err = capfd.readouterr().err
    assert "chapter | pretend training: 5/5 rounds" in err
    assert "Kernel is running over TCP" not in err and "IPKernelApp" not in err
    executed = json.loads((tmp_path / "out" / "chapter.ipynb").read_text())
    outputs = json.dumps([cell.get("outputs", []) for cell in executed["cells"]])
    assert "pretend training" not in outputs  # nothing of it entered the notebook


CHAPTER = myst_notebook('profile = "cpu"\noverrides = {}', """
import time

from ntaylor_lib.runs.progress import progress_bar

bar = progress_bar(total=5, desc="pretend training", unit="round")
for _ in range(5):
    time.sleep(0.3)
    bar.update()
bar.close()
""")
