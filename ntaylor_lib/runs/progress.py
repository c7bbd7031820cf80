"""Progress bars that degrade to nothing: tqdm where it is installed, silent stand-ins elsewhere.

A bare GPU machine may have torch and NumPy alone; training and sweeps then run without
a bar instead of failing.
"""

from __future__ import annotations

import sys
from typing import Any

try:
    from tqdm import tqdm as _tqdm
except ImportError:  # optional: the core library runs without it
    _tqdm = None


class _NoBar:
    """Stands in for a ``tqdm`` bar where tqdm is not installed: no bar, same calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(**kwargs: Any) -> Any:
    """A ``tqdm(**kwargs)`` bar, or a silent stand-in without tqdm."""
    return _tqdm(**kwargs) if _tqdm is not None else _NoBar()


def note(message: str) -> None:
    """Print a line to stderr without breaking a bar that is being drawn."""
    if _tqdm is not None:
        _tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr)
