"""Progress on long work: a bar on a terminal, plain lines elsewhere, and a channel out of a kernel.

:func:`progress_bar` picks what fits where the work runs:

- inside a chapter's kernel during a book build (``$NTAYLOR_PROGRESS`` names a file): a
  :class:`ChannelBar` that appends its state as JSON lines to that file, which the book
  command reads and draws (:class:`ProgressFollower`); nothing enters the notebook;
- on a terminal: a tqdm bar (where tqdm is installed);
- elsewhere (a log, CI): a line every half minute and one at the end, with an estimate of
  the time left.

A bare GPU machine may have torch and NumPy alone: without tqdm the terminal gets lines too.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

try:
    from tqdm import tqdm as _tqdm
except ImportError:  # optional: the core library runs without it
    _tqdm = None

#: The environment variable naming the file a kernel reports its progress to.
CHANNEL = "NTAYLOR_PROGRESS"
_IDS = itertools.count()


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def describe(desc: str, n: int, total: int | None, unit: str, left: float | None = None) -> str:
    """``desc: n/total units (p%), 1m20s left``."""
    if not total:
        return f"{desc}: {n} {unit}s"
    tail = f", {_clock(left)} left" if left is not None and n < total else ""
    return f"{desc}: {n}/{total} {unit}s ({100 * n / total:.0f}%){tail}"


class _NoBar:
    """No bar, the same calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class LineBar:
    """A bar as plain lines: one when it starts, then at most one every ``every`` seconds, one at the end."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
                 every: float = 30.0, file: Any = None, **_: Any) -> None:
        self.total, self.desc, self.unit, self.n, self.every = total, desc, unit, initial, every
        self.file = file or sys.stderr
        self.start = self.last = time.monotonic()
        self.first = initial  # rounds done before (a resumed run): not part of the rate
        self._say()

    def _say(self) -> None:
        done = self.n - self.first  # the rate counts this process's work only
        left = None
        if done > 0 and self.total:
            left = (time.monotonic() - self.start) / done * (self.total - self.n)
        print(describe(self.desc, self.n, self.total, self.unit, left), file=self.file, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            self._say()

    def close(self) -> None:
        self._say()


class ChannelBar:
    """A bar whose state goes, as JSON lines, to the file ``$NTAYLOR_PROGRESS`` names (at most one a second)."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0, **_: Any) -> None:
        self.path = os.environ[CHANNEL]
        self.id = f"{os.getpid()}-{next(_IDS)}"
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.last = 0.0
        self._emit("start")

    def _emit(self, event: str) -> None:
        line = json.dumps({"id": self.id, "event": event, "desc": self.desc, "n": self.n, "total": self.total,
                           "unit": self.unit, "time": time.time()})
        try:
            with open(self.path, "a") as handle:  # one short append: whole lines, even from several kernels
                handle.write(line + "\n")
        except OSError:
            pass  # progress is a courtesy: never a reason to fail the work

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= 1.0:
            self.last = time.monotonic()
            self._emit("update")

    def close(self) -> None:
        self._emit("close")


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
                 disable: bool = False, channel: bool = True, **kwargs: Any) -> Any:
    """A progress bar for ``total`` steps that fits where the work runs (see the module's docs).

    Args:
        disable: no bar on the terminal or in a log (a kernel of a book build still reports).
        channel: report to ``$NTAYLOR_PROGRESS`` when it is set (``False`` for the reader itself).
    """
    if channel and os.environ.get(CHANNEL):
        return ChannelBar(total=total, desc=desc, unit=unit, initial=initial)
    if disable:
        return _NoBar()
    stream = kwargs.get("file") or sys.stderr
    if _tqdm is not None and getattr(stream, "isatty", lambda: False)():
        return _tqdm(total=total, desc=desc, unit=unit, initial=initial, **kwargs)
    return LineBar(total=total, desc=desc, unit=unit, initial=initial, file=stream)


def note(message: str) -> None:
    """Print a line to stderr without breaking a bar that is being drawn."""
    if _tqdm is not None:
        _tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr)


class ProgressFollower:
    """Draws the bars that kernels report to a channel file, while a chapter executes.

    Use as a context manager around the execution: it sets ``$NTAYLOR_PROGRESS`` (the kernel
    inherits it), reads the file from a thread, and shows each reported bar with
    :func:`progress_bar` (a tqdm bar on a terminal, lines elsewhere), prefixed with ``label``.
    """

    def __init__(self, path: Path, label: str) -> None:
        self.path, self.label = Path(path), label
        self.bars: dict[str, Any] = {}
        self._stop = threading.Event()

    def __enter__(self) -> ProgressFollower:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self._saved = os.environ.get(CHANNEL)
        os.environ[CHANNEL] = str(self.path)
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for bar in self.bars.values():
            bar.close()
        if self._saved is None:
            os.environ.pop(CHANNEL, None)
        else:
            os.environ[CHANNEL] = self._saved
        self.path.unlink(missing_ok=True)

    def _follow(self) -> None:
        position = 0
        while True:
            stopping = self._stop.is_set()
            try:
                with open(self.path) as handle:
                    handle.seek(position)
                    lines = handle.readlines()
                    complete = [line for line in lines if line.endswith("\n")]
                    position += sum(len(line.encode()) for line in complete)
            except OSError:
                complete = []
            for line in complete:
                self.show(json.loads(line))
            if stopping:
                return
            self._stop.wait(0.5)

    def show(self, event: dict[str, Any]) -> None:
        """Draw one reported event (a bar's start, update or close)."""
        key = event["id"]
        if event["event"] == "start" or key not in self.bars:
            self.bars[key] = progress_bar(total=event["total"], desc=f"{self.label} | {event['desc']}",
                                          unit=event["unit"], initial=event["n"], channel=False)
            self.bars[key].n_seen = event["n"]
        bar = self.bars[key]
        step = event["n"] - bar.n_seen
        if step > 0:
            bar.update(step)
            bar.n_seen = event["n"]
        if event["event"] == "close":
            bar.close()
            del self.bars[key]
