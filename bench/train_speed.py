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

    python bench/train_speed.py --arch stylegan-v --arch mocogan [--size 64] [--batch 8]

times the generic adversarial trainer instead (``t2v_rt.training.trainer.AdversarialTrainer``,
``t2v-rt train --data DIR --arch ARCH``) at its default settings (``--size``, ``--batch``,
``--preset`` override them), per architecture, on a shapes-world dataset rendered into a
temporary folder: a step is the generator update, both discriminators' update (R1 every 4th
step) and the EMA. A sample is one clip of ``clip_frames`` frames. Also reports how many
steps the default run gets through in an hour. Writes
bench/results/train_speed_generic-{cpu,gpu}.json.
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


def generic(args) -> int:
    """clips/s of the generic adversarial trainer, per architecture (see the docstring)."""
    import tempfile

    from t2v_rt.data import open_training_set
    from t2v_rt.models.shapes.dataset_folder import render_shapes
    from t2v_rt.training.trainer import (
        DEFAULT_STEPS, AdversarialConfig, AdversarialTrainer, apply_model_settings)

    def config(**kw) -> AdversarialConfig:
        cfg = AdversarialConfig(**kw)
        apply_model_settings(cfg, args.set)      # as `t2v-rt train --set KEY=VALUE`
        return cfg

    base = config()
    size = args.size or base.size
    batch = args.batch or base.batch_size
    results = {}
    with tempfile.TemporaryDirectory(prefix="t2v-rt-bench-train-") as tmp:
        t0 = time.perf_counter()
        render_shapes(Path(tmp) / "shapes", 64, seed=0, size=size, seconds=base.frames / 15)
        # (with --set, the recipe's own frames, clip_frames, strides and losses are timed)
        ts = open_training_set(Path(tmp) / "shapes", frames=base.frames, size=size,
                               cache_dir=Path(tmp) / "cache")
        print(f"dataset: {len(ts)} clips x {ts.frames} frames, {size}x{size} "
              f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
        more = [int(b) for b in args.more_batches.split(",") if b.strip()]
        by_batch: dict[str, dict] = {}
        for b in [batch, *more]:
            rows = results if b == batch else by_batch.setdefault(str(b), {})
            for arch in args.arch:
                cfg = config(data=str(Path(tmp) / "shapes"), arch=arch, size=size,
                             threads=args.threads, preset=args.preset or base.preset)
                cfg.batch_size = b          # the batch timed, whatever --set said
                tr = AdversarialTrainer.create(cfg, data=ts)
                s = time_steps(tr.step, 0, args.steps, args.repeats, tr.device)
                n_g = sum(p.numel() for p in tr.G.parameters())
                rows[arch] = {"s_per_step": s, "steps_per_s": 1 / s, "clips_per_s": b / s,
                              "frames_per_s": b * cfg.clip_frames / s,
                              "generator_params": n_g, "channels": tr.config.channels,
                              "steps_per_hour": 3600 / s,
                              "default_run_minutes": DEFAULT_STEPS * s / 60}
                print(f"{arch:>12} batch {b:4d}: {1e3 * s:8.1f} ms/step  {b / s:7.1f} clips/s  "
                      f"{DEFAULT_STEPS} steps in {DEFAULT_STEPS * s / 60:5.1f} min "
                      f"({n_g / 1e6:.2f}M params)", file=sys.stderr)
    path = write_result(args.name, {
        "command": "python bench/train_speed.py " + " ".join(sys.argv[1:]),
        "threads": torch.get_num_threads(), "batch_clips": batch,
        **({"settings": args.set} if args.set else {}),
        "clip_frames": base.clip_frames, "resolution": size, "preset": args.preset or base.preset,
        "precision": "bf16 autocast" if torch.cuda.is_available() else "fp32",
        "default_steps": DEFAULT_STEPS, "steps": args.steps, "repeats": args.repeats,
        "results": results,
        **({"more_batches": by_batch} if by_batch else {}),
    })
    print(f"wrote {path}", file=sys.stderr)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--batch", type=int, default=None,
                    help="clips per step (default 16; with --arch the trainer's default)")
    ap.add_argument("--arch", action="append", default=[],
                    help="time the generic trainer for this architecture (repeatable)")
    ap.add_argument("--size", type=int, default=None, help="with --arch: resolution")
    ap.add_argument("--preset", default=None, help="with --arch: the architecture's preset")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="with --arch: a training setting or architecture field, as `t2v-rt train "
                         "--set` (repeatable; e.g. a model card's recipe)")
    ap.add_argument("--name", default="train_speed_generic",
                    help="with --arch: the result's name (bench/results/NAME-{cpu,gpu}.json)")
    ap.add_argument("--more-batches", default="", metavar="B,B",
                    help="with --arch: also time these batch sizes (under 'more_batches')")
    args = ap.parse_args()
    if args.arch:
        if args.threads:
            torch.set_num_threads(args.threads)
        return generic(args)
    args.batch = args.batch or 16

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
