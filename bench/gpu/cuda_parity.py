"""The torch backend on CUDA against the same backend on the CPU (fp32, the reference), for the
bundled models that need no extra package (``default``, ``stylegan-v-shapes``): the frames of
three prompts at fresh random seeds and times, in fp32, fp16 and bf16 autocast, by
``|out - ref| / |ref|`` and the share of display pixels (uint8) more than 2 levels apart.

    python bench/gpu/cuda_parity.py                  # on a GPU -> cuda_parity-gpu.json
    python bench/gpu/cuda_parity.py --device cpu     # the rehearsal here: the CPU against itself

Tolerances (relative error of the [-1, 1] frames): fp32 5e-3 (cuDNN may run float32
convolutions in TF32, about 3e-4 per product), fp16 2e-2, bf16 5e-2. Exit 1 if one is over.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import write_result  # noqa: E402

from t2v_rt.backends.base import as_numpy, to_display  # noqa: E402
from t2v_rt.backends.torch_backend import TorchBackend  # noqa: E402
from t2v_rt.generators.io import model_path  # noqa: E402
from t2v_rt.pipeline import Video  # noqa: E402

MODELS = ["default", "stylegan-v-shapes"]
PROMPTS = ["a large red circle moving left and right slowly",
           "a small blue square bouncing up and down quickly",
           "a green triangle circling on a white background"]
TOL = {"fp32": 5e-3, "fp16": 2e-2, "bf16": 5e-2}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--frames", type=int, default=32)
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("cuda_parity: no CUDA device visible to torch (--device cpu rehearses it)",
              file=sys.stderr)
        return 2
    entropy = np.random.SeedSequence().entropy
    rng = np.random.default_rng(entropy)
    rows, bad = [], []
    for model in MODELS:
        path = model_path(model)
        ref = TorchBackend(path, device="cpu")
        for precision in ("fp32", "fp16", "bf16"):
            be = TorchBackend(path, device=args.device, precision=precision)
            errs, pix = [], []
            for prompt in PROMPTS:
                seed = int(rng.integers(0, 2**31))
                t = float(rng.uniform(0, 600)) + np.arange(args.frames) / 30.0
                a = as_numpy(Video(ref, prompt, seed).frames_at(t)).astype(np.float64)
                b = as_numpy(Video(be, prompt, seed).frames_at(t)).astype(np.float64)
                assert np.isfinite(b).all(), (model, precision, prompt)
                errs.append(float(np.linalg.norm(b - a) / np.linalg.norm(a)))
                da, db = to_display(a.astype(np.float32)), to_display(b.astype(np.float32))
                pix.append(float(np.mean(np.abs(da.astype(int) - db.astype(int)) > 2)))
            row = {"model": model, "device": str(be.device), "precision": precision,
                   "rel_error_max": max(errs), "pixels_off_by_more_than_2": max(pix),
                   "tolerance": TOL[precision], "describe": be.describe()}
            row["ok"] = row["rel_error_max"] <= TOL[precision]
            rows.append(row)
            if not row["ok"]:
                bad.append(f"{model} {precision}")
            print(f"{model:>18} {precision}: rel error {row['rel_error_max']:.2e} "
                  f"(tolerance {TOL[precision]:.0e}), display pixels > 2 levels off "
                  f"{row['pixels_off_by_more_than_2']:.2%}", file=sys.stderr)
            be.close()
    path = write_result("cuda_parity", {
        "command": "python bench/gpu/cuda_parity.py " + " ".join(argv or sys.argv[1:]),
        "reference": "torch backend, CPU, fp32", "seed_entropy": str(entropy),
        "frames_per_prompt": args.frames, "prompts": PROMPTS,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "rows": rows})
    print(f"wrote {path}" + (f"; OVER TOLERANCE: {', '.join(bad)}" if bad else ""), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
