"""Frames/s of every backend that runs here, side by side in one run, on the bundled model.

    python bench/backends.py [--batches 1,16] [--repeats 5] [--seconds 2] [--skip NAME,...]
                             [--budget-s S]

For each frame batch: eager PyTorch (the baseline), ONNX Runtime fp32 and fp16, and on a CUDA
GPU also eager PyTorch under fp16 autocast, torch.compile max-autotune (fp16), the fused Triton
backend (fp16, bf16, fp32; CUDA graphs) and the TensorRT engines fp16 and fp32 (built first if
missing, batch profile 1:64:256); default batches there 1,8,64,256. Each is timed on the same fresh random prompts, seeds and frame times;
median frames/s over ``--repeats`` runs of about ``--seconds`` each (GPU: synchronised at both
ends of a run). A backend that cannot run is left out with its reason in the result. Also
measures this machine's compute ceiling (a large fp32 matmul in PyTorch, same threads) and
reports each backend's achieved GFLOP/s (2 x the frame's multiply-adds, counted from the
model) as a share of it; on a GPU also each GPU backend's share of the roofline bound (the
frame's FLOPs at the fp16 matmul ceiling, or its output written once at the copy bandwidth,
whichever is slower; both ceilings measured in the same run). Runs from a source checkout
too (``PYTHONPATH=.``, as on a lent GPU machine). Writes bench/results/backends-{cpu,gpu}.json with the environment.

To fit a time box (the GPU kit, bench/gpu/): ``--skip`` leaves backends out by name (recorded
under ``skipped``), and ``--budget-s`` stops starting measurements once that many seconds have
passed since the start (the (batch, backend) pairs not measured are listed under ``left_out``;
``torch``, the baseline of the ratios, is always measured). Ctrl-C (the kit's signal at its time box)
writes the batches measured so far.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import kernels_from_source, write_result  # noqa: E402

from t2v_rt.backends import create_backend, probe  # noqa: E402
from t2v_rt.compile.export import random_inputs  # noqa: E402
from t2v_rt.errors import CompileError, RuntimeUnavailable  # noqa: E402
from t2v_rt.generators.io import bundled_path, load_generator  # noqa: E402

TENSORRT_PROFILE = "1:64:256"


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
    cuda = backend.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    backend.frames(w, t)                               # warm-up (and CUDA graph capture)
    runs = []
    for _ in range(repeats):
        sync()
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            backend.frames(w, t)
            count += 1
            if cuda and count % 16 == 0:
                sync()                                 # keep the queue from running far ahead
        sync()
        runs.append(count * len(t) / (time.perf_counter() - t0))
    return statistics.median(runs)


def tensorrt_backends() -> tuple[dict, dict[str, str]]:
    """The tensorrt backend with fp16 and with fp32 engines (built now if missing), and why
    each that cannot run here was left out."""
    if not torch.cuda.is_available():
        return {}, {"tensorrt": probe("tensorrt")[1]}
    from t2v_rt.compile.engine import Profile, build_engines

    backends, skipped = {}, {}
    for precision in ("fp16", "fp32"):
        name = f"tensorrt-{precision}"
        try:
            build_engines(bundled_path(), precision, Profile.parse(TENSORRT_PROFILE),
                          log=lambda msg: print(f"build-engine: {msg}", file=sys.stderr))
            be = create_backend("tensorrt", precision=precision)
            if be.precision != precision:
                raise RuntimeUnavailable(f"got the {be.precision} engines, not {precision}")
        except (RuntimeUnavailable, CompileError) as e:
            skipped[name] = str(e)
            print(f"{name}: left out: {e}", file=sys.stderr)
            continue
        backends[name] = be
    return backends, skipped


def gpu_backends(skipped: dict[str, str]) -> dict:
    """On a CUDA GPU: eager PyTorch under fp16 autocast, torch.compile max-autotune (fp16
    autocast; Inductor's Triton kernels and CUDA graphs), and the fused Triton backend in
    fp16, bf16 and fp32 (CUDA graphs)."""
    if not torch.cuda.is_available():
        skipped["triton"] = probe("triton")[1]
        skipped["torch-compile"] = "a CUDA GPU only (the baseline of the GPU backends)"
        return {}
    from t2v_rt.backends.torch_backend import TorchBackend

    out = {"torch-fp16": TorchBackend(precision="fp16"),
           "torch-compile-fp16": TorchBackend(precision="fp16", compile=True)}
    for precision in ("fp16", "bf16", "fp32"):
        try:
            out[f"triton-{precision}"] = create_backend("triton", precision=precision,
                                                        log=lambda msg: print(msg, file=sys.stderr))
        except RuntimeUnavailable as e:
            skipped[f"triton-{precision}"] = str(e)
    return out


def gpu_ceilings() -> dict:
    """This GPU's fp16 dense-matmul TFLOP/s and device-copy GB/s, measured now."""
    from fused_blocks import ceilings

    return ceilings(torch.float16)


def roofline_fps(macs: int, resolution: int, ceil: dict) -> float:
    """Frames/s at the roofline bound: the larger of the frame's compute time at the fp16
    matmul ceiling and its minimal memory traffic (the float32 frame written once) at the
    copy bandwidth."""
    compute = 2 * macs / (ceil["matmul_tflops"] * 1e12)
    memory = 3 * resolution * resolution * 4 / (ceil["copy_gbs"] * 1e9)
    return 1 / max(compute, memory)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default=None,
                    help="frame batches (default 1,16; on a CUDA GPU 1,8,64,256)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0, help="per timed run")
    ap.add_argument("--skip", default="",
                    help="backends to leave out, by name (e.g. torch-compile-fp16)")
    ap.add_argument("--budget-s", type=float, default=0,
                    help="stop starting measurements after this many seconds (0: no limit)")
    args = ap.parse_args()
    start = time.perf_counter()
    leave_out = {name for name in args.skip.split(",") if name}
    kernels_from_source()
    default = "1,8,64,256" if torch.cuda.is_available() else "1,16"
    batches = [int(b) for b in (args.batches or default).split(",")]

    g = load_generator()
    macs = frame_macs(g)
    peak = matmul_gflops()
    print(f"frame: {macs / 1e6:.1f} M multiply-adds; fp32 matmul ceiling {peak:.1f} GFLOP/s",
          file=sys.stderr)
    backends = {"torch": create_backend("torch"),
                "onnxruntime-fp32": create_backend("onnxruntime", precision="fp32"),
                "onnxruntime-fp16": create_backend("onnxruntime", precision="fp16")}
    trt_backends, skipped = tensorrt_backends()
    backends.update(trt_backends)
    backends.update(gpu_backends(skipped))
    for name in leave_out & set(backends):
        backends.pop(name).close()
        skipped[name] = "left out by --skip"
    gpu_ceil = gpu_ceilings() if torch.cuda.is_available() else None
    results, left_out = {}, []
    interrupted = False
    try:
        for n in batches:
            tokens, z, _ = random_inputs(g, n, n, 1000 + n)
            w = backends["torch"].style(tokens, z)
            t = torch.rand(n, dtype=torch.float64) * 600
            row = results[str(n)] = {}         # filled as measured (kept if interrupted)
            for name, be in backends.items():
                if args.budget_s and time.perf_counter() - start > args.budget_s and name != "torch":
                    left_out.append(f"batch {n} {name}")
                    continue
                f = fps(be, w.to(be.device), t, args.seconds, args.repeats)
                row[name] = {"frames_per_s": f, "gflops": f * 2 * macs / 1e9,
                             "share_of_matmul_ceiling": f * 2 * macs / 1e9 / peak}
                if gpu_ceil and be.device.type == "cuda":
                    row[name]["share_of_roofline"] = f / roofline_fps(macs, g.cfg.resolution, gpu_ceil)
            for name, r in row.items():
                r["vs_torch"] = r["frames_per_s"] / row["torch"]["frames_per_s"]
                print(f"batch {n:4d} {name:18s} {r['frames_per_s']:8.1f} frames/s "
                      f"{r['vs_torch']:5.2f}x torch, {r['gflops']:5.1f} GFLOP/s "
                      f"({100 * r['share_of_matmul_ceiling']:.0f} % of the matmul ceiling)",
                      file=sys.stderr)
    except KeyboardInterrupt:      # Ctrl-C, or the GPU kit's time box: keep what was measured
        interrupted = True
        print("interrupted: writing the batches measured so far", file=sys.stderr)
    path = write_result("backends", {
        "command": "python bench/backends.py " + " ".join(sys.argv[1:]),
        "threads": torch.get_num_threads(), "frame_multiply_adds": macs,
        "matmul_ceiling_gflops": peak, "gpu_ceilings": gpu_ceil, "repeats": args.repeats, "seconds_per_run": args.seconds,
        "backends": {name: be.describe() for name, be in backends.items()},
        "skipped": skipped, "batches": results,
        **({"budget_s": args.budget_s, "left_out": left_out} if args.budget_s else {}),
        **({"interrupted": True} if interrupted else {}),
    })
    for be in backends.values():
        be.close()
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
