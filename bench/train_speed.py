"""Training throughput: samples/s of the real training step (``t2v_rt.models.shapes.train.Trainer.step``).

    python bench/train_speed.py [--steps 20] [--threads 0] [--batch 16]

Times three things, each after warm-up steps, median over ``--repeats`` runs of ``--steps``:
- ``data``: rendering one batch of captioned clips (the CPU side of every step);
- ``reconstruction``: a step of the schedule's first phase (generator, paired squared error
  and pose target; no discriminators);
- ``adversarial``: a step of the last phase (generator with both discriminators' losses,
  discriminator update, R1 every 4th step, EMA).
A sample is one clip of ``frames_per_clip`` frames. On CUDA the step runs in bf16 autocast,
as training does. Writes bench/results/train_speed-{cpu,gpu}.json with the environment.
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

from t2v_rt.models.shapes.train import TrainConfig, Trainer  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(fn, first: int, steps: int, repeats: int, device: torch.device) -> float:
    """Median seconds per call of fn(step) over ``repeats`` runs of ``steps`` calls."""
    for i in range(3):  # warm-up: allocator, autotuning, lazy inits
        fn(first + i)
    _sync(device)
    per_step = []
    for r in range(repeats):
        t0 = time.perf_counter()
        for i in range(steps):
            fn(first + 3 + r * steps + i)
        _sync(device)
        per_step.append((time.perf_counter() - t0) / steps)
    return statistics.median(per_step)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--batch", type=int, default=16, help="clips per step (default 16)")
    args = ap.parse_args()

    cfg = TrainConfig(batch_size=args.batch, threads=args.threads, adv_start=10_000,
                      adv_ramp=500)
    tr = Trainer.create(cfg)
    clips, frames = cfg.batch_size, cfg.batch_size * cfg.frames_per_clip
    late = cfg.adv_start + cfg.adv_ramp   # full adversarial weight
    print(f"device {tr.device}, {torch.get_num_threads()} threads, batch {clips} clips x "
          f"{cfg.frames_per_clip} frames", file=sys.stderr)
    results = {}
    for name, fn, first in (("data", lambda i: tr.data.batch(i, clips), 0),
                            ("reconstruction", tr.step, 0),
                            ("adversarial", tr.step, late)):
        s = time_steps(fn, first, args.steps, args.repeats, tr.device)
        results[name] = {"s_per_step": s, "steps_per_s": 1 / s, "clips_per_s": clips / s,
                         "frames_per_s": frames / s}
        print(f"{name:>15}: {1e3 * s:8.1f} ms/step  {clips / s:8.1f} clips/s  "
              f"{frames / s:8.1f} frames/s", file=sys.stderr)
    path = write_result("train_speed", {
        "command": "python bench/train_speed.py " + " ".join(sys.argv[1:]),
        "threads": torch.get_num_threads(), "batch_clips": clips,
        "frames_per_clip": cfg.frames_per_clip, "resolution": cfg.model.resolution,
        "precision": "bf16 autocast" if tr.device.type == "cuda" else "fp32",
        "steps": args.steps, "repeats": args.repeats, "results": results,
    })
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
