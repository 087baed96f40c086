"""File helpers of the runtime: writes that leave nothing half-written behind, and reads of
files that must be what a manifest says they are."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from pathlib import Path

from t2v_rt.errors import UsageError


class NotWritable(UsageError):
    """A folder that cannot be written (read-only, no permission, full, not a folder): the
    message names the path, the system's reason and the fix. Exit code 2."""


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: a failure leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno is not None and e.filename in (None, tmp):
            # name the file the user asked for, not the temporary one (or none: a failed
            # write() carries no name)
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_all(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``data`` into ``path`` by :func:`atomic_write`: readers see the old file or the whole
    new one; a full disk (or any failure) leaves the old file, or none, and no temporary."""
    atomic_write(path, lambda tmp: _write_all(tmp, data))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_bare_name(name) -> bool:
    """A file name with no folder part: what a manifest may name (nothing outside its folder)."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "\0" not in name
            and os.sep not in name and (os.altsep is None or os.altsep not in name))


def read_inside(folder: Path, name) -> bytes | None:
    """The bytes of the plain file ``name`` directly inside ``folder``, or None: ``name`` must
    be a bare file name, the file a regular file and not a symbolic link (opened with
    O_NOFOLLOW and checked on the open descriptor, so nothing is swapped in between). Digests
    are then computed on these very bytes, the ones that get loaded."""
    if not is_bare_name(name):
        return None
    try:
        # O_NONBLOCK: a FIFO put there must not hang the open
        fd = os.open(Path(folder) / name,
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    except OSError:
        return None
    finally:
        os.close(fd)


def read_verified(folder: Path, name, sha256) -> bytes | None:
    """:func:`read_inside`, and only when the SHA-256 of the bytes read is ``sha256``."""
    data = read_inside(folder, name)
    if data is None or not isinstance(sha256, str) or sha256_bytes(data) != sha256:
        return None
    return data


def probe_writable(folder: Path) -> str | None:
    """None when ``folder`` exists or can be made, and a file can be created and removed in it;
    else the system's reason (``e.strerror``)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except FileExistsError:
        return "it is not a folder"
    except OSError as e:
        return e.strerror or str(e)
    return None


def write_fix(e: OSError, option: str) -> str:
    """What to do about a write that failed with ``e`` in a folder the user chose with
    ``option``."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"free some space there or choose another {option}"
    return f"choose a writable {option}"


def not_writable(e: OSError, folder: Path, what: str, option: str) -> NotWritable:
    """A failed write into the user's folder as one line: the path, the system's reason and the
    fix."""
    where = e.filename if isinstance(e.filename, str) else str(folder)
    return NotWritable(f"cannot write {what} to '{where}' ({e.strerror or e}); "
                       f"{write_fix(e, option)}")
