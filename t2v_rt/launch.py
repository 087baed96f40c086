"""The ``t2v-rt`` executable's first code: Ctrl-C and SIGTERM are taken over before anything
else is imported, so a signal at any moment of start-up ends in one line and exit 130, never
a traceback. The signal is only noted here (an exception raised inside an import can be
turned into an ImportError that some library catches, and be lost); :func:`t2v_rt.cli.entry`
checks the note once its own handlers are in place."""

from __future__ import annotations

import signal

_signals: list[int] = []


def _note(signum, frame):
    _signals.append(signum)


def signalled() -> bool:
    """Whether SIGINT or SIGTERM came before the CLI took them over."""
    return bool(_signals)


def entry() -> None:
    signal.signal(signal.SIGINT, _note)
    signal.signal(signal.SIGTERM, _note)
    from t2v_rt.cli import entry as cli_entry

    cli_entry()


if __name__ == "__main__":
    entry()
