"""A fresh install, measured as a new user meets it: size on disk, install time, and how fast
the CLI answers (issue #15's targets).

    python bench/startup.py [--repeats 5] [--keep DIR]

In a new virtual environment (``python -m venv``), ``pip install <this checkout>`` exactly as
the README's quick start says (no extras: the CPU runtime without PyTorch), then, with an
empty ``T2V_RT_CACHE`` for every run (no cache at all, as on first use):

- ``t2v-rt --help``: wall time to exit;
- ``t2v-rt stream "a blu ball"`` (a misspelt prompt): wall time to its one-line error;
- ``t2v-rt stream PROMPT`` into a pipe: time from the start to the first video byte, and to
  exit for 30 frames with ``--no-realtime``;
- ``du`` of the venv, in MB (10^6 bytes), and what takes the most room;
- throughput: ``--no-realtime`` frames/s over 300 frames (median of the runs).

Medians over ``--repeats`` runs. pip's download cache is used as it is (a second install on
the same machine downloads nothing; the first downloads about 100 MB). Writes
bench/results/startup-cpu.json with the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, write_result  # noqa: E402

PROMPT = "a large red circle moving left and right slowly"


def du_mb(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = Path(root) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total / 1e6


def biggest(site: Path, n: int = 6) -> dict[str, float]:
    sizes = {d.name: du_mb(d) for d in site.iterdir() if d.is_dir()}
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:n])


def timed(cmd: list[str], env: dict, **kw) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, **kw)
    return time.perf_counter() - t0, proc


def first_byte(cmd: list[str], env: dict) -> tuple[float, float, int]:
    """(seconds to the first byte on stdout, seconds to exit, bytes)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = proc.stdout.read(1)
    t_first = time.perf_counter() - t0
    rest = proc.stdout.read()
    proc.wait()
    if proc.returncode != 0 or not first:
        raise RuntimeError(f"{' '.join(cmd)} failed with {proc.returncode}")
    return t_first, time.perf_counter() - t0, 1 + len(rest)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--keep", type=Path, default=None, help="make the venv here and keep it")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="t2v-rt-startup-"))
    venv = args.keep or work / "venv"
    try:
        env = {k: v for k, v in os.environ.items()
               if k not in ("VIRTUAL_ENV", "PYTHONPATH", "T2V_RT_CACHE", "TRITON_INTERPRET")}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = venv / "bin" / "python"
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True, env=env)
        t_pip = time.perf_counter()
        subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], check=True, env=env)
        install_s = time.perf_counter() - t_pip
        total_s = time.perf_counter() - t0
        site = next((venv / "lib").glob("python*/site-packages"))
        size = du_mb(venv)
        has_torch = (site / "torch").exists()
        print(f"installed in {install_s:.1f} s (venv {total_s:.1f} s); {size:.0f} MB; "
              f"torch {'present' if has_torch else 'absent'}", file=sys.stderr)
        cli = str(venv / "bin" / "t2v-rt")
        runs: dict[str, list[float]] = {"help": [], "bad_prompt": [], "first_byte": [],
                                        "exit_30_frames": [], "fps_300": []}
        for i in range(args.repeats):
            cache = work / f"cache-{i}"        # no cache at all: a new one every run
            e = {**env, "T2V_RT_CACHE": str(cache)}
            t, p = timed([cli, "--help"], e)
            assert p.returncode == 0
            runs["help"].append(t)
            t, p = timed([cli, "stream", "a blu ball"], e)
            assert p.returncode == 2 and b"did you mean 'blue'" in p.stderr, p.stderr
            runs["bad_prompt"].append(t)
            fb, done, _ = first_byte([cli, "stream", PROMPT, "--frames", "30", "--no-realtime"], e)
            runs["first_byte"].append(fb)
            runs["exit_30_frames"].append(done)
            shutil.rmtree(cache, ignore_errors=True)
            _, done, _ = first_byte([cli, "stream", PROMPT, "--frames", "300", "--no-realtime"], e)
            runs["fps_300"].append(300 / done)
        med = {k: statistics.median(v) for k, v in runs.items()}
        for k, v in med.items():
            print(f"{k:15s} median {v:7.3f}  runs {', '.join(f'{x:.3f}' for x in runs[k])}",
                  file=sys.stderr)
        path = write_result("startup", {
            "command": "python bench/startup.py " + " ".join(sys.argv[1:]),
            "install": {"command": "pip install . (fresh venv, no extras)", "seconds": install_s,
                        "venv_seconds": total_s, "venv_mb": size, "torch_installed": has_torch,
                        "largest_packages_mb": biggest(site)},
            "seconds": {k: {"median": med[k], "runs": v} for k, v in runs.items() if k != "fps_300"},
            "stream_fps_300_frames_no_realtime": {"median": med["fps_300"], "runs": runs["fps_300"]},
            "targets": {"venv_mb": 400, "help": 0.2, "bad_prompt": 0.3, "first_byte": 0.6},
            "load_average": os.getloadavg(),
        })
        print(f"wrote {path}", file=sys.stderr)
        print(json.dumps(med, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
