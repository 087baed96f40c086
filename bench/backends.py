"""Frames/s of every backend that runs here, side by side in one run, per architecture.

    python bench/backends.py [--models bundled,mocogan,stylegan-v] [--batches 1,16]
                             [--repeats 5] [--seconds 2] [--skip NAME,...] [--budget-s S]

Models: ``bundled`` (the shipped shapes model) and any registered architecture by name, at its
default preset with random weights (``t2v-rt init-model ARCH``; seed 0): ``mocogan`` (64 x 64,
recurrent; its frames graph is what is timed, the GRU step runs once per frame elsewhere)
and ``stylegan-v`` (256 x 256, 512 -> 64 channels: the size where kernels matter).

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
from t2v_rt.generators.io import bundled_path, init_generator, load_generator, save_generator  # noqa: E402

TENSORRT_PROFILE = "1:64:256"


def frame_macs(g) -> int:
    """Multiply-adds of one frame of the synthesis: every convolution (plain, functional,
    transposed) and matrix product, counted by PyTorch's own FLOP counter (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = random_inputs(g.requires_grad_(False), 1, 1, 0)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        g.synthesize(x["w_frames"], x["features"])      # the frame only, not the style
    return counter.get_total_flops() // 2


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
    """Median frames/s of ``backend.frames(w, t)`` (``t``: the frames' features)."""
    cuda = backend.on_cuda
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


def tensorrt_backends(weights) -> tuple[dict, dict[str, str]]:
    """The tensorrt backend with fp16 and with fp32 engines (built now if missing), and why
    each that cannot run here was left out."""
    if not torch.cuda.is_available():
        return {}, {"tensorrt": probe("tensorrt", weights)[1]}
    from t2v_rt.compile.engine import Profile, build_engines

    backends, skipped = {}, {}
    for precision in ("fp16", "fp32"):
        name = f"tensorrt-{precision}"
        try:
            build_engines(weights, precision, Profile.parse(TENSORRT_PROFILE),
                          log=lambda msg: print(f"build-engine: {msg}", file=sys.stderr))
            be = create_backend("tensorrt", weights, precision=precision)
            if be.precision != precision:
                raise RuntimeUnavailable(f"got the {be.precision} engines, not {precision}")
        except (RuntimeUnavailable, CompileError) as e:
            skipped[name] = str(e)
            print(f"{name}: left out: {e}", file=sys.stderr)
            continue
        backends[name] = be
    return backends, skipped


def gpu_backends(weights, skipped: dict[str, str]) -> dict:
    """On a CUDA GPU: eager PyTorch under fp16 autocast, torch.compile max-autotune (fp16
    autocast; Inductor's Triton kernels and CUDA graphs), and the fused Triton backend in
    fp16, bf16 and fp32 (CUDA graphs)."""
    if not torch.cuda.is_available():
        skipped["triton"] = probe("triton", weights)[1]
        skipped["torch-compile"] = "a CUDA GPU only (the baseline of the GPU backends)"
        return {}
    from t2v_rt.backends.torch_backend import TorchBackend

    out = {"torch-fp16": TorchBackend(weights, precision="fp16"),
           "torch-compile-fp16": TorchBackend(weights, precision="fp16", compile=True)}
    for precision in ("fp16", "bf16", "fp32"):
        try:
            out[f"triton-{precision}"] = create_backend("triton", weights, precision=precision,
                                                        log=lambda msg: print(msg, file=sys.stderr))
        except (RuntimeUnavailable, CompileError) as e:
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


def model_weights(name: str, folder: Path) -> Path:
    """``bundled``, or an architecture's default preset with random weights (seed 0)."""
    if name == "bundled":
        return bundled_path()
    path = folder / f"{name}.safetensors"
    if not path.is_file():
        save_generator(init_generator(name, "default", seed=0), path)
    return path


