"""The spread that test_training.py's data-gap check is sized to: for each seed, the 120-step
run of ``test_a_short_run_lowers_both_losses`` (the same data, settings and narrow
discriminators), its data gap at the end over its gap at the start; then the mean and
standard deviation over the seeds. Not collected by pytest; about 3 s a run on one thread.

    python tests/data_gap_seeds.py [--arch stylegan-v] [--seeds 25] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_training as T  # noqa: E402

from t2v_rt.data import open_training_set  # noqa: E402
from t2v_rt.models.shapes.dataset_folder import render_shapes  # noqa: E402
from t2v_rt.training.trainer import train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="stylegan-v", choices=T.ARCHS)
    ap.add_argument("--seeds", type=int, default=25, help="seeds 0 to N - 1")
    ap.add_argument("--threads", type=int, default=1, help="the runs' threads (the test: 1)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        render_shapes(root / "shapes", T.CLIPS, seed=0, size=T.SIZE, seconds=T.FRAMES / 15,
                      captions_per_clip=3, workers=1)
        ts = open_training_set(root / "shapes", frames=T.FRAMES, size=T.SIZE,
                               cache_dir=root / "cache")
        data = (root / "shapes", root / "cache", ts)
        ratios = []
        for seed in range(args.seeds):
            run = train(T.settings(root / f"run{seed}", data, arch=args.arch, steps=T.STEPS,
                                   log_every=T.STEPS, checkpoint_every=T.STEPS, d_width=16,
                                   d_dim=64, seed=seed, threads=args.threads), data=ts)
            ratios.append(T._gap_ratio(run, ts))
            print(f"{args.arch} seed {seed}: end gap / start gap {ratios[-1]:.4f}", flush=True)
    r = np.asarray(ratios)
    sd = f"{r.std(ddof=1):.3f}" if len(r) > 1 else "-"
    print(f"{args.arch}, {len(r)} seeds: mean {r.mean():.3f}, sd {sd}, "
          f"above 0.85: {(r > 0.85).sum()}, mean of seeds 0 to {T.GAP_SEEDS - 1}: "
          f"{r[:T.GAP_SEEDS].mean():.3f}")


if __name__ == "__main__":
    main()
