"""The training cache: every usable clip of a dataset folder decoded once into one
memory-mapped uint8 array ``[N, T, H, W, 3]``, so a trainer never decodes video per step.

Each clip gives the first ``T`` frames at the requested rate: frame ``k`` is the source frame
whose timestamp (from the clip's first frame) is nearest to ``k / fps``. A clip whose frames
end more than half a source frame before ``(T - 1) / fps`` is too short and left out (named on
the log). Frames are scaled so that their shorter side is ``size`` (swscale: area averaging
down, bilinear up) and the centre square is kept.

Where: one folder per (dataset, request) under the cache root, named by a digest of the
dataset's folder, its captioned video files (relative path, size, modification time), the
captions file's bytes and the request (frames, size, fps, min_frames). It holds ``clips.u8``
(the raw array) and ``index.json`` (written last: shape, frame rate, captions per clip, source
file per clip, vocabulary, clips left out and why). A valid entry is reused; any change to the
dataset changes the digest, so the next open rebuilds (and removes the entries of the same
dataset and request that it replaces). Built in a temporary folder and renamed when complete:
an interruption or a full disk leaves nothing half-written.

The cache root: ``cache_dir`` when given; else ``training-cache/`` under t2v-rt's cache
(``$T2V_RT_CACHE``, else ``~/.cache/t2v-rt``, else the per-user temporary cache:
``t2v_rt.compile.cache.write_root``); else ``.t2v-rt-training-cache/`` beside the dataset
folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from t2v_rt.data.check import _rate, _short_error, dataset_videos
from t2v_rt.data.format import DatasetError, read_captions, vocabulary

CACHE_VERSION = 1
MAX_FRAMES = 10_000
MIN_SIZE, MAX_SIZE = 8, 4096
MAX_FPS = 240.0
_EPS = 1e-6          # seconds: timestamps within this are equal


@dataclass(eq=False)
class TrainingSet:
    """The decoded clips of a dataset and their captions (:func:`open_training_set`)."""

    clips: np.memmap              # [N, T, H, W, 3] uint8, read-only
    captions: list[list[str]]     # all captions of clip i
    fps: float                    # frame rate of the cached clips
    vocabulary: list[str]         # every lower-case word of the captions, most frequent first
    videos: list[str]             # source file of clip i, relative to the dataset folder
    folder: Path                  # the dataset folder
    path: Path                    # the cache entry (clips.u8 + index.json)

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def frames(self) -> int:
        return int(self.clips.shape[1])

    @property
    def size(self) -> int:
        return int(self.clips.shape[2])

    def sample(self, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, list[str]]:
        """``batch`` clips drawn uniformly (distinct when ``batch`` <= N), as an in-memory copy
        ``[B, T, H, W, 3]`` uint8, and one of each clip's captions, drawn uniformly."""
        _, clips, captions = self.draw(rng, batch)
        return clips, captions

    def draw(self, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """:meth:`sample` with the clips' indices first (int64 ``[B]``), the same draws."""
        batch = int(batch)
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        n = len(self)
        idx = rng.choice(n, size=batch, replace=batch > n)
        order = np.argsort(idx, kind="stable")          # read the memory map in file order
        clips = np.empty((batch, *self.clips.shape[1:]), dtype=np.uint8)
        clips[order] = self.clips[idx[order]]
        captions = [self.captions[i][int(rng.integers(len(self.captions[i])))] for i in idx]
        return idx.astype(np.int64), clips, captions

    def draw_captions(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, list[str]]:
        """``count`` captions without their clips: clip indices drawn uniformly with
        replacement (int64 ``[count]``) and one of each one's captions, drawn uniformly."""
        if int(count) < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        idx = rng.integers(0, len(self), size=int(count))
        return idx.astype(np.int64), [self.captions[i][int(rng.integers(len(self.captions[i])))]
                                      for i in idx]


def _check_request(frames, size, fps, min_frames) -> None:
    if not isinstance(frames, (int, np.integer)) or not 1 <= frames <= MAX_FRAMES:
        raise DatasetError(f"frames must be an integer in [1, {MAX_FRAMES}], got {frames!r}")
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise DatasetError(f"size must be an integer in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}")
    if fps is not None and not (isinstance(fps, (int, float, Fraction, np.number))
                                and 0 < float(fps) <= MAX_FPS):
        raise DatasetError(f"fps must be a number in (0, {MAX_FPS:g}] or None, got {fps!r}")
    if min_frames is not None and (not isinstance(min_frames, (int, np.integer))
                                   or not 1 <= min_frames <= MAX_FRAMES):
        raise DatasetError(f"min_frames must be an integer in [1, {MAX_FRAMES}] or None, "
                           f"got {min_frames!r}")


def default_cache_root(folder: Path, log=None) -> Path:
    """Where training caches go when ``cache_dir`` is not given (see the module's docstring)."""
    from t2v_rt.compile.cache import write_root
    from t2v_rt.files import probe_writable

    root = write_root(log)
    if root is not None:
        return root / "training-cache"
    beside = Path(folder).absolute().parent / ".t2v-rt-training-cache"
    why = probe_writable(beside)
    if why is not None:
        raise DatasetError(f"no writable place for the training cache (t2v-rt's cache is not "
                           f"usable, and '{beside}': {why}); set T2V_RT_CACHE to a writable "
                           "folder")
    return beside


def cache_key(folder: Path, videos: list[str], captions_file: Path, frames: int, size: int,
              fps: float | None, min_frames: int | None) -> str:
    """The digest naming a cache entry (see the module's docstring)."""
    h = hashlib.sha256()
    stats = []
    for v in videos:
        st = os.stat(Path(folder) / v)
        stats.append([v, st.st_size, st.st_mtime_ns])
    h.update(json.dumps({
        "version": CACHE_VERSION, "folder": os.path.realpath(folder), "videos": stats,
        "request": [frames, size, None if fps is None else float(fps), min_frames],
        "captions_file": captions_file.name,
    }, sort_keys=True).encode())
    h.update(Path(captions_file).read_bytes())
    return h.hexdigest()


def open_training_set(folder, frames: int = 16, size: int = 64, fps: float | None = None,
                      cache_dir=None, log=None, min_frames: int | None = None) -> TrainingSet:
    """The training set of the dataset ``folder`` (docs/datasets.md): from its valid cache
    entry, or decoded now into a new one (progress on ``log``).

    ``frames`` x ``size`` x ``size`` per clip at ``fps`` (None: the dataset's most common
    frame rate); clips with fewer than ``min_frames`` source frames are left out as well.
    Raises :class:`DatasetError` (one line) when no clip is usable."""
    _check_request(frames, size, fps, min_frames)
    frames, size = int(frames), int(size)
    folder = Path(folder)
    say = log or (lambda line: None)
    caps = read_captions(folder)
    present, missing, _ = dataset_videos(folder, caps)
    if caps.problems:
        say(f"training cache: {len(caps.problems)} caption row(s) skipped, the first: "
            f"{caps.problems[0]}")
    if missing:
        say(f"training cache: {len(missing)} video(s) named in {caps.file.name} are missing, "
            f"the first: {missing[0][0]} ({missing[0][1]})")
    if not present:
        raise DatasetError(f"no usable clip in '{folder}': {caps.file.name} names "
                           f"{len(caps.by_video)} video(s), none of them there; run 't2v-rt "
                           "dataset check' for the list")
    try:
        key = cache_key(folder, present, caps.file, frames, size, fps, min_frames)
    except OSError as e:
        raise DatasetError(f"cannot read '{e.filename}' ({e.strerror}); the dataset changed "
                           "while being read? run again") from None
    root = Path(cache_dir) if cache_dir is not None else default_cache_root(folder, log)
    entry = root / f"{_slug(folder)}-{key[:20]}"
    found = _load(entry, key, folder)
    if found is not None:
        say(f"training cache: reusing {entry} ({len(found)} clips of {found.frames} frames, "
            f"{found.size}x{found.size} at {found.fps:g} fps)")
        return found
    _build(entry, key, folder, caps.by_video, present, frames, size, fps, min_frames, say)
    found = _load(entry, key, folder)
    if found is None:      # pragma: no cover -- a build that does not load is a bug
        raise RuntimeError(f"the training cache just built at {entry} does not load")
    _remove_stale(root, entry, folder, frames, size, fps, min_frames, say)
    return found


def _slug(folder: Path) -> str:
    name = Path(os.path.realpath(folder)).name
    keep = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
    return keep or "dataset"


def _load(entry: Path, key: str, folder: Path) -> TrainingSet | None:
    """The cache entry at ``entry`` when complete and made for ``key``; else None."""
    try:
        index = json.loads((entry / "index.json").read_text())
        if index.get("version") != CACHE_VERSION or index.get("key") != key:
            return None
        shape = tuple(int(x) for x in index["shape"])
        if len(shape) != 5 or shape[-1] != 3 or shape[0] < 1:
            return None
        data = entry / "clips.u8"
        if data.stat().st_size != int(np.prod(shape)):
            return None
        clips = np.memmap(data, dtype=np.uint8, mode="r", shape=shape)
        entries = index["clips"]
        if len(entries) != shape[0]:
            return None
        return TrainingSet(clips=clips, captions=[list(c["captions"]) for c in entries],
                           fps=float(index["fps"]), vocabulary=[w for w, _ in index["vocabulary"]],
                           videos=[c["video"] for c in entries], folder=folder, path=entry)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _probe_rate(job: tuple[str, str]) -> float | None:
    import av

    try:
        with av.open(str(Path(job[0]) / job[1]), "r", timeout=30) as c:
            rate = _rate(c.streams.video[0]) if c.streams.video else None
            return float(rate) if rate else None
    except Exception:   # noqa: BLE001 -- an unreadable file has no rate; the decode says why
        return None


def common_rate(rates) -> float | None:
    """The most common of ``rates`` (to the millisecond-frame; ties: the higher rate)."""
    counts = Counter(round(r, 3) for r in rates if r)
    if not counts:
        return None
    return max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]


