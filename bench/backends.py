"""Frames/s of every backend that runs here, side by side in one run, on the bundled model.

    python bench/backends.py [--batches 1,16] [--repeats 5] [--seconds 2]

For each frame batch: eager PyTorch (the baseline), ONNX Runtime fp32 and fp16, each timed
on the same fresh random prompts, seeds and frame times; median frames/s over ``--repeats``
runs of about ``--seconds`` each. Also measures this machine's compute ceiling (a large fp32
matmul in PyTorch, same threads) and reports each backend's achieved GFLOP/s (2 x the
frame's multiply-adds, counted from the model) as a share of it. Writes
bench/results/backends-{cpu,gpu}.json with the environment.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

from t2v_rt.backends import create_backend  # noqa: E402
from t2v_rt.compile.export import random_inputs  # noqa: E402
from t2v_rt.model.io import load_generator  # noqa: E402


def frame_macs(g) -> int:
    """Multiply-adds of one frame of the synthesis (convolutions and linear layers)."""
    macs = 0

    def conv_hook(m, inp, out):
        nonlocal macs
        macs += out.numel() // out.shape[0] * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inp, out):
        nonlocal macs
        macs += out.numel() // out.shape[0] * m.in_features

    hooks = [m.register_forward_hook(conv_hook) for m in g.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks += [m.register_forward_hook(linear_hook) for m in g.modules()
              if isinstance(m, torch.nn.Linear)]
    tokens, z, basis = random_inputs(g, 1, 1, 0)
    with torch.no_grad():
        w = g.style(g.encode_text(tokens), z)
        macs = 0                                   # count the frame only, not the style
        g.synthesize_basis(w, basis)
    for h in hooks:
        h.remove()
    return macs


def matmul_gflops(seconds: float = 2.0, n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    runs = []
    for _ in range(3):
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            torch.mm(a, b)
            count += 1
        runs.append(2 * n**3 * count / (time.perf_counter() - t0) / 1e9)
    return max(runs)


def fps(backend, w: torch.Tensor, t: torch.Tensor, seconds: float, repeats: int) -> float:
    backend.frames(w, t)                               # warm-up
    runs = []
    for _ in range(repeats):
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            backend.frames(w, t)
            count += 1
        runs.append(count * len(t) / (time.perf_counter() - t0))
    return statistics.median(runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0, help="per timed run")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    g = load_generator()
    macs = frame_macs(g)
    peak = matmul_gflops()
    print(f"frame: {macs / 1e6:.1f} M multiply-adds; fp32 matmul ceiling {peak:.1f} GFLOP/s",
          file=sys.stderr)
    backends = {"torch": create_backend("torch"),
                "onnxruntime-fp32": create_backend("onnxruntime", precision="fp32"),
                "onnxruntime-fp16": create_backend("onnxruntime", precision="fp16")}
    results = {}
    for n in batches:
        tokens, z, _ = random_inputs(g, n, n, 1000 + n)
        w = backends["torch"].style(tokens, z)
        t = torch.rand(n, dtype=torch.float64) * 600
        row = {}
        for name, be in backends.items():
            f = fps(be, w.to(be.device), t, args.seconds, args.repeats)
            row[name] = {"frames_per_s": f, "gflops": f * 2 * macs / 1e9,
                         "share_of_matmul_ceiling": f * 2 * macs / 1e9 / peak}
        for name, r in row.items():
            r["vs_torch"] = r["frames_per_s"] / row["torch"]["frames_per_s"]
            print(f"batch {n:4d} {name:18s} {r['frames_per_s']:8.1f} frames/s "
                  f"{r['vs_torch']:5.2f}x torch, {r['gflops']:5.1f} GFLOP/s "
                  f"({100 * r['share_of_matmul_ceiling']:.0f} % of the matmul ceiling)",
                  file=sys.stderr)
        results[str(n)] = row
    path = write_result("backends", {
        "command": "python bench/backends.py " + " ".join(sys.argv[1:]),
        "threads": torch.get_num_threads(), "frame_multiply_adds": macs,
        "matmul_ceiling_gflops": peak, "repeats": args.repeats, "seconds_per_run": args.seconds,
        "batches": results,
    })
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
