"""Lines on stderr, the one place logs and progress go.

A log never stops the work and never reaches stdout (the video): a closed stderr (Python's
``sys.stderr`` is then None, and ``print(file=None)`` would write to stdout) or a full one
(``2>/dev/full``) drops the line.
"""

from __future__ import annotations

import sys


def say(line: str) -> None:
    """Write ``line`` and a newline to stderr, flushed; dropped if stderr cannot take it."""
    stream = sys.stderr
    if stream is None:
        return
    try:
        print(line, file=stream, flush=True)
    except (OSError, ValueError):
        pass
