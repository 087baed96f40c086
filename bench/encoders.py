"""Every encoder that runs here, in process: frames/s and where the time goes.

    python bench/encoders.py [--frames 240] [--batch 16] [--size 256]

For each encoder of the chain that can run on this machine (x264 and raw everywhere; nvenc
and nvjpeg on a GPU that has them), the bundled model on ``auto``'s backend generates
``--frames`` frames in batches and the encoder writes them into its container in memory
(MPEG-TS; NUT for nvjpeg; Y4M for raw). Timed per batch, synchronised on a GPU: generation
(the backend's float frames), conversion (to uint8 RGB for the host encoders, whose resize
and YUV conversion by swscale then count under encoding; NV12 for nvenc, timed with the same
kernel run alone), and encoding + muxing (the sink's ``write``). Reports
frames/s of the sequential loop and each stage's share. On a GPU also the NV12 conversion
kernel's bandwidth (bytes read + written per second) against a device copy measured in the
same run (issue #6's target: >= 70 %). Writes bench/results/encoders-{cpu,gpu}.json.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from fractions import Fraction
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import kernels_from_source, write_result

FORMAT = {"nvenc": "mpegts", "nvjpeg": "nut", "x264": "mpegts", "raw": "y4m"}


def sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def bench_encoder(name: str, video, frames: int, batch: int, size: int) -> dict:
    from t2v_rt.backends.base import to_display
    from t2v_rt.encode.encoders import open_sink
    from t2v_rt.pipeline import frame_times

    cuda = video.backend.on_cuda
    sink = open_sink(name, io.BytesIO(), FORMAT[name], Fraction(30), size, on_cuda=cuda)
    stages = {"generation": 0.0, "conversion": 0.0, "encoding_and_muxing": 0.0}
    start = time.perf_counter()
    for first in range(0, frames, batch):
        t0 = time.perf_counter()
        x = video.frames_at(frame_times(first, min(batch, frames - first), Fraction(30)))
        sync(cuda)
        t1 = time.perf_counter()
        if sink.takes == "rgb":
            x = to_display(x)
        elif name == "nvenc":                 # the kernel alone (nvenc runs it again inside)
            from t2v_rt.encode.nv12 import rgb_to_nv12_cuda

            rgb_to_nv12_cuda(x, size, size)
        sync(cuda)
        t2 = time.perf_counter()
        sink.write(x)
        sync(cuda)
        t3 = time.perf_counter()
        stages["generation"] += t1 - t0
        stages["conversion"] += t2 - t1
        stages["encoding_and_muxing"] += t3 - t2
    sink.close()
    total = time.perf_counter() - start
    return {"describe": sink.describe(), "format": FORMAT[name], "frames_per_s": frames / total,
            "seconds": stages, "shares": {k: v / sum(stages.values()) for k, v in stages.items()}}


def nv12_bandwidth() -> list[dict]:
    """The conversion kernel at a few sizes vs a device copy, fp16 and fp32 inputs."""
    from triton.testing import do_bench

    from t2v_rt.encode.nv12 import rgb_to_nv12_cuda

    src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    copy_gbs = 2 * 2**30 / do_bench(lambda: dst.copy_(src)) / 1e6
    rows = []
    for dtype in (torch.float16, torch.float32):
        for (h, w), (oh, ow) in [((1080, 1920), (1080, 1920)), ((64, 64), (256, 256))]:
            frames = (torch.rand(16, 3, h, w, device="cuda") * 2 - 1).to(dtype)
            ms = do_bench(lambda frames=frames, oh=oh, ow=ow: rgb_to_nv12_cuda(frames, oh, ow))
            moved = frames.numel() * frames.element_size() + 16 * oh * ow * 3 // 2
            rows.append({"dtype": str(dtype).replace("torch.", ""), "in": [h, w], "out": [oh, ow],
                         "ms_per_16_frames": ms, "gbs": moved / ms / 1e6,
                         "share_of_copy": moved / ms / 1e6 / copy_gbs})
    return [{"copy_gbs": copy_gbs}, *rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    kernels_from_source()
    from t2v_rt.backends import create_backend
    from t2v_rt.encode.encoders import ENCODERS, encoder_problem
    from t2v_rt.pipeline import Video

    backend = create_backend("auto", log=lambda m: print(m, file=sys.stderr))
    video = Video(backend, "a large red circle moving left and right slowly", 0)
    cuda = backend.on_cuda
    results, skipped = {}, {}
    for name in ENCODERS:
        why = encoder_problem(name, FORMAT[name], cuda)
        if why:
            skipped[name] = why
            continue
        bench_encoder(name, video, args.batch, args.batch, args.size)      # warm-up
        r = results[name] = bench_encoder(name, video, args.frames, args.batch, args.size)
        print(f"{name:7s} {r['frames_per_s']:8.1f} frames/s; " + ", ".join(
            f"{k} {v:.0%}" for k, v in r["shares"].items()), file=sys.stderr)
    payload = {"command": "python bench/encoders.py " + " ".join(sys.argv[1:]),
               "backend": backend.describe(), "frames": args.frames, "batch": args.batch,
               "size": args.size, "encoders": results, "skipped": skipped}
    if cuda and _native_built():
        payload["nv12_kernel"] = nv12_bandwidth()
    path = write_result("encoders", payload)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _native_built() -> bool:
    try:
        from t2v_rt import _nvenc  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
