"""Where compiled artefacts live, and how they get there.

One folder per model digest (``<root>/<digest[:16]>``), so artefacts of different weights
never mix. The roots, in order:

1. the configured cache: ``$T2V_RT_CACHE``, else ``$HOME/.cache/t2v-rt`` (none when HOME is
   not set);
2. a per-user temporary cache, ``<tempfile.gettempdir()>/t2v-rt-<uid>``: made 0700, refused
   when it is a symbolic link, not a folder, or another user's;
3. none: the artefacts stay in this process's memory (exported again by the next run).

Lookups read the first two wherever they exist (every file checked against its manifest's
digest by whoever loads it). Writes go to the first root that is usable: one where a file can
be created and removed. A root that fails in the middle of a write (disk full, quota,
read-only, permission) is dropped for the rest of the process and the write goes to the next
one (:func:`store`); the artefacts are written atomically and the manifest last, so a failure
leaves no half-written file and no manifest entry without its file. When the configured cache
is not used, one line on the caller's log says so, why, and what to do.

A writer holds a lock (``flock`` of ``.lock``) in the folder whose manifest it updates, for as
long as it exports or builds and writes; it reads the manifest again once it holds the lock and
merges, so concurrent writers keep each other's entries. Readers take no lock: a manifest is
replaced atomically, never seen half-written.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from t2v_rt.files import NotWritable, probe_writable

LOCK = ".lock"
FIX = "set T2V_RT_CACHE to a writable folder"


def configured_root() -> tuple[Path | None, str | None]:
    """(the configured cache root, None), or (None, why there is none)."""
    env = os.environ.get("T2V_RT_CACHE")
    if env:
        path = Path(os.path.expanduser(env))
        if str(path).startswith("~"):
            return None, f"T2V_RT_CACHE={env} names a home folder that cannot be found"
        return path.absolute(), None
    home = os.environ.get("HOME")
    if not home:
        return None, "HOME is not set, nor is T2V_RT_CACHE"
    return Path(home).absolute() / ".cache" / "t2v-rt", None


def temp_root(create: bool = True) -> tuple[Path | None, str | None]:
    """(the per-user temporary cache, None), or (None, why it cannot be used). ``create``:
    make it (0700) when missing (lookups do not: a missing one is a "no")."""
    try:
        base = tempfile.gettempdir()
    except OSError as e:        # no usable temporary folder at all
        return None, f"no temporary folder is usable ({e.strerror or e})"
    path = Path(base) / f"t2v-rt-{os.getuid()}"
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as e:
            return None, f"{path} cannot be made ({e.strerror})"
    try:
        st = os.lstat(path)
    except OSError as e:
        return None, f"{path}: {e.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return None, f"{path} is a symbolic link (refused: it could point anywhere)"
    if not stat.S_ISDIR(st.st_mode):
        return None, f"{path} is not a folder"
    if st.st_uid != os.getuid():
        return None, f"{path} belongs to another user (uid {st.st_uid})"
    if st.st_mode & 0o077:
        try:
            os.chmod(path, 0o700)   # ours: private, whatever the umask made it
        except OSError as e:
            return None, f"{path} cannot be made private ({e.strerror})"
    return path, None


@dataclass
class _Choice:
    root: Path | None       # where this process writes; None: in memory only
    why: str | None = None  # why not the configured cache (None: it is the configured cache)
    said: bool = False

    @property
    def where(self) -> str:
        return (f"using {self.root} for this run" if self.root is not None else
                "keeping compiled artefacts in memory for this run (made again next run)")

    @property
    def line(self) -> str | None:
        """The one log line when this is not the configured cache."""
        return None if self.why is None else f"{self.why}: {self.where}; {FIX}"


_choices: dict[tuple, _Choice] = {}
_failed: dict[Path, str] = {}       # roots that failed mid-write in this process: why


def _key() -> tuple:
    """What the choice depends on (tests change it within one process)."""
    try:
        tmp = tempfile.gettempdir()
    except OSError:
        tmp = None
    return os.environ.get("T2V_RT_CACHE"), os.environ.get("HOME"), tmp, os.getuid()


def _choose() -> _Choice:
    conf, why = configured_root()
    if conf is not None:
        why = _failed.get(conf) or probe_writable(conf)
        if why is None:
            return _Choice(conf, None)
        first = f"cache {conf} is not writable ({why})"
    else:
        first = f"no cache folder ({why})"
    tmp, why_tmp = temp_root(create=True)
    if tmp is not None:
        why_tmp = _failed.get(tmp) or probe_writable(tmp)
        if why_tmp is None:
            return _Choice(tmp, first)
        why_tmp = f"{tmp}: {why_tmp}"
    return _Choice(None, f"{first}, nor is the temporary cache ({why_tmp})")


def write_root(log=None) -> Path | None:
    """Where this process writes compiled artefacts (None: nowhere, they stay in memory),
    chosen once; the first call with a ``log`` says so when it is not the configured cache."""
    key = _key()
    choice = _choices.get(key)
    if choice is None:
        choice = _choices[key] = _choose()
    if choice.line and not choice.said and log is not None:
        log(choice.line)
        choice.said = True
    return choice.root


def _drop(root: Path, e: OSError) -> None:
    """``root`` failed mid-write: the next :func:`write_root` takes the next one and says why."""
    _failed[root] = e.strerror or str(e)
    _choices.pop(_key(), None)


def model_digest(weights: Path) -> str:
    """SHA-256 of the weights file and its JSON config, together: what a compiled artefact
    was made from. Computed once per version of the files (their size, time and inode)."""
    return files_digest(Path(weights), Path(weights).with_suffix(".json"))


def files_digest(*paths: Path) -> str:
    """SHA-256 of the files' bytes, one after another; computed once per version of the files
    (their device, inode, size and time)."""
    stats = tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for s in map(os.stat, paths))
    return _digest(tuple(Path(p) for p in paths), stats)


@functools.lru_cache(maxsize=64)
def _digest(paths: tuple[Path, ...], stats: tuple) -> str:
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def model_folder(weights: Path, root: Path | None = None, log=None) -> Path:
    """The cache folder of the model at ``weights`` where artefacts are written:
    ``<root>/<digest[:16]>``, ``root`` by default the one of :func:`write_root`.
    :class:`NotWritable` when no folder is writable (the caller needs files on disk)."""
    root = root or write_root(log)
    if root is None:
        raise NotWritable(f"no writable cache folder: {_choices[_key()].why}; {FIX}")
    return root / model_digest(weights)[:16]


def model_folders(weights: Path) -> list[Path]:
    """The model's folders to look in: the configured cache's (when configured), then the
    temporary cache's (when it exists and is safe); existing or not."""
    digest = model_digest(weights)[:16]
    roots = [configured_root()[0], temp_root(create=False)[0]]
    return [root / digest for root in roots if root is not None]


