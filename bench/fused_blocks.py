"""The fused block kernel against cuDNN and torch.compile, block by block, on a CUDA GPU.

    python bench/fused_blocks.py [--dtypes fp16,bf16] [--batch 64] [--models bundled,wide128,wide256]
                            [--no-compile] [--compile-mode MODE] [--rep-ms 200] [--budget-s S]

For every upsample -> conv -> epilogue -> activation block of the bundled model (its shapes; the
weights and inputs are random, as timings do not depend on them) and of two larger
configurations (128 x 128 and 256 x 256 outputs, wider channels; random weights, labelled as
such): the same op four ways, side by side in one run:

- ``fused``: ``t2v_rt.kernels.upsample_conv_act`` (autotuned; tuning excluded from timings);
- ``cudnn``: PyTorch eager, NCHW: interpolate, conv2d (cuDNN), the coordinate 1 x 1 conv,
  scale/shift, leaky ReLU (the model's ``UpConvAct`` formulation);
- ``cudnn_cl``: the same in channels-last;
- ``compiled``: ``torch.compile(mode="max-autotune-no-cudagraphs")`` of the same function
  (the CUDA graph comes from the timer, as for the others; ``--compile-mode`` picks another).

Each is timed with ``triton.testing.do_bench_cudagraph`` (the op replayed in a CUDA graph:
GPU time without launch gaps; median). Reported: ms, achieved TFLOP/s counted two ways (the
unfused formulation's useful FLOPs, 9 taps; the 4 taps the sub-pixel split executes), GB/s of
the minimal traffic (x, weights, output once), the speedups of ``fused`` over each baseline,
and its share of the roofline bound (the larger of compute and memory time at this GPU's
ceilings, measured in the same run: a large matmul in the dtype and a 1 GiB device copy).
Writes bench/results/fused_blocks-gpu.json with the environment. Needs a CUDA GPU; the kernels'
correctness is checked on any machine by tests/test_kernels.py.

To fit a time box (the GPU kit, bench/gpu/): ``--rep-ms`` shortens each timing, and
``--budget-s`` stops starting blocks once a dtype's share of the budget is spent (budget /
dtypes, what one leaves unused passing on to the next); the blocks left out are listed in the
result under ``left_out``. Ctrl-C (the kit's signal at its time box) writes the blocks measured
so far.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import kernels_from_source, write_result

MODELS = {
    # name: (channels, base size, label)
    "bundled": ((128, 128, 64, 32, 16), 4, "bundled model's block shapes (t2v_rt/weights/default.json)"),
    "wide128": ((512, 512, 256, 128, 64, 32), 4, "larger configuration, 128 x 128 output, random weights"),
    "wide256": ((512, 512, 256, 256, 128, 64, 32), 4, "larger configuration, 256 x 256 output, random weights"),
}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def blocks(channels: tuple[int, ...], base: int):
    """(C, K, H) of each block: input C x H x H -> output K x 2H x 2H."""
    size = base
    for c, k in itertools.pairwise(channels):
        yield c, k, size
        size *= 2


def unfused(x, weight, bias, scale, shift, coord_weight, pose):
    """The model's formulation (``UpConvAct.forward``), in the inputs' dtype."""
    from t2v_rt.kernels import coordinate_grid

    up = F.interpolate(x, scale_factor=2.0, mode="nearest")
    y = F.conv2d(up, weight, bias, padding=1)
    grid = coordinate_grid(pose, *y.shape[-2:]).to(x.dtype)
    y = y + F.conv2d(grid, coord_weight[:, :, None, None])
    return F.leaky_relu(y * scale[:, :, None, None] + shift[:, :, None, None], 0.2)


def ceilings(dtype: torch.dtype) -> dict:
    """This GPU's measured ceilings: dense matmul TFLOP/s in ``dtype``, device-copy GB/s."""
    from triton.testing import do_bench

    a = torch.randn(8192, 8192, device="cuda", dtype=dtype)
    b = torch.randn(8192, 8192, device="cuda", dtype=dtype)
    ms = do_bench(lambda: a @ b, warmup=100, rep=500)
    src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms_copy = do_bench(lambda: dst.copy_(src), warmup=50, rep=300)
    return {"matmul_tflops": 2 * 8192**3 / ms / 1e9, "copy_gbs": 2 * 2**30 / ms_copy / 1e6}


def time_ms(fn, rep: int = 200) -> tuple[float, str]:
    from triton.testing import do_bench, do_bench_cudagraph

    fn()
    torch.cuda.synchronize()
    try:
        return do_bench_cudagraph(fn, rep=rep), "cuda graph"
    except RuntimeError:           # an op that cannot be captured: events around launches
        return do_bench(fn, warmup=25, rep=rep), "events"


