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


class EnvironmentFailure(T2VError):
    """The machine stops the work: a full disk, a read-only or unwritable folder, a name too
    long for its file system, a closed output, too little memory. The message names the path,
    the reason and the fix. Exit code 1."""

    exit_code = 1


# errno -> what the user can do about it.
_FIXES = {
    "ENOSPC": "free some space there or choose another location",
    "EDQUOT": "free some space (disk quota exceeded) or choose another location",
    "EROFS": "the file system is read-only; choose a writable location",
    "EACCES": "no permission; choose a location you can write, or fix its permissions",
    "EPERM": "not permitted; choose a location you can write, or fix its permissions",
    "ENAMETOOLONG": "choose a shorter file name",
    "ENOTDIR": "a part of the path is a file, not a folder; fix the path",
    "EISDIR": "that path is a folder; give a file name",
    "ENOENT": "a folder on the way does not exist; create it or fix the path",
    "EMFILE": "too many open files; raise the limit (ulimit -n)",
    "ENFILE": "too many open files on this machine; close some programs",
    "ENOMEM": "not enough memory; close other programs or use a smaller model or --size",
    "EIO": "an input/output error of the device; check the disk",
    "ELOOP": "too many symbolic links on the path; fix the path",
    "EFBIG": "the file is too large for this file system; choose another location",
    "EEXIST": "something is already there; remove it or choose another name",
    "EBADF": "the file descriptor is closed; redirect it to a file or a pipe",
    "ETXTBSY": "the file is in use; choose another name",
    "EAGAIN": "the system is out of a resource (memory, threads or processes); close other "
              "programs or lower --size",
}

ENVIRONMENT_ERRNOS = frozenset(_FIXES)


def environment_failure(e: OSError, what: str = "") -> EnvironmentFailure | None:
    """An OSError of the environment (an errno in ENVIRONMENT_ERRNOS) as one line naming the
    path, the reason and the fix; None for any other OSError (a bug stays a bug)."""
    import errno as _errno

    name = _errno.errorcode.get(e.errno or 0, "")
    if name not in _FIXES:
        return None
    where = what or (f"'{_short(e.filename)}'" if e.filename is not None else "")
    reason = e.strerror or name
    return EnvironmentFailure(f"{'cannot use ' + where + ': ' if where else ''}{reason}; {_FIXES[name]}")


def _short(path, limit: int = 120) -> str:
    text = str(path)
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]}"