def _build(entry: Path, key: str, folder: Path, by_video: dict[str, list[str]],
           videos: list[str], frames: int, size: int, fps: float | None,
           min_frames: int | None, say) -> None:
    from t2v_rt.data.pool import parallel_map

    start = time.monotonic()
    fps_requested = fps
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".partial", dir=entry.parent))
    except OSError as e:
        raise DatasetError(f"cannot write the training cache in '{entry.parent}' "
                           f"({e.strerror}); give another cache folder or set T2V_RT_CACHE") from None
    try:
        if fps is None:
            with closing(parallel_map(_probe_rate, [(str(folder), v) for v in videos])) as it:
                rates = list(it)
            fps = common_rate(rates)
            if fps is None:
                raise DatasetError(f"no video of '{folder}' has a readable frame rate; pass fps")
            say(f"training cache: the dataset's most common frame rate is {fps:g} fps")
        fps = float(fps)
        fps_requested = None if fps_requested is None else fps
        shape = (len(videos), frames, size, size, 3)
        per_clip = frames * size * size * 3
        data = tmp / "clips.u8"
        with open(data, "wb") as f:
            f.truncate(len(videos) * per_clip)       # sparse until written
        say(f"training cache: decoding {len(videos)} clips of '{folder}' to {frames} frames "
            f"{size}x{size} at {fps:g} fps into {entry}")
        jobs = [(str(folder), v, str(data), slot, shape, fps, min_frames or 0)
                for slot, v in enumerate(videos)]
        results = []
        start_decode = last = time.monotonic()
        running = parallel_map(_decode_job, jobs)
        with closing(running):   # an interruption stops the pool at once
            for n, res in enumerate(running, 1):
                results.append(res)
                now = time.monotonic()
                if now - last >= 3.0:
                    last = now
                    rate = n / (now - start_decode)
                    say(f"training cache: {n}/{len(videos)} clips ({rate:.0f}/s, "
                        f"{(len(videos) - n) / rate:.0f} s left)")
        good = [(slot, info) for slot, ok, info in results if ok]
        skipped = [{"video": videos[slot], "reason": info} for slot, ok, info in results if not ok]
        for s in skipped[:5]:
            say(f"training cache: left out {s['video']}: {s['reason']}")
        if len(skipped) > 5:
            say(f"training cache: ... and {len(skipped) - 5} more left out (index.json lists all)")
        if not good:
            first = skipped[0]
            raise DatasetError(f"no usable clip in '{folder}' for {frames} frames at {fps:g} fps: "
                               f"all {len(videos)} left out, e.g. {first['video']}: "
                               f"{first['reason']}; run 't2v-rt dataset check'")
        mm = np.memmap(data, dtype=np.uint8, mode="r+", shape=shape)
        for j, (slot, _) in enumerate(good):       # close the gaps of the clips left out
            if slot != j:
                mm[j] = mm[slot]
        mm.flush()
        del mm
        os.truncate(data, len(good) * per_clip)
        kept = [videos[slot] for slot, _ in good]
        clips = [{"video": v, "captions": by_video[v], "source_fps": info["fps"],
                  "source_frames": info["frames"]} for v, (_, info) in zip(kept, good)]
        index = {
            "version": CACHE_VERSION, "key": key, "dataset": os.path.realpath(folder),
            "shape": [len(good), frames, size, size, 3], "dtype": "uint8", "fps": fps,
            "request": {"frames": frames, "size": size, "fps": fps_requested,
                        "min_frames": min_frames},
            "clips": clips, "skipped": skipped,
            "vocabulary": vocabulary(c for v in kept for c in by_video[v]),
        }
        (tmp / "index.json").write_text(json.dumps(index) + "\n")
        if entry.exists():                # an invalid leftover of the same key
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.rename(tmp, entry)
        except OSError:
            if _load(entry, key, folder) is None:   # another process built it meanwhile: keep theirs
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetError(f"cannot write the training cache in '{entry.parent}' "
                           f"({e.strerror}); free some space or give another cache folder") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    mb = len(good) * per_clip / 1e6
    say(f"training cache: built {entry} ({len(good)} clips, {mb:.0f} MB, "
        f"{time.monotonic() - start:.1f} s" + (f"; {len(skipped)} left out" if skipped else "")
        + ")")