def bench_model(name: str, weights: Path, batches: list[int], args, peak: float, gpu_ceil,
                leave_out: set[str], start: float) -> dict:
    """Every backend on one model, side by side: the model's record."""
    g = load_generator(weights)
    macs = frame_macs(g)
    cfg = g.config
    print(f"{name} ({cfg.ARCH}, {cfg.FORM}, {cfg.resolution}x{cfg.resolution}): "
          f"{macs / 1e6:.1f} M multiply-adds per frame", file=sys.stderr)
    backends = {"torch": create_backend("torch", weights),
                "onnxruntime-fp32": create_backend("onnxruntime", weights, precision="fp32",
                                                   log=lambda m: print(m, file=sys.stderr)),
                "onnxruntime-fp16": create_backend("onnxruntime", weights, precision="fp16",
                                                   log=lambda m: print(m, file=sys.stderr))}
    trt_backends, skipped = tensorrt_backends(weights)
    backends.update(trt_backends)
    backends.update(gpu_backends(weights, skipped))
    for b in leave_out & set(backends):
        backends.pop(b).close()
        skipped[b] = "left out by --skip"
    results, left_out = {}, []
    record = {"architecture": cfg.ARCH, "form": cfg.FORM, "resolution": cfg.resolution,
              "weights": "bundled" if name == "bundled" else f"init-model {cfg.ARCH} (default preset, seed 0)",
              "parameters": sum(p.numel() for p in g.parameters()), "frame_multiply_adds": macs,
              "backends": {b: be.describe() for b, be in backends.items()},
              "skipped": skipped, "batches": results}
    try:
        for n in batches:
            x = random_inputs(g, n, n, 1000 + n)      # real prompts, latents, times or steps
            w, feats = backends["torch"].style(x["tokens"], x["z"]), x["features"]
            row = results[str(n)] = {}         # filled as measured (kept if interrupted)
            for b, be in backends.items():
                if args.budget_s and time.perf_counter() - start > args.budget_s and b != "torch":
                    left_out.append(f"{name} batch {n} {b}")
                    continue
                f = fps(be, w.to(be.device), feats.to(be.device), args.seconds, args.repeats)
                row[b] = {"frames_per_s": f, "gflops": f * 2 * macs / 1e9,
                          "share_of_matmul_ceiling": f * 2 * macs / 1e9 / peak}
                if gpu_ceil and be.on_cuda:
                    row[b]["share_of_roofline"] = f / roofline_fps(macs, cfg.resolution, gpu_ceil)
            for b, r in row.items():
                r["vs_torch"] = r["frames_per_s"] / row["torch"]["frames_per_s"]
                print(f"{name:10s} batch {n:4d} {b:18s} {r['frames_per_s']:8.1f} frames/s "
                      f"{r['vs_torch']:5.2f}x torch, {r['gflops']:6.1f} GFLOP/s "
                      f"({100 * r['share_of_matmul_ceiling']:.0f} % of the matmul ceiling)",
                      file=sys.stderr)
    finally:
        if left_out:
            record["left_out"] = left_out
        for be in backends.values():
            be.close()
    return record


def main() -> int:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="bundled,mocogan,stylegan-v",
                    help="bundled and/or architecture names (default all three)")
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
    peak = matmul_gflops()
    print(f"fp32 matmul ceiling {peak:.1f} GFLOP/s", file=sys.stderr)
    gpu_ceil = gpu_ceilings() if torch.cuda.is_available() else None
    models, interrupted = {}, False
    folder = Path(tempfile.mkdtemp(prefix="t2v-rt-bench-models-"))
    try:
        for name in args.models.split(","):
            models[name] = bench_model(name, model_weights(name, folder), batches, args, peak,
                                       gpu_ceil, leave_out, start)
    except KeyboardInterrupt:      # Ctrl-C, or the GPU kit's time box: keep what was measured
        interrupted = True
        print("interrupted: writing the models and batches measured so far", file=sys.stderr)
    first = next(iter(models.values()), {"batches": {}, "skipped": {}})
    path = write_result("backends", {
        "command": "python bench/backends.py " + " ".join(sys.argv[1:]),
        "threads": torch.get_num_threads(), "matmul_ceiling_gflops": peak,
        "gpu_ceilings": gpu_ceil, "repeats": args.repeats, "seconds_per_run": args.seconds,
        "models": models,
        # the first model's rows at the top level too (the GPU kit's summary reads them)
        "batches": first["batches"], "skipped": first["skipped"],
        **({"budget_s": args.budget_s,
            "left_out": [x for m in models.values() for x in m.get("left_out", [])]}
           if args.budget_s else {}),
        **({"interrupted": True} if interrupted else {}),
    })
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
