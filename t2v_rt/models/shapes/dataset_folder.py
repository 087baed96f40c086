"""``t2v-rt dataset render-shapes``: the shapes world as a dataset folder (docs/datasets.md), so
that training on our own world goes through the very path a user's folder of videos takes.

Each clip is one scene of the contract (``t2v_rt.models.shapes``), drawn from the training
distribution (never a held-out colour-shape pair), rendered by the contract renderer and
encoded as H.264 in MP4; ``captions.csv`` holds free-form captions from the shapes caption
generator (the first one names every attribute, the others are paraphrases that may leave
attributes out: all true of the clip); ``meta.json`` holds each clip's scene (ground truth
for evaluation; a trainer must not read it).

Clip ``i`` is a pure function of (seed, i, size, fps, frames). The folder is written under a
temporary name beside it and renamed when complete: an interruption leaves nothing.

Needs PyTorch (the contract renderer): ``pip install 't2v-rt[torch]'``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import tempfile
import time
from contextlib import closing
from fractions import Fraction
from pathlib import Path

from t2v_rt.data.format import DatasetError

DEFAULT_SIZE = 64              # the bundled model's resolution (ModelConfig.resolution)
DEFAULT_FPS = Fraction(15)     # the evaluator's rate (t2v-rt eval) and MoCoGAN's native one
DEFAULT_FRAMES = 16            # the training cache's default clip length
DEFAULT_CAPTIONS = 2
MAX_CLIPS = 1_000_000
MAX_FRAMES = 10_000
MAX_CAPTIONS_PER_CLIP = 100
P_OMIT = 0.25                  # paraphrases: each attribute left out with this probability
CRF = 18                       # x264 constant quality: flat colours stay flat
VIDEOS = "videos"


def clip_name(i: int) -> str:
    return f"{VIDEOS}/clip-{i:06d}.mp4"


def _clip_rng(seed: int, i: int) -> random.Random:
    return random.Random(f"t2v-rt-shapes-dataset:{seed}:{i}")


def clip_scene(seed: int, i: int, captions_per_clip: int):
    """(scene, latent seed, captions) of clip ``i``: attributes from the training distribution,
    phase and position from the latent of the clip's own seed."""
    from t2v_rt.models.shapes import spec
    from t2v_rt.models.shapes.captions import caption, sample_attributes
    from t2v_rt.models.shapes.scene import Scene, latent_from_seed

    rng = _clip_rng(seed, i)
    attrs = sample_attributes(rng, 0.0)
    latent_seed = rng.getrandbits(63)
    scene = Scene.complete(attrs, latent_from_seed(latent_seed))
    assert not spec.is_held_out(scene.colour, scene.shape)
    full = scene.attributes()
    if full["motion"] == "still":
        full["speed"] = None          # a still shape has no speed to name
    texts: list[str] = []
    for k in range(captions_per_clip):
        if k == 0:          # every attribute named, canonical or paraphrased
            named = dict(full)
            text = caption(named, rng if rng.random() < 0.5 else None)
        else:
            named = {a: (None if rng.random() < P_OMIT else v) for a, v in full.items()}
            text = caption(named, rng)
        texts.append(text)
    return scene, latent_seed, texts


