"""End-to-end `t2v-rt stream` on the bundled model: time to first byte and frames/s.

    python bench/stream_e2e.py [--frames 600] [--size 256] [--repeats 3] [--encoder auto]

Runs the real command line as a subprocess (start-up, model load, generation, x264, MPEG-TS
muxing, the pipe), the way a user runs it, and writes bench/results/stream_e2e-{cpu,gpu}.json.
Time to first byte: from process start to the first byte on stdout. Frames/s: frames divided
by the time from the first byte to the end of the stream (steady state), and also over the
whole run. Targets (issue #2, 2-core CPU): >= 90 fps at 256x256, first byte <= 3 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from common import write_result  # noqa: E402

PROMPT = "a large red circle moving left and right slowly on a black background"


def one_run(frames: int, size: int, fmt: str, encoder: str = "auto", backend: str = "auto") -> dict:
    cmd = [sys.executable, "-m", "t2v_rt", "stream", PROMPT, "--no-realtime", "--frames",
           str(frames), "--size", str(size), "--format", fmt, "--encoder", encoder,
           "--backend", backend]
    start = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = p.stdout.read(1)
    t_first = time.perf_counter()
    total = len(first) + len(p.stdout.read())
    t_end = time.perf_counter()
    if p.wait() != 0 or not first:
        raise SystemExit(f"stream failed: {' '.join(cmd)}")
    return {"first_byte_s": t_first - start, "total_s": t_end - start,
            "steady_fps": (frames - 1) / (t_end - t_first), "overall_fps": frames / (t_end - start),
            "bytes": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--format", default="mpegts")
    ap.add_argument("--encoder", default="auto", help="auto | nvenc | nvjpeg | x264 | raw")
    ap.add_argument("--backend", default="auto")
    args = ap.parse_args()
    runs = []
    for i in range(args.repeats):
        r = one_run(args.frames, args.size, args.format, args.encoder, args.backend)
        print(f"run {i + 1}/{args.repeats}: first byte {r['first_byte_s']:.2f} s, "
              f"{r['steady_fps']:.1f} fps steady, {r['overall_fps']:.1f} fps overall",
              file=sys.stderr)
        runs.append(r)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    summary = {
        "command": f"t2v-rt stream '{PROMPT}' --no-realtime --frames {args.frames} "
                   f"--size {args.size} --format {args.format} --encoder {args.encoder} "
                   f"--backend {args.backend}",
        "frames": args.frames, "size": args.size, "format": args.format,
        "encoder": args.encoder, "backend": args.backend,
        "median": med, "runs": runs,
        "targets": {"steady_fps": 90, "first_byte_s": 3.0},
        "meets_targets": med["steady_fps"] >= 90 and med["first_byte_s"] <= 3.0,
        "real_time_factor_at_30fps": med["steady_fps"] / 30,
    }
    name = "stream_e2e" + ("" if args.encoder == "auto" else f"-{args.encoder}")
    path = write_result(name, summary)
    print(f"median: first byte {med['first_byte_s']:.2f} s, {med['steady_fps']:.1f} fps steady "
          f"({med['steady_fps'] / 30:.1f}x real time at 30 fps) -> {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
