"""The dataset format: a folder of video files plus one captions file.

A dataset is a folder holding video files (any container PyAV reads, in any sub-folders) and
exactly one captions file at its top:

- ``captions.csv``: UTF-8 (a byte-order mark is fine), a header row ``video,caption`` (more
  columns are allowed and ignored), then one row per caption, quoted as spreadsheets do
  (RFC 4180: a caption with a comma or a newline is written in double quotes). Blank lines
  are skipped.
- ``captions.jsonl``: one JSON object per line, ``{"video": "clips/a.mp4", "caption": "a red
  ball"}`` (or ``"captions": [...]`` for several at once). Blank lines are skipped.

``video`` is a path relative to the folder, with ``/`` between folders; it must stay inside
the folder (no absolute path, no ``..``, no symbolic link leading out). A clip may have any
number of captions: each row adds one. A caption is plain ASCII text (what a prompt may be,
``t2v_rt.generators.text.clean_prompt``), at most 1000 characters, with at least one word.

Reading never stops at a bad row: each one becomes a :class:`RowProblem` naming ``file:line``
and what is wrong, and the rest is read. Only a captions file that cannot be read at all (none
there, two of them, not UTF-8, no header) raises, in one line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from t2v_rt.errors import UsageError

CAPTION_FILES = ("captions.csv", "captions.jsonl")
# Extensions taken for videos when the folder is scanned (files the captions name are read
# whatever their extension).
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg",
    ".flv", ".wmv", ".ogv", ".ogg", ".nut", ".y4m", ".gif", ".3gp",
})
MAX_CAPTION_CHARS = 1000
MAX_CAPTIONS_BYTES = 1 << 30   # a captions file over 1 GiB is refused (not read into memory)
_WORD = re.compile(r"[a-z]+")


class DatasetError(UsageError):
    """A dataset folder that cannot be used (no captions file, unreadable captions, no usable
    clip): one line naming the path and the fix. Exit code 2."""


@dataclass(frozen=True)
class RowProblem:
    """One row of the captions file that was skipped: where, and why."""

    where: str      # "captions.csv:12"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class Captions:
    """The captions file, read: captions per video (in file order) and the rows skipped."""

    folder: Path
    file: Path                                   # the captions file
    kind: str                                    # "csv" or "jsonl"
    by_video: dict[str, list[str]] = field(default_factory=dict)   # relative path -> captions
    first_line: dict[str, str] = field(default_factory=dict)       # relative path -> "file:line"
    problems: list[RowProblem] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.by_video.values())


def words(text: str) -> list[str]:
    """The words of a caption as the vocabulary front end reads a prompt
    (``VocabularyFrontEnd.tokenize``): lower-cased runs of ``[a-z]``, everything else a gap."""
    return _WORD.findall(text.lower())


def vocabulary(captions: Iterable[str]) -> list[tuple[str, int]]:
    """(word, count) over ``captions``, most frequent first, then alphabetical."""
    counts = Counter(w for c in captions for w in words(c))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def find_captions_file(folder: Path) -> Path:
    """The captions file of ``folder`` (see the module's docstring), or one line saying what is
    wrong."""
    folder = Path(folder)
    if not folder.exists():
        raise DatasetError(f"dataset folder '{folder}' does not exist")
    if not folder.is_dir():
        raise DatasetError(f"'{folder}' is a file; give the dataset's folder (the one holding "
                           f"the videos and {' or '.join(CAPTION_FILES)})")
    found = [folder / name for name in CAPTION_FILES if (folder / name).exists()]
    if not found:
        raise DatasetError(f"no captions file in '{folder}': write {CAPTION_FILES[0]} (header "
                           f"video,caption) or {CAPTION_FILES[1]} (one {{\"video\": ..., "
                           f"\"caption\": ...}} a line); see docs/datasets.md")
    if len(found) > 1:
        raise DatasetError(f"'{folder}' has both {CAPTION_FILES[0]} and {CAPTION_FILES[1]}; "
                           "keep one")
    if not found[0].is_file():
        raise DatasetError(f"'{found[0]}' is not a file")
    return found[0]


def resolve_video(folder: Path, name: str) -> tuple[str | None, str]:
    """(the normalised relative path of ``name`` inside ``folder``, "") or (None, why it is
    refused): absolute paths, ``..`` and symbolic links leading out of the folder are."""
    if not isinstance(name, str) or not name.strip():
        return None, "empty video path"
    name = name.strip()
    if "\0" in name or any(ord(c) < 32 for c in name):
        return None, "video path has a control character"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", name) or name.startswith("~"):
        return None, f"video path '{_shown(name)}' is absolute; give it relative to the dataset folder"
    parts = name.split("/")
    if ".." in parts or ".." in name.split("\\"):
        return None, f"video path '{_shown(name)}' leads out of the dataset folder (..)"
    rel = posixpath.normpath(name)
    if rel in (".", ""):
        return None, f"video path '{_shown(name)}' names the folder itself"
    root = os.path.realpath(folder)
    real = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([root, real]) != root:
        return None, f"video path '{_shown(name)}' leads out of the dataset folder (symbolic link)"
    return rel, ""


def _shown(text: str, limit: int = 80) -> str:
    safe = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


def _caption_problem(text) -> str | None:
    from t2v_rt.generators.text import clean_prompt

    if not isinstance(text, str):
        return "the caption is not text"
    try:
        cleaned = clean_prompt(text)
    except UsageError as e:
        return str(e).replace("prompt", "caption")
    if not words(cleaned):
        return f"caption '{_shown(cleaned)}' has no words"
    return None


def read_captions(folder: Path) -> Captions:
    """Read the captions file of ``folder`` (:func:`find_captions_file`); bad rows are kept as
    :class:`RowProblem` s, never fatal. Video paths are checked (:func:`resolve_video`), not
    looked up: whether the files exist is :mod:`t2v_rt.data.check`'s business."""
    folder = Path(folder)
    path = find_captions_file(folder)
    try:
        size = path.stat().st_size
        if size > MAX_CAPTIONS_BYTES:
            raise DatasetError(f"'{path}' is {size / 2**30:.1f} GiB; a captions file is at most "
                               f"{MAX_CAPTIONS_BYTES >> 30} GiB")
        data = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read '{path}' ({e.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DatasetError(f"{path.name}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
                           "save the captions file as UTF-8") from None
    out = Captions(folder=folder, file=path, kind="csv" if path.suffix == ".csv" else "jsonl")
    rows = _csv_rows(path.name, text, out) if out.kind == "csv" else _jsonl_rows(path.name, text, out)
    for where, video, caption in rows:
        rel, why = resolve_video(folder, video)
        if rel is None:
            out.problems.append(RowProblem(where, why))
            continue
        why = _caption_problem(caption)
        if why is not None:
            out.problems.append(RowProblem(where, why))
            continue
        out.by_video.setdefault(rel, []).append(caption.strip())
        out.first_line.setdefault(rel, where)
    return out


def _csv_rows(name: str, text: str, out: Captions):
    """(file:line, video, caption) of each row; malformed rows go to ``out.problems``."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    cols = (0, 1)
    line = 0
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DatasetError(f"{name}:{reader.line_num or start}: not readable as CSV ({e}); "
                               "quote captions holding commas, quotes or newlines") from None
        line = start
        if not row or all(not c.strip() for c in row):
            continue                                  # blank line
        where = f"{name}:{line}"
        if header is None:
            header = [c.strip().lower() for c in row]
            if "video" not in header or "caption" not in header:
                raise DatasetError(f"{where}: the first row must be the header video,caption "
                                   f"(got '{_shown(','.join(row))}')")
            cols = (header.index("video"), header.index("caption"))
            continue
        if len(row) != len(header):
            out.problems.append(RowProblem(where, (
                f"{len(row)} field{'s' * (len(row) != 1)}, expected {len(header)} "
                f"({','.join(header)}); quote a caption that holds a comma")))
            continue
        yield where, row[cols[0]], row[cols[1]]
    if header is None:
        raise DatasetError(f"{name} is empty; its first row must be the header video,caption")


def _jsonl_rows(name: str, text: str, out: Captions):
    for line, raw in enumerate(text.splitlines(), 1):
        where = f"{name}:{line}"
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as e:
            out.problems.append(RowProblem(where, f"not JSON ({str(e).split(':')[0]})"))
            continue
        if not isinstance(obj, dict):
            out.problems.append(RowProblem(where, 'expected an object {"video": ..., "caption": ...}'))
            continue
        video = obj.get("video")
        if not isinstance(video, str):
            out.problems.append(RowProblem(where, 'no "video" path (a string)'))
            continue
        caps = obj.get("caption", obj.get("captions"))
        if isinstance(caps, str):
            caps = [caps]
        if not isinstance(caps, list) or not caps:
            out.problems.append(RowProblem(where, 'no "caption" (a string) or "captions" (a list '
                                                  'of strings)'))
            continue
        for c in caps:
            yield where, video, c


def scan_videos(folder: Path) -> list[str]:
    """Video files in ``folder`` and its sub-folders (by extension, :data:`VIDEO_EXTENSIONS`),
    as sorted relative paths; hidden files and folders (a leading dot), symbolic links to
    folders and links leading out of the folder are skipped."""
    root = Path(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: None):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, root)
        for f in filenames:
            if f.startswith(".") or Path(f).suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            rel = f if rel_dir == "." else posixpath.join(*Path(rel_dir).parts, f)
            if resolve_video(root, rel)[0] is not None:    # no symbolic link leading out
                found.append(rel)
    return sorted(found)
