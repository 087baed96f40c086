"""``t2v-rt dataset check``: what a dataset folder holds and what is wrong with it.

Every video is opened with PyAV and decoded to the end (the only way to find a truncated or
corrupt file: its header may promise frames that are not there). A file that fails is named
with its reason and the rest goes on. The report: counts, durations, frame rates, sizes,
codecs, the caption vocabulary, and one list per kind of problem.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import Counter
from contextlib import closing
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from t2v_rt.data.format import (
    Captions,
    DatasetError,
    RowProblem,
    read_captions,
    scan_videos,
    vocabulary,
)

DEFAULT_MIN_FRAMES = 16
MAX_VIDEO_BYTES = 1 << 40     # a "video" larger than 1 TiB is not probed


@dataclass
class VideoInfo:
    """What probing one video found. ``error`` set: the file is unusable (and why)."""

    video: str                       # relative path
    frames: int = 0                  # frames decoded
    fps: float | None = None         # the stream's frame rate
    duration: float = 0.0            # seconds: frames / fps
    width: int = 0
    height: int = 0
    codec: str = ""
    container: str = ""
    bytes: int = 0
    error: str | None = None


def _rate(stream) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        try:
            if rate and 0 < float(rate) <= 10_000:
                return Fraction(rate)
        except (TypeError, ZeroDivisionError, ValueError):
            continue
    return None


def _short_error(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    text = " ".join(str(text).split())
    return text if len(text) <= 120 else text[:117] + "..."


def probe(folder: Path, video: str) -> VideoInfo:
    """Open and decode ``video`` (relative to ``folder``) to the end; never raises for a bad
    file (the reason goes to ``error``)."""
    import av

    info = VideoInfo(video=video)
    path = Path(folder) / video
    try:
        st = path.stat()
    except OSError as e:
        info.error = f"cannot read it ({e.strerror})"
        return info
    info.bytes = st.st_size
    if not path.is_file():
        info.error = "not a regular file"
        return info
    if st.st_size == 0:
        info.error = "empty file"
        return info
    if st.st_size > MAX_VIDEO_BYTES:
        info.error = "larger than 1 TiB"
        return info
    try:
        container = av.open(str(path), "r", timeout=30)
    except Exception as e:   # noqa: BLE001 -- any failure of a damaged file is a finding
        info.error = f"not a readable video ({_short_error(e)})"
        return info
    with container:
        try:
            if not container.streams.video:
                info.error = "has no video stream"
                return info
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1     # one process per core instead
            info.container = container.format.name
            info.codec = stream.codec_context.name
            info.width, info.height = stream.codec_context.width, stream.codec_context.height
            rate = _rate(stream)
            info.fps = float(rate) if rate else None
            promised = stream.frames or 0
            for frame in container.decode(stream):
                info.frames += 1
                info.width, info.height = frame.width, frame.height
        except Exception as e:   # noqa: BLE001
            info.error = (f"decoding failed after {info.frames} frame"
                          f"{'s' * (info.frames != 1)} ({_short_error(e)})")
            return info
    if info.frames == 0:
        info.error = "no frame could be decoded"
    elif promised and info.frames < promised:
        info.error = f"truncated: {info.frames} of the {promised} frames its header lists decode"
    if info.fps:
        info.duration = info.frames / info.fps
    return info


@dataclass
class Report:
    """The findings of :func:`check_dataset`."""

    folder: str
    captions_file: str
    min_frames: int
    videos: list[VideoInfo] = field(default_factory=list)       # every video probed
    usable: list[str] = field(default_factory=list)             # captioned, readable, long enough
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    too_short: list[tuple[str, int]] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)   # (video, file:line)
    uncaptioned: list[str] = field(default_factory=list)
    malformed: list[RowProblem] = field(default_factory=list)
    captions: dict[str, list[str]] = field(default_factory=dict)   # of the usable clips
    seconds: float = 0.0

    def vocabulary(self) -> list[tuple[str, int]]:
        return vocabulary(c for v in self.usable for c in self.captions[v])

    def why_none(self) -> str:
        """Why there is no usable clip, in one line."""
        parts = []
        if not self.videos and not self.missing:
            parts.append("no video files and no captions")
        for n, what in ((len(self.unreadable), "unreadable"),
                        (len(self.too_short), f"shorter than {self.min_frames} frames"),
                        (len(self.missing), "named in the captions but missing"),
                        (len(self.uncaptioned), "without a caption"),
                        (len(self.malformed), "caption rows malformed")):
            if n:
                parts.append(f"{n} {what}" if "rows" in what else
                             f"{n} video{'s' * (n != 1)} {what}")
        return (f"no usable clip in '{self.folder}' ({'; '.join(parts) or 'nothing captioned'}); "
                "run 't2v-rt dataset check' for the list")

    def to_json(self) -> dict:
        usable = set(self.usable)
        vids = [v for v in self.videos if v.video in usable]
        return {
            "folder": self.folder,
            "captions_file": self.captions_file,
            "min_frames": self.min_frames,
            "usable": len(self.usable),
            "videos": [asdict(v) | {"captions": self.captions.get(v.video, [])}
                       for v in self.videos],
            "totals": {
                "videos_found": len(self.videos),
                "usable_clips": len(self.usable),
                "captions": sum(len(self.captions[v]) for v in self.usable),
                "seconds": round(sum(v.duration for v in vids), 3),
                "frames": sum(v.frames for v in vids),
                "frame_rates": _histogram(_fps_text(v.fps) for v in vids),
                "sizes": _histogram(f"{v.width}x{v.height}" for v in vids),
                "codecs": _histogram(v.codec for v in vids),
            },
            "problems": {
                "unreadable": [{"video": v, "reason": r} for v, r in self.unreadable],
                "too_short": [{"video": v, "frames": n} for v, n in self.too_short],
                "missing": [{"video": v, "where": w} for v, w in self.missing],
                "uncaptioned": list(self.uncaptioned),
                "malformed_rows": [{"where": p.where, "reason": p.message}
                                   for p in self.malformed],
            },
            "vocabulary": dict(self.vocabulary()),
            "check_seconds": round(self.seconds, 3),
        }


def _fps_text(fps: float | None) -> str:
    if fps is None:
        return "unknown"
    return f"{fps:.3f}".rstrip("0").rstrip(".")


def _histogram(values) -> dict[str, int]:
    return dict(Counter(values).most_common())


def dataset_videos(folder: Path, caps: Captions) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """(captioned videos that exist, (missing video, file:line), videos on disk without a
    caption), each sorted."""
    on_disk = set(scan_videos(folder))
    present, missing = [], []
    for video, where in caps.first_line.items():
        path = Path(folder) / video
        if video in on_disk or path.is_file():
            present.append(video)
        else:
            missing.append((video, where))
    uncaptioned = sorted(on_disk - set(caps.by_video))
    return sorted(present), sorted(missing), uncaptioned


def check_dataset(folder: Path, min_frames: int = DEFAULT_MIN_FRAMES, log=None,
                  workers: int | None = None) -> Report:
    """Probe every video of ``folder``; problems are listed, never raised (only a captions file
    that cannot be read at all raises :class:`DatasetError`)."""
    from t2v_rt.data.pool import parallel_map

    start = time.monotonic()
    folder = Path(folder)
    caps = read_captions(folder)
    present, missing, uncaptioned = dataset_videos(folder, caps)
    # every video is probed, the uncaptioned ones too: the report says what they hold
    todo = sorted(set(present) | set(uncaptioned))
    progress = _Progress("checked", len(todo), log)
    infos = []
    running = parallel_map(_probe_job, [(str(folder), v) for v in todo], workers=workers)
    with closing(running):
        for info in running:
            infos.append(info)
            progress.step()
    progress.done()
    report = Report(folder=str(folder), captions_file=caps.file.name, min_frames=min_frames,
                    videos=infos, missing=missing, uncaptioned=uncaptioned,
                    malformed=list(caps.problems))
    captioned = set(present)
    for info in infos:
        if info.error:
            report.unreadable.append((info.video, info.error))
        elif info.frames < min_frames:
            report.too_short.append((info.video, info.frames))
        elif info.video in captioned:
            report.usable.append(info.video)
    report.captions = {v: caps.by_video[v] for v in report.usable}
    report.seconds = time.monotonic() - start
    return report


def _probe_job(job: tuple[str, str]) -> VideoInfo:
    return probe(Path(job[0]), job[1])


class _Progress:
    """A progress line on the log every few seconds, only for work that takes that long."""

    EVERY_S = 3.0

    def __init__(self, verb: str, total: int, log):
        self.verb, self.total, self.log = verb, total, log
        self.n, self.start = 0, time.monotonic()
        self.last = self.start

    def step(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.log is not None and now - self.last >= self.EVERY_S:
            self.last = now
            rate = self.n / max(now - self.start, 1e-9)
            eta = (self.total - self.n) / rate if rate > 0 else math.inf
            self.log(f"{self.verb} {self.n}/{self.total} videos ({rate:.0f}/s, "
                     f"{eta:.0f} s left)")

    def done(self) -> None:
        if self.log is not None and self.last != self.start:
            self.log(f"{self.verb} {self.n}/{self.total} videos in "
                     f"{time.monotonic() - self.start:.1f} s")


def format_report(report: Report, top: int = 20) -> str:
    """The human table of ``dataset check``."""
    j = report.to_json()
    t = j["totals"]
    usable = set(report.usable)
    vids = [v for v in report.videos if v.video in usable]
    lines = [f"dataset      {report.folder} ({report.captions_file})"]
    lines.append(f"usable clips {len(report.usable)} (of {len(report.videos)} video files found, "
                 f"{len(report.missing)} more named in the captions)")
    if vids:
        durations = [v.duration for v in vids]
        frames = [v.frames for v in vids]
        lines += [
            f"duration     {t['seconds']:.1f} s in all; per clip shortest {min(durations):.2f} s, "
            f"median {statistics.median(durations):.2f} s, longest {max(durations):.2f} s",
            f"frames       {t['frames']} in all; per clip fewest {min(frames)}, "
            f"median {statistics.median(frames):g}, most {max(frames)}",
            "frame rates  " + _counts(t["frame_rates"], " fps"),
            "sizes        " + _counts(t["sizes"]),
            "codecs       " + _counts(t["codecs"]),
        ]
        voc = report.vocabulary()
        per = t["captions"] / len(vids)
        lines.append(f"captions     {t['captions']} ({per:.1f} per clip), vocabulary "
                     f"{len(voc)} words")
        lines.append("top words    " + ", ".join(f"{w} {n}" for w, n in voc[:top]))
    groups = [
        ("unreadable", [f"{v}: {r}" for v, r in report.unreadable]),
        ("too short", [f"{v}: {n} frame{'s' * (n != 1)}, fewer than --min-frames "
                       f"{report.min_frames}" for v, n in report.too_short]),
        ("missing", [f"{v}: named at {w}, no such file" for v, w in report.missing]),
        ("no caption", list(report.uncaptioned)),
        ("bad rows", [str(p) for p in report.malformed]),
    ]
    problems = [(name, items) for name, items in groups if items]
    if problems:
        lines.append("problems")
        for name, items in problems:
            lines.append(f"  {name} ({len(items)})")
            lines += [f"    {item}" for item in items]
    else:
        lines.append("problems     none")
    return "\n".join(lines)


def _counts(hist: dict[str, int], unit: str = "") -> str:
    items = list(hist.items())
    text = ", ".join(f"{k}{unit}: {n}" for k, n in items[:8])
    return text + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")


def write_json(report: Report, path: Path) -> None:
    from t2v_rt.files import atomic_write

    text = json.dumps(report.to_json(), indent=1) + "\n"
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def require_usable(report: Report) -> None:
    if not report.usable:
        raise DatasetError(report.why_none())


__all__ = ["VideoInfo", "Report", "probe", "check_dataset", "format_report", "write_json",
           "require_usable", "dataset_videos", "DEFAULT_MIN_FRAMES"]