def encode_mp4(frames, fps: Fraction) -> bytes:
    """``frames`` [T, H, W, 3] uint8 RGB -> an H.264 MP4 file's bytes (libx264, yuv420p)."""
    import av

    buf = io.BytesIO()
    t, h, w, _ = frames.shape
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # threads=1: one clip per process is the parallelism (x264's own threads only cost
        # start-up time on 64 x 64 frames)
        stream.options = {"preset": "veryfast", "crf": str(CRF), "threads": "1", "g": str(max(1, t))}
        stream.codec_context.time_base = Fraction(1) / fps
        for k in range(t):
            frame = av.VideoFrame.from_ndarray(frames[k], format="rgb24").reformat(format="yuv420p")
            frame.pts = k
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def render_clip(job: tuple) -> tuple[str, bytes, dict, list[str]]:
    """One clip: (relative path, MP4 bytes, its scene as a dict, its captions)."""
    import torch

    from t2v_rt.models.shapes.render import render, to_uint8

    seed, i, size, fps, frames, captions_per_clip = job
    scene, latent_seed, texts = clip_scene(seed, i, captions_per_clip)
    times = torch.arange(frames, dtype=torch.float64) / float(fps)
    pixels = to_uint8(render(scene, times, size)).numpy()
    meta = {"video": clip_name(i), **scene.attributes(), "phase": scene.phase, "x0": scene.x0,
            "y0": scene.y0, "t0": 0.0, "latent_seed": latent_seed}
    return clip_name(i), encode_mp4(pixels, fps), meta, texts


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def render_shapes(folder: Path, clips: int, seed: int = 0, size: int = DEFAULT_SIZE,
                  fps: Fraction | float = DEFAULT_FPS, seconds: float | None = None,
                  captions_per_clip: int = DEFAULT_CAPTIONS, log=None,
                  workers: int | None = None) -> dict:
    """Write ``clips`` shapes-world clips to the new folder ``folder`` (see the module's
    docstring): ``size`` x ``size`` pixels, ``seconds`` long (default: 16 frames) at ``fps``.
    Returns a summary (clips, captions, seconds taken)."""
    from t2v_rt.data.pool import parallel_map

    folder = Path(folder)
    fps = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
    frames = DEFAULT_FRAMES if seconds is None else max(1, round(seconds * fps))
    if not 1 <= clips <= MAX_CLIPS:
        raise DatasetError(f"--clips must be in [1, {MAX_CLIPS:,}], got {clips}")
    if not 1 <= frames <= MAX_FRAMES:
        raise DatasetError(f"a clip of {frames} frames; at most {MAX_FRAMES}")
    if not 1 <= captions_per_clip <= MAX_CAPTIONS_PER_CLIP:
        raise DatasetError(f"--captions-per-clip must be in [1, {MAX_CAPTIONS_PER_CLIP}], "
                           f"got {captions_per_clip}")
    tmp = _start_folder(folder)
    start = time.monotonic()
    if log is not None:
        log(f"rendering {clips} shapes-world clips into {folder}")
    try:
        (tmp / VIDEOS).mkdir()
        rows: list[tuple[str, str]] = []
        metas: list[dict] = []
        first = last = start
        jobs = [(seed, i, size, fps, frames, captions_per_clip) for i in range(clips)]
        results = parallel_map(render_clip, jobs, workers=workers, initializer=_worker_init)
        with closing(results):   # an interruption stops the pool at once
            for n, (name, data, meta, texts) in enumerate(results, 1):
                (tmp / name).write_bytes(data)
                metas.append(meta)
                rows += [(name, t) for t in texts]
                now = time.monotonic()
                if n == 1:
                    first = last = now      # the rate counts from the first clip (after the
                                            # workers' start-up)
                elif log is not None and (now - last >= 2.0 or n == clips):
                    last = now
                    rate = (n - 1) / max(now - first, 1e-9)
                    log(f"rendered {n}/{clips} clips ({rate:.0f}/s"
                        + (f", {(clips - n) / rate:.0f} s left)" if n < clips else ")"))
        with open(tmp / "captions.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["video", "caption"])
            w.writerows(rows)
        meta_doc = {
            "world": "shapes",
            "note": "ground truth of each clip's scene, for evaluation only: a trainer must "
                    "not read this file",
            "seed": seed, "size": size, "fps": str(fps), "frames": frames,
            "captions_per_clip": captions_per_clip, "clips": metas,
        }
        (tmp / "meta.json").write_text(json.dumps(meta_doc, indent=1) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        try:
            os.rename(tmp, folder)
        except OSError as e:
            raise DatasetError(f"cannot put the dataset at '{folder}' ({e.strerror}); it must "
                               "not exist, or be an empty folder") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    took = time.monotonic() - start
    return {"clips": clips, "captions": len(rows), "frames": frames, "fps": fps, "size": size,
            "seconds": took}


def _start_folder(folder: Path) -> Path:
    """The temporary folder beside ``folder`` (checked before any work: ``folder`` must be new
    or an empty folder, its parent writable)."""
    if folder.exists() or folder.is_symlink():
        if not folder.is_dir() or folder.is_symlink():
            raise DatasetError(f"'{folder}' exists and is not a folder; choose a new folder")
        if any(folder.iterdir()):
            raise DatasetError(f"'{folder}' exists and is not empty; choose a new folder or "
                               "remove it")
    parent = folder.parent if str(folder.parent) else Path(".")
    if not parent.is_dir():
        why = "is a file, not a folder" if parent.exists() else "does not exist; create it"
        raise DatasetError(f"parent folder '{parent}' of the dataset {why}")
    try:
        return Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=parent))
    except OSError as e:
        raise DatasetError(f"cannot write in '{parent}' ({e.strerror}); choose a writable "
                           "place for the dataset") from None