def cache_status() -> str:
    """One line for ``doctor``: where this process would write, and why not elsewhere."""
    root = write_root()
    choice = _choices[_key()]
    if choice.why is None:
        return f"{root} (writable)"
    return f"{choice.why}: {choice.where.replace(' for this run', '')}; {FIX}"


@contextmanager
def locked(folder: Path, log=None):
    """Hold the writer lock of ``folder`` (made if missing): ``flock`` of ``folder/.lock``. Waits,
    saying so on ``log``, while another process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log is not None:
                log(f"waiting for another t2v-rt process writing to {folder}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)        # releases the lock


def store(folder_of: Callable[[Path], Path], write: Callable[[Path], None],
          log=None) -> Path | None:
    """Run ``write(folder)`` under the lock of ``folder = folder_of(root)``, for the first root
    where it succeeds (see the module's text); the folder, or None when no root is writable
    (the caller keeps its artefacts in memory). ``write`` must write atomically and its
    manifest last, and may be called again for the next root after an ``OSError``."""
    while (root := write_root(log)) is not None:
        folder = folder_of(root)
        try:
            with locked(folder, log):
                write(folder)
            return folder
        except OSError as e:
            _drop(root, e)
    return None


def store_in(folder: Path, write: Callable[[Path], None], what: str, option: str, log=None) -> Path:
    """``write(folder)`` under ``folder``'s lock, for a folder the user chose (``option``): no
    fallback; a failure is :class:`NotWritable` naming the path, the reason and the fix."""
    from t2v_rt.files import not_writable

    try:
        with locked(folder, log):
            write(folder)
    except OSError as e:
        raise not_writable(e, folder, what, option) from None
    return folder
