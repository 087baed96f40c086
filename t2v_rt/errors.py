"""One error base for everything a user can act on; the CLI turns each into one line on stderr.

Every class names the problem and the fix in its message. ``exit_code`` is what the CLI exits
with: 2 for usage (bad input, a component that cannot run here, a model that does not fit),
1 for a failure of the work itself (an export that does not compute what PyTorch computes).
Anything else that escapes is a bug ("internal error").
"""

from __future__ import annotations


class T2VError(Exception):
    """Base of every user-facing error of t2v-rt."""

    exit_code = 1


class UsageError(T2VError):
    """Bad input from the user: the message names the problem and the fix. Exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    """A model config (the JSON beside the weights, ``--set`` values) that is malformed, out of
    bounds, names an unknown architecture, or does not fit its weights. Exit code 2."""


class RuntimeUnavailable(T2VError):
    """A requested component (backend, encoder, architecture) cannot run on this machine. Exit code 2."""

    exit_code = 2


class CompileError(T2VError):
    """Compiling the model failed (an export that does not compute what PyTorch computes, an
    engine build that fails): the message says what and what to do. Exit code 1."""

    exit_code = 1
