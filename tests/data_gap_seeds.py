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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="stylegan-v", choices=T.ARCHS)
    ap.add_argument("--seeds", type=int, default=25, help="seeds 0 to N - 1")
    ap.add_argument("--threads", type=int, default=1, help="the runs' threads (the test: 1)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = T.make_dataset(Path(tmp))
        ratios = []
        for seed in range(args.seeds):
            run = T.short_run(Path(tmp) / f"run{seed}", data, args.arch, seed=seed,
                              log_every=T.STEPS, checkpoint_every=T.STEPS,
                              threads=args.threads)
            ratios.append(T._gap_ratio(run, data[2]))
            print(f"{args.arch} seed {seed}: end gap / start gap {ratios[-1]:.4f}", flush=True)
    r = np.asarray(ratios)
    sd = f"{r.std(ddof=1):.3f}" if len(r) > 1 else "-"
    print(f"{args.arch}, {len(r)} seeds: mean {r.mean():.3f}, sd {sd}, "
          f"above 0.85: {(r > 0.85).sum()}, mean of seeds 0 to {T.GAP_SEEDS - 1}: "
          f"{r[:T.GAP_SEEDS].mean():.3f}")


if __name__ == "__main__":
    main()
