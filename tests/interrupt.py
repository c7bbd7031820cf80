"""A recorder that stands for a user's Ctrl-C, shared by the tests that interrupt and resume runs."""

from __future__ import annotations

from ntaylor_lib.runs.recorder import Recorder


class Interrupt(Recorder):
    """Raises KeyboardInterrupt once, at round ``at_round`` (``None``: never), like a user's Ctrl-C."""

    name = "interrupt"

    def __init__(self, at_round: int | None = None) -> None:
        self.at_round = at_round

    def on_round(self, n, model, x, y):
        if n == self.at_round:
            self.at_round = None
            raise KeyboardInterrupt