def bench_block(c, k, h, n, dtype, compile_baseline: bool, ceil: dict,
                compile_mode: str = "max-autotune-no-cudagraphs", rep: int = 200) -> dict:
    from t2v_rt.kernels import subpixel_weights, upsample_conv_act
    from t2v_rt.kernels.upsample_conv_act import flops

    dev = "cuda"
    x = torch.randn(n, c, h, h, device=dev, dtype=dtype)
    weight = (torch.randn(k, c, 3, 3, device=dev) / (3 * c**0.5)).to(dtype)
    bias = torch.randn(k, device=dev, dtype=dtype)
    scale = (1 + 0.3 * torch.randn(n, k, device=dev)).to(dtype)
    shift = (0.3 * torch.randn(n, k, device=dev)).to(dtype)
    coord_weight = torch.randn(k, 5, device=dev, dtype=dtype)
    pose = torch.rand(n, 2, device=dev) * 2 - 1
    packed = subpixel_weights(weight)
    out = torch.empty(n, k, 2 * h, 2 * h, device=dev, dtype=dtype)
    args = (x, weight, bias, scale, shift, coord_weight, pose)

    variants = {
        "fused": lambda: upsample_conv_act(x, weight, bias, "leaky_relu", 0.2, scale, shift,
                                           coord_weight, pose, packed=packed, out=out),
        "cudnn": lambda: unfused(*args),
    }
    x_cl = x.contiguous(memory_format=torch.channels_last)
    w_cl = weight.contiguous(memory_format=torch.channels_last)
    variants["cudnn_cl"] = lambda: unfused(x_cl, w_cl, *args[2:])
    if compile_baseline:
        compiled = torch.compile(unfused, mode=compile_mode, dynamic=False)
        variants["compiled"] = lambda: compiled(*args)

    want = unfused(*args).float()
    got = variants["fused"]().float()
    err = ((got - want).abs().max() / want.abs().max().clamp(min=1e-6)).item()

    f = flops(n, c, h, h, k)
    item = dtype.itemsize
    traffic = item * (x.numel() + packed.numel() + out.numel())
    row = {"C": c, "K": k, "H": h, "out": 2 * h, "batch": n, "max_rel_err_vs_cudnn": err,
           "flops_useful": f["useful"], "flops_executed": f["executed"], "min_bytes": traffic}
    for name, fn in variants.items():
        ms, how = time_ms(fn, rep)
        row[name] = {"ms": ms, "timer": how, "tflops_useful": f["useful"] / ms / 1e9,
                     "tflops_executed": f["executed"] / ms / 1e9, "gbs": traffic / ms / 1e6}
    fused = row["fused"]["ms"]
    for name in variants:
        if name != "fused":
            row[f"speedup_vs_{name}"] = row[name]["ms"] / fused
    bound_ms = max(f["executed"] / ceil["matmul_tflops"] / 1e9, traffic / ceil["copy_gbs"] / 1e6)
    row["roofline_bound_ms"] = bound_ms
    row["fused_share_of_roofline"] = bound_ms / fused
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtypes", default="fp16,bf16")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    ap.add_argument("--compile-mode", default="max-autotune-no-cudagraphs",
                    help="torch.compile mode of the baseline (default max-autotune-no-cudagraphs)")
    ap.add_argument("--rep-ms", type=int, default=200, help="milliseconds of each timing")
    ap.add_argument("--budget-s", type=float, default=0,
                    help="stop starting blocks once a dtype's share of this is spent (0: no limit)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/fused_blocks.py: needs a CUDA GPU (the kernels' correctness on this machine: "
              "python -m pytest tests/test_kernels.py)", file=sys.stderr)
        return 2
    kernels_from_source()
    results = {"batch": args.batch, "timer": "triton.testing.do_bench_cudagraph, median",
               "rep_ms": args.rep_ms,
               "compile_mode": None if args.no_compile else args.compile_mode,
               "ceilings": {}, "rows": []}
    dtypes, start = args.dtypes.split(","), time.monotonic()
    if args.budget_s:
        results.update(budget_s=args.budget_s, left_out=[])
    try:
        for di, dname in enumerate(dtypes):
            dtype = DTYPES[dname]
            # cumulative shares: time a dtype leaves unused passes on to the next
            until = start + args.budget_s * (di + 1) / len(dtypes) if args.budget_s else None
            ceil = results["ceilings"][dname] = ceilings(dtype)
            print(f"{dname}: ceilings {ceil['matmul_tflops']:.0f} TFLOP/s, {ceil['copy_gbs']:.0f} GB/s",
                  file=sys.stderr)
            for mname in args.models.split(","):
                channels, base, label = MODELS[mname]
                for c, k, h in blocks(channels, base):
                    if until is not None and time.monotonic() > until:
                        results["left_out"].append(f"{dname} {mname} {c}->{k} {h}->{2 * h}")
                        continue
                    row = bench_block(c, k, h, args.batch, dtype, not args.no_compile, ceil,
                                      args.compile_mode, args.rep_ms)
                    row.update(model=mname, label=label, dtype=dname)
                    results["rows"].append(row)
                    ratios = ", ".join(f"{key[11:]} {v:.2f}x" for key, v in row.items()
                                       if key.startswith("speedup_vs_"))
                    print(f"{dname} {mname} {c}->{k} {h}->{2 * h}: fused {row['fused']['ms'] * 1e3:.1f} us "
                          f"({row['fused']['tflops_useful']:.1f} useful TFLOP/s, "
                          f"{row['fused_share_of_roofline']:.0%} of roofline); {ratios}", file=sys.stderr)
    except KeyboardInterrupt:      # Ctrl-C, or the GPU kit's time box: keep what was measured
        results["interrupted"] = True
        print("interrupted: writing the blocks measured so far", file=sys.stderr)
    path = write_result("fused_blocks", results)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
