"""Issue #18 on a lent GPU: the shapes proof through the public path, inside a time budget.

    python bench/gpu/train_shapes.py --budget-s 420            # on the GPU (the kit's train suite)
    python bench/gpu/train_shapes.py --dry-run --budget-s 240  # the rehearsal on a CPU machine

What it does, every step a ``t2v-rt`` command (``python -m t2v_rt``) as a user would type it:

1. ``t2v-rt dataset render-shapes DATA --clips 5000 --seconds 2.4`` (the card's dataset,
   shapes5k-long: 36 frames, 64x64 at 15 fps, held-out colour-shape pairs excluded), then the
   training cache decoded once (``t2v_rt.data.open_training_set``, what ``train`` reads);
2. ``t2v-rt train --data DATA --arch stylegan-v`` with the recipe of the shipped model,
   docs/models/experiments/run-r1light.sh as r1mid (fixed stride 3, contrastive captions, speed
   negatives, absolute coordinates, d_stem=2, hard minimal pairs from the first step,
   r1_gamma=0.005 for the frame discriminator and r1_video_scale=2, 0.01, for the video
   discriminator) and the learned vocabulary (the pretrained encoder's 83 MB package does not
   fit the device's 64 MiB carry), one run per batch size in ``--batches``, side by side on
   the one GPU (bf16 autocast, the trainer's CUDA default; so the clips/s in the record are each
   run's share of the GPU, not the GPU's alone); the budget's training time is split as on the
   CPU: 45/120 at lr_d=1e-3, then resumed at lr_d=3e-4;
3. with ``--samples N``, ``t2v-rt eval --model RUN/generator.safetensors --samples N
   --long-run 0 --backend torch`` for each run. On the GPU the default is none: the lease goes
   to training, and the returned generators are scored back on the CPU machine with the same
   command (the eval is seeded: the same samples either way).

Writes ``train_shapes-{gpu,cpu}.json`` (bench/common.write_result: environment, commit; every
command with its seconds and exit status; per run the steps, clips/s from the trainer's own
metrics, the eval's accuracies) and ``train_shapes-{gpu,cpu}.tar.gz`` (per run: generator
safetensors + json, eval json, metrics.jsonl, config.json, run.json) into ``T2V_RT_RESULTS``
(the kit's $OUT). A step that fails is recorded and the rest goes on where it can.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import write_result  # noqa: E402

# The recipe of the shipped model (docs/models/experiments/run-r1light.sh with NAME=r1mid
# R1=0.005 VSCALE=2: fixed-stride-recipe.sh's COMMON and PAIRS0, the frame discriminator's R1
# at a two-hundredth, the video discriminator's at a hundredth) without its text
# encoder: the learned vocabulary. Phase 2 only lowers lr_d, so both phases take the same step;
# bench/gpu/recipe_speed.sh times it (--print-recipe).
RECIPE = ["--set", "latent_dim=32", "--set", "text_dim=32", "--set", "w_dim=64",
          "--set", "motion_dim=32", "--set", "lr_g=0.001", "--set", "lr_d=0.001",
          "--set", "frames=36", "--set", "clip_frames=6", "--set", "min_stride=3",
          "--set", "max_stride=3", "--set", "contrastive=1", "--set", "time_modulation=features",
          "--set", "speed_negatives=1", "--set", "augment=false",
          "--set", "channels=[64,64,32,32,16]", "--set", "coordinates=absolute",
          "--set", "d_stem=2", "--set", "minimal_pairs=1", "--set", "minimal_pair_draws=8",
          "--set", "r1_gamma=0.005",
          "--set", "r1_video_scale=2"]
RUN_FLAGS = ["--arch", "stylegan-v", "--steps", "1000000", "--set", "sample_every=0",
             "--set", "checkpoint_every=5000"]
PHASE2 = ["--set", "lr_d=0.0003"]
PHASE1_SHARE = 45 / 120            # run-r1light.sh: 45 minutes, then 75 at the lower lr_d
FRAMES, SIZE = 36, 64


def say(msg: str) -> None:
    print(f"[train_shapes] {msg}", file=sys.stderr, flush=True)


class Runner:
    def __init__(self, work: Path, deadline: float):
        self.work, self.deadline = work, deadline
        self.commands: list[dict] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def start(self, argv: list[str], log: Path) -> tuple[subprocess.Popen, dict]:
        rec = {"command": " ".join(argv[2:] if argv[1:3] == ["-m", "t2v_rt"] else argv),
               "log": log.name, "started_s": round(time.monotonic() - T0, 1)}
        say(f"$ {rec['command']}")
        fh = open(log, "ab")
        p = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=self.work)
        p._t2v_log = fh          # closed in wait()
        self.commands.append(rec)
        return p, rec

    def wait(self, p: subprocess.Popen, rec: dict, timeout: float) -> int:
        try:
            rc = p.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            p.terminate()
            try:
                rc = p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
            rec["timed_out"] = True
        p._t2v_log.close()
        rec["rc"] = rc
        rec["seconds"] = round(time.monotonic() - T0 - rec["started_s"], 1)
        if rc != 0:
            lines = (self.work / rec["log"]).read_text(errors="replace").strip().splitlines()
            rec["error"] = lines[-3:]
            say(f"exit {rc}: {rec['command']}: {lines[-1] if lines else ''}")
        return rc

    def run(self, argv: list[str], log: Path, timeout: float) -> tuple[int, dict]:
        p, rec = self.start(argv, log)
        return self.wait(p, rec, timeout), rec


T0 = time.monotonic()


def t2v(*args: str) -> list[str]:
    return [sys.executable, "-m", "t2v_rt", *map(str, args)]


def metrics_speed(run: Path) -> dict:
    """Steps, and clips/s as the trainer logged them (median of its log lines after the first
    tenth, so start-up and the phase change stay out)."""
    try:
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    except OSError:
        return {}
    rows = [r for r in rows if "clips_per_s" in r]
    if not rows:
        return {}
    tail = sorted(r["clips_per_s"] for r in rows[len(rows) // 10:])
    steps = sorted(r["steps_per_s"] for r in rows[len(rows) // 10:])
    last = rows[-1]
    return {"steps": last["step"], "clips_per_s_median": round(tail[len(tail) // 2], 1),
            "steps_per_s_median": round(steps[len(steps) // 2], 2),
            "last": {k: last[k] for k in ("g", "d", "d_acc", "r1") if k in last}}


def accuracies(path: Path) -> dict | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return {g: {"accuracy": {k: round(v, 4) for k, v in row["accuracy"].items()},
                "all_attributes": round(row["all_attributes"], 4), "videos": row["videos"]}
            for g, row in d["groups"].items()} | {"frechet": d.get("frechet", {}).get("generated_vs_rendered")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget-s", type=float, default=420, help="everything ends within this")
    ap.add_argument("--batches", default="32,64,128", help="one run per batch size, side by side")
    ap.add_argument("--clips", type=int, default=5000)
    ap.add_argument("--samples", type=int, default=None,
                    help="eval samples per run (default: 0 on the GPU, where the lease goes to "
                         "training and the returned generators are scored back here; 40 in --dry-run)")
    ap.add_argument("--threads", type=int, default=4, help="CPU threads per training run")
    ap.add_argument("--work", type=Path, default=None, help="data, cache and runs (default: a temp folder)")
    ap.add_argument("--print-recipe", action="store_true",
                    help="print the recipe's --set arguments (phase 1's; phase 2 only lowers "
                         "lr_d), one a line, and exit")
    ap.add_argument("--dry-run", action="store_true",
                    help="the rehearsal on a CPU: 48 clips, 40 eval samples, device cpu")
    args = ap.parse_args(argv)
    if args.print_recipe:
        print("\n".join(RECIPE))
        return 0
    deadline = T0 + args.budget_s
    import tempfile

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        say("no CUDA device visible to torch: this is the GPU run (--dry-run rehearses it on a CPU)")
        return 2
    clips = 48 if args.dry_run else args.clips
    samples = args.samples if args.samples is not None else (40 if args.dry_run else 0)
    batches = [int(b) for b in args.batches.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="t2v-train-shapes-"))
    work.mkdir(parents=True, exist_ok=True)
    r = Runner(work, deadline)
    data, cache, runs = work / "shapes5k-long", work / "cache", work / "runs"
    record: dict = {"command": "python bench/gpu/train_shapes.py " + " ".join(argv or sys.argv[1:]),
                    "budget_s": args.budget_s, "clips": clips, "eval_samples": samples,
                    "text_front_end": "learned vocabulary", "recipe": RECIPE, "phase2": PHASE2,
                    "device": "cuda (bf16 autocast)" if cuda else "cpu (fp32)", "runs": {}}

    def finish() -> int:
        record["commands"] = r.commands
        record["elapsed_s"] = round(time.monotonic() - T0, 1)
        out = write_result("train_shapes", record)
        tar = out.with_suffix(".tar.gz")
        with tarfile.open(tar, "w:gz") as t:
            for name in record["runs"]:
                run = next((runs / name).glob(f"*-{name}"))
                for f in ("generator.safetensors", "generator.json", "metrics.jsonl",
                          "config.json", "run.json", f"eval-{name}.json"):
                    src = (work if f.startswith("eval-") else run) / f
                    if src.exists():
                        t.add(src, arcname=f"{name}/{f}")
            for log in sorted(work.glob("*.log")):
                t.add(log, arcname=f"logs/{log.name}")
        say(f"wrote {out} and {tar.name} ({tar.stat().st_size / 1e6:.1f} MB) in {record['elapsed_s']} s")
        for name, row in record["runs"].items():
            acc = row.get("eval") or {}
            cells = [f"{g} " + " ".join(f"{k[:3]} {v['accuracy'][k]:.1%}" for k in
                                        ("shape", "speed", "colour", "size", "motion"))
                     for g, v in acc.items() if isinstance(v, dict)]
            say(f"{name}: {row.get('speed', {}).get('steps', '?')} steps, "
                f"{row.get('speed', {}).get('clips_per_s_median', '?')} clips/s; " + "; ".join(cells))
        return 0 if all(c.get("rc") == 0 for c in r.commands) else 1

    # 1. the data, then its training cache
    rc, rec = r.run(t2v("dataset", "render-shapes", data, "--clips", clips, "--seconds", 2.4),
                    work / "render.log", r.left() - 60)
    if rc != 0:
        return finish()
    code = (f"from t2v_rt.data import open_training_set as o; ts = o({str(data)!r}, frames={FRAMES}, "
            f"size={SIZE}, cache_dir={str(cache)!r}, log=print); print(ts.clips.shape)")
    rc, rec = r.run([sys.executable, "-c", code], work / "cache.log", r.left() - 60)
    record["data_s"] = round(time.monotonic() - T0, 1)
    if rc != 0:
        return finish()

    # 2. the runs, side by side: phase 1, then phase 2 from its checkpoint
    eval_s = 0 if not samples else (90 if cuda else 60)    # 600 samples on 16 cores; 40 on 2
    overhead = 20 if cuda else 25                   # process and CUDA start per phase
    train_s = r.left() - eval_s - 2 * overhead - 15
    if train_s < 30:
        record["error"] = f"{train_s:.0f} s left for training: too little"
        return finish()
    minutes1 = PHASE1_SHARE * train_s / 60
    minutes2 = (1 - PHASE1_SHARE) * train_s / 60
    record["training_s_planned"] = round(train_s, 1)
    common = ["--data", data, "--set", f"cache_dir={cache}",
              "--set", f"threads={args.threads}", "--set", f"device={'cuda' if cuda else 'cpu'}",
              *RUN_FLAGS, *RECIPE]
    procs = []
    for b in batches:
        name = f"b{b}"
        procs.append((name, *r.start(t2v("train", *common, "--run-dir", runs / name,
                                          "--minutes", f"{minutes1:.3f}",
                                          "--set", f"batch_size={b}", "--set", f"name={name}"),
                                     work / f"train-{name}.log")))
    live = []
    for name, p, rec in procs:
        if r.wait(p, rec, r.left() - eval_s - overhead - 5) == 0:
            live.append(name)
    procs = []
    for name in live:
        run = next((runs / name).glob(f"*-{name}"))
        record["runs"][name] = {"run": run.name, "batch_size": int(name[1:]),
                                "phase1": metrics_speed(run)}
        procs.append((name, *r.start(t2v("train", "--resume", run, "--minutes", f"{minutes2:.3f}",
                                          "--steps", "1000000", *PHASE2),
                                     work / f"train-{name}.log")))
    done = []
    for name, p, rec in procs:
        if r.wait(p, rec, r.left() - eval_s) == 0:
            done.append(name)

    # 3. score each run
    procs = []
    for name in done:
        run = next((runs / name).glob(f"*-{name}"))
        record["runs"][name]["speed"] = metrics_speed(run)
        if not samples:
            continue
        procs.append((name, *r.start(t2v("eval", "--model", run / "generator.safetensors",
                                          "--samples", samples, "--long-run", 0, "--backend", "torch",
                                          "--json", work / f"eval-{name}.json"),
                                     work / f"eval-{name}.log")))
    for name, p, rec in procs:
        r.wait(p, rec, r.left())
        record["runs"][name]["eval"] = accuracies(work / f"eval-{name}.json")
    return finish()


if __name__ == "__main__":
    sys.exit(main())
