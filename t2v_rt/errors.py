"""One exception type for user-facing errors; the CLI turns it into one line on stderr."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user: the message names the problem and the fix. Exit code 2."""

    exit_code = 2


class RuntimeUnavailable(Exception):
    """A requested component (backend, encoder) cannot run on this machine. Exit code 2."""

    exit_code = 2


class CompileError(Exception):
    """Compiling the model failed (an export that does not compute what PyTorch computes, an
    engine build that fails): the message says what and what to do. Exit code 1."""

    exit_code = 1