def _remove_stale(root: Path, entry: Path, folder: Path, frames, size, fps, min_frames,
                  say) -> None:
    """Remove the entries this one replaces: same dataset folder, same request, older key."""
    real = os.path.realpath(folder)
    request = {"frames": frames, "size": size, "fps": None if fps is None else float(fps),
               "min_frames": min_frames}
    prefix = f"{_slug(folder)}-"
    try:
        others = [p for p in root.iterdir() if p.name.startswith(prefix) and p != entry]
    except OSError:
        return
    for other in others:
        try:
            index = json.loads((other / "index.json").read_text())
        except (OSError, ValueError):
            continue
        if index.get("dataset") == real and index.get("request") == request:
            shutil.rmtree(other, ignore_errors=True)
            say(f"training cache: removed the stale {other}")


# --- decoding one clip (in a worker process) -------------------------------------------------

def _decode_job(job: tuple) -> tuple[int, bool, object]:
    folder, video, data, slot, shape, fps, min_frames = job
    try:
        clip, info = decode_clip(Path(folder) / video, shape[1], shape[2], fps, min_frames)
    except Exception as e:   # noqa: BLE001 -- a damaged file is left out, with its reason
        return slot, False, f"not readable ({_short_error(e)})"
    if clip is None:
        return slot, False, info
    # one write at the clip's place (no memory map per job: its flush would sync the whole file)
    buf = np.ascontiguousarray(clip).tobytes()
    fd = os.open(data, os.O_WRONLY | os.O_CLOEXEC)
    try:
        offset, view = slot * len(buf), memoryview(buf)
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
    finally:
        os.close(fd)
    return slot, True, info


