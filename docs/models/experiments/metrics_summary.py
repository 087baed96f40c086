"""The run-level numbers the model card quotes, from a run folder's metrics.jsonl.

    python docs/models/experiments/metrics_summary.py docs/models/experiments/r1mid

Prints the median clips/s of each leg (legs split at the steps of the run's
config-from-STEP.json files, where ``train --resume`` began), the mean G loss, D loss and D
accuracy over the last 1,000 steps, and the mean of the last 40 logged R1 terms (the card's
"R1 term (unweighted sum), mean of the last 40 logged steps").
"""
import json
import statistics
import sys
from pathlib import Path


def main(folder: Path) -> None:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    starts = sorted(int(p.stem.rsplit("-", 1)[1]) for p in folder.glob("config-from-*.json"))
    edges = [0, *starts, rows[-1]["step"] + 1]
    for leg, (lo, hi) in enumerate(zip(edges, edges[1:]), 1):
        speeds = [r["clips_per_s"] for r in rows if lo < r["step"] <= hi]
        print(f"leg {leg} (steps {lo}-{min(hi, rows[-1]['step'])}): "
              f"median {statistics.median(speeds):.1f} clips/s")
    last = [r for r in rows if r["step"] > rows[-1]["step"] - 1000]
    print("last 1,000 steps: G {:.2f}, D {:.2f}, D right {:.0%}".format(
        *(statistics.fmean(r[k] for r in last) for k in ("g", "d", "d_acc"))))
    r1 = [r["r1"] for r in rows if "r1" in r][-40:]
    print(f"R1 term, mean of the last {len(r1)} logged rows: {statistics.fmean(r1):.1f}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "metrics.jsonl").is_file():
        print("usage: metrics_summary.py RUN_FOLDER (a folder with metrics.jsonl)", file=sys.stderr)
        sys.exit(2)
    main(Path(sys.argv[1]))