def to_square(frame, size: int) -> np.ndarray:
    """An ``av.VideoFrame`` as ``[size, size, 3]`` uint8 RGB: scaled so that its shorter side
    is ``size`` (area averaging down, bilinear up), the centre square kept."""
    w, h = frame.width, frame.height
    if w >= h:
        nh, nw = size, max(size, round(w * size / h))
    else:
        nw, nh = size, max(size, round(h * size / w))
    down = nw * nh < w * h
    rgb = frame.reformat(width=nw, height=nh, format="rgb24",
                         interpolation="AREA" if down else "BILINEAR").to_ndarray()
    y, x = (nh - size) // 2, (nw - size) // 2
    return rgb[y:y + size, x:x + size]


def decode_clip(path: Path, frames: int, size: int, fps: float,
                min_frames: int = 0) -> tuple[np.ndarray | None, object]:
    """The first ``frames`` frames of ``path`` at ``fps`` (nearest source frame by timestamp),
    ``[frames, size, size, 3]`` uint8, and {"fps": source rate, "frames": source frames
    read}; or (None, why the clip cannot give them)."""
    import av

    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    targets = [k / fps for k in range(frames)]
    with av.open(str(path), "r", timeout=30) as container:
        if not container.streams.video:
            return None, "has no video stream"
        stream = container.streams.video[0]
        # one decoding thread: the clips are decoded in parallel, one process per core
        # (FFmpeg's own threads: 48 -> 20 ms per 16-frame 64 x 64 clip on a busy 2-core machine)
        stream.codec_context.thread_count = 1
        rate = _rate(stream)
        src_fps = float(rate) if rate else None
        k, n = 0, 0
        prev, prev_t, first = None, 0.0, None
        try:
            for frame in container.decode(stream):
                t = frame.time
                if t is None:
                    t = n / (src_fps or fps)
                if first is None:
                    first = t
                t -= first
                n += 1
                while k < frames and t >= targets[k] - _EPS:
                    pick = prev if prev is not None and targets[k] - prev_t < t - targets[k] else frame
                    out[k] = to_square(pick, size)
                    k += 1
                prev, prev_t = frame, t
                if k == frames and n >= min_frames:
                    break
        except av.error.FFmpegError as e:
            if k < frames or n < min_frames:
                return None, f"decoding failed after {n} frames ({_short_error(e)})"
    if prev is None:
        return None, "no frame could be decoded"
    if n < min_frames:
        return None, f"too short: {n} frames, fewer than min_frames {min_frames}"
    if k < frames:
        half = 0.5 / (src_fps or fps)
        if targets[-1] - prev_t > half + _EPS:
            need = targets[-1] + 1 / fps
            return None, (f"too short: {n} frames ({prev_t + 1 / (src_fps or fps):.2f} s), "
                          f"the cache takes {frames} frames at {fps:g} fps ({need:.2f} s)")
        last = to_square(prev, size)
        out[k:] = last
    return out, {"fps": src_fps, "frames": n}
