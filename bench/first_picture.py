"""Time to first picture in the players people use, per container (issue #15).

    python bench/first_picture.py [--formats mpegts,nut,matroska] [--players ffplay,mpv]
                                  [--repeats 5] [--prompt ...] [--timeout 20]

Runs the README's plain command, ``t2v-rt stream "PROMPT" --format F | ffplay -`` (and
``| mpv -``), exactly as a user types it (no player flags), on a virtual X display (Xvfb,
640x480x24), films the screen and records, per run, from the moment the command starts:

- ``window_s``: the first screenshot in which the player's window shows (any pixel that
  differs from the empty root window, which is started with its old black-and-white weave,
  ``-retro``, so that a black window on it shows);
- ``first_picture_s``: the first screenshot in which the prompt's shape shows: at least
  ``--min-pixels`` (200) changed pixels whose colour is within ``--tolerance`` (60, in each
  8-bit channel) of the shape colour the prompt names (red: (220, 30, 30), so R >= 160,
  G <= 90, B <= 90), the palette of the bundled model; the screenshot before it is recorded too
  (``before_s``), so the picture appeared in ``(before_s, first_picture_s]``;
- ``first_byte_s`` (the runs marked ``relay``): when the first byte reached the player. The
  plain command cannot show it, so each repeat also runs the command with a small Python relay
  between the two (``t2v-rt ... | python relay | ffplay -``) that notes when the first byte
  passes; those runs are reported apart (``relay``), the headline numbers are the plain runs.
  Their ``picture_after_first_byte_s`` is the player's share (probing, decoding, showing),
  apart from the runtime's start-up.

Screenshots: one ``ffmpeg -f x11grab -framerate 20`` per run, raw frames piped into this
script and time-stamped on arrival (``time.monotonic()``, so the relay's clock is the same);
the achieved cadence (median, 95th percentile and largest gap between screenshots) is in the
output. Every container is measured warm (the ONNX cache, ``$T2V_RT_CACHE``, filled by one
warm-up stream into a folder of this benchmark's own); one more run of the default container
(no ``--format``) starts from an empty cache (``cold``). Runs are interleaved (repeat 1 of
every player and container, then repeat 2, ...), so that a slow spell of the machine does not
land on one container. Before starting, the script waits (up to ``--load-wait`` seconds) for
the 1-minute load average to fall below ``--max-load``, and before each run for a second in
which the machine's other processes use less than ``--max-busy`` (15 %) of its CPUs; each run
records what the other processes used while it ran (``others_cpu_s``: all CPUs' busy time less
this benchmark, its screenshot ffmpeg, Xvfb and the command), so a disturbed run shows.

The runs' environment, apart from DISPLAY: ``XDG_RUNTIME_DIR`` a private folder (a desktop
session has one); ``PYTHONDONTWRITEBYTECODE`` removed, so the warm-up leaves the runtime's
bytecode cached as on a user's machine; for mpv, ``MPV_HOME`` a private folder whose mpv.conf
holds only ``gpu-sw=yes``: mpv's default video output (gpu) refuses Xvfb's software OpenGL and
then falls through to legacy outputs that never show a window here, where a desktop's GPU
would let it run; this keeps it on its default output (and keeps the user's mpv.conf out).

Writes bench/results/first_picture-{cpu,gpu}.json (bench/common.py) and prints a table on
stderr. The fastest container (by median first picture in plain ``ffplay -``) is the
``fastest`` entry.

Needs (Debian/Ubuntu packages): ``ffmpeg`` (ffmpeg, ffplay), ``xvfb`` (Xvfb), ``x11-utils``
(xdpyinfo), and ``mpv`` for the mpv runs (skipped when not installed, unless asked for by
``--players``); ``t2v-rt`` on PATH:

    apt-get install -y ffmpeg xvfb x11-utils mpv
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 640, 480
GRAB_FPS = 20  # one screenshot every 50 ms
PROMPT = "a large red circle moving left and right slowly"
FORMATS = ("mpegts", "nut", "matroska")
DEFAULT = "default"  # --format omitted
APT_PACKAGE = {"Xvfb": "xvfb", "xdpyinfo": "x11-utils", "ffmpeg": "ffmpeg", "ffplay": "ffmpeg",
               "mpv": "mpv"}

# The bundled model's shape colours (t2v_rt/models/shapes/spec.py), copied so that the
# benchmark does not import the runtime it measures.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 50),
    "blue": (40, 70, 230),
    "yellow": (235, 215, 30),
    "cyan": (30, 200, 210),
    "magenta": (210, 40, 200),
    "orange": (245, 130, 20),
}

# Copies stdin to stdout and writes, to the file named by argv[1], time.monotonic() at the
# first byte read. Run as `python -I -S -c RELAY FILE` between the stream and the player.
RELAY = """
import os, sys, time
out = sys.argv[1]
first = True
while True:
    data = os.read(0, 1 << 16)
    if not data:
        break
    if first:
        with open(out, "w") as f:
            f.write(repr(time.monotonic()))
        first = False
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(1, view):]
    except BrokenPipeError:
        break
"""


# ---------------------------------------------------------------- picture detection (pure)

def prompt_colour(prompt: str) -> tuple[str, tuple[int, int, int]]:
    """The shape colour a prompt names: (word, RGB) of the first colour word in it."""
    words = prompt.lower().replace(",", " ").replace(".", " ").split()
    for word in words:
        if word in COLOURS:
            return word, COLOURS[word]
    raise ValueError(f"the prompt names no shape colour ({', '.join(COLOURS)}); "
                     "pass --colour R,G,B")


def changed_mask(frame: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Pixels (HxW bool) that differ from the empty screen. frame, baseline: HxWx3 uint8 RGB."""
    return np.any(frame != baseline, axis=2)


def colour_mask(frame: np.ndarray, colour: tuple[int, int, int], tolerance: int) -> np.ndarray:
    """Pixels within ``tolerance`` of ``colour`` in every channel (HxW bool)."""
    diff = np.abs(frame.astype(np.int16) - np.asarray(colour, dtype=np.int16))
    return np.all(diff <= tolerance, axis=2)


def analyse(frame: np.ndarray, baseline: np.ndarray, colour: tuple[int, int, int],
            tolerance: int = 60) -> tuple[int, int]:
    """(changed pixels, changed pixels of the shape's colour) of one screenshot."""
    changed = changed_mask(frame, baseline)
    shape = changed & colour_mask(frame, colour, tolerance)
    return int(changed.sum()), int(shape.sum())



def stop(proc: subprocess.Popen) -> None:
    """Terminate ``proc`` (killed if it has not gone within 5 s) and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

class Detector:
    """Follows the screenshots of one run: the first with the window, the first with the shape."""

    def __init__(self, baseline: np.ndarray, colour: tuple[int, int, int], tolerance: int = 60,
                 min_pixels: int = 200, min_window_pixels: int = 500):
        self.baseline, self.colour, self.tolerance = baseline, colour, tolerance
        self.min_pixels, self.min_window_pixels = min_pixels, min_window_pixels
        self.window_s: float | None = None
        self.first_picture_s: float | None = None
        self.before_s: float | None = None
        self.shape_pixels = 0
        self.picture: np.ndarray | None = None
        self.last_s: float | None = None
        self.shots = 0

    def feed(self, t: float, frame: np.ndarray) -> bool:
        """One screenshot taken at t (s). True once the shape has shown."""
        self.shots += 1
        if self.first_picture_s is None:
            changed, shape = analyse(frame, self.baseline, self.colour, self.tolerance)
            if self.window_s is None and changed >= self.min_window_pixels:
                self.window_s = t
            if shape >= self.min_pixels:
                self.first_picture_s, self.before_s, self.shape_pixels = t, self.last_s, shape
                self.picture = frame
                if self.window_s is None:
                    self.window_s = t
        self.last_s = t
        return self.first_picture_s is not None


# ---------------------------------------------------------------- X display and screenshots

def free_display() -> int:
    for n in range(99, 300):
        if not (os.path.exists(f"/tmp/.X{n}-lock") or os.path.exists(f"/tmp/.X11-unix/X{n}")):
            return n
    raise SystemExit("first_picture: no free X display number in :99..:299")


class Xvfb:
    def __init__(self):
        self.number = free_display()
        self.display = f":{self.number}"
        self.proc = subprocess.Popen(
            ["Xvfb", self.display, "-screen", "0", f"{WIDTH}x{HEIGHT}x24", "-nolisten", "tcp",
             "-retro", "-noreset"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"first_picture: Xvfb {self.display} exited at start")
            if subprocess.run(["xdpyinfo", "-display", self.display], capture_output=True
                              ).returncode == 0:
                return
            time.sleep(0.1)
        self.close()
        raise SystemExit(f"first_picture: Xvfb {self.display} did not start in 10 s")

    def close(self):
        stop(self.proc)


class Grabber:
    """``ffmpeg -f x11grab`` at GRAB_FPS, raw BGR0 frames on a pipe, stamped on arrival."""

    def __init__(self, display: str):
        major = ffmpeg_major()
        passthrough = ["-fps_mode", "passthrough"] if major >= 5 else ["-vsync", "passthrough"]
        self.proc = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "x11grab", "-draw_mouse", "0",
             "-framerate", str(GRAB_FPS), "-video_size", f"{WIDTH}x{HEIGHT}", "-i", display,
             *passthrough, "-f", "rawvideo", "-pix_fmt", "bgr0", "-flush_packets", "1", "pipe:1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, start_new_session=True)
        self.frames: list[tuple[float, np.ndarray]] = []
        self.cond = threading.Condition()
        self.done = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        size = WIDTH * HEIGHT * 4
        fd = self.proc.stdout.fileno()
        while True:
            buf = bytearray(size)
            view, got = memoryview(buf), 0
            while got < size:
                n = os.readv(fd, [view[got:]])
                if n == 0:
                    break
                got += n
            if got < size:
                break
            t = time.monotonic()
            rgb = np.frombuffer(buf, np.uint8).reshape(HEIGHT, WIDTH, 4)[:, :, 2::-1]
            with self.cond:
                self.frames.append((t, rgb))
                self.cond.notify()
        with self.cond:
            self.done = True
            self.cond.notify()

    def next(self, index: int, timeout: float) -> tuple[float, np.ndarray] | None:
        with self.cond:
            self.cond.wait_for(lambda: len(self.frames) > index or self.done, timeout)
            return self.frames[index] if len(self.frames) > index else None

    def forget(self, index: int):
        """Drop the pixels of frame ``index`` once looked at (keeps memory flat)."""
        with self.cond:
            self.frames[index] = (self.frames[index][0], None)

    def close(self):
        stop(self.proc)
        self.thread.join(5)


# ---------------------------------------------------------------- CPU accounting

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], pgrp [2], utime [11])."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def proc_cpu_s(pid: int | None) -> float:
    fields = _stat(pid) if pid else None
    return (int(fields[11]) + int(fields[12])) / TICK if fields else 0.0


def group_cpu_s(pgid: int) -> float:
    """CPU seconds used so far by the live members of process group ``pgid``."""
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(entry)
            if fields and int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
    return total / TICK


def machine_busy_s() -> float:
    """CPU seconds all CPUs have spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / TICK  # all but idle and iowait


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def wait_until_idle(max_busy: float, wait_s: float) -> float:
    """Wait (up to wait_s) for a 1-second sample in which the other processes of the machine
    use less than ``max_busy`` of its CPUs; returns the last sample's busy fraction."""
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        b0, t0 = machine_busy_s(), time.monotonic()
        time.sleep(1.0)
        busy = (machine_busy_s() - b0) / ((time.monotonic() - t0) * (os.cpu_count() or 1))
        if busy < max_busy or time.monotonic() >= deadline:
            if busy >= max_busy:
                print(f"first_picture: the machine is still {busy:.0%} busy; measuring anyway "
                      "(recorded)", file=sys.stderr)
            return busy
        if not told:
            print(f"first_picture: other processes keep the machine {busy:.0%} busy, waiting",
                  file=sys.stderr)
            told = True
        time.sleep(4.0)


_FFMPEG_MAJOR: int | None = None


def ffmpeg_major() -> int:
    global _FFMPEG_MAJOR
    if _FFMPEG_MAJOR is None:
        first = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
        try:
            _FFMPEG_MAJOR = int(first.split()[2].lstrip("n").split(".")[0].split("-")[0])
        except (IndexError, ValueError):
            _FFMPEG_MAJOR = 5
    return _FFMPEG_MAJOR


# ---------------------------------------------------------------- one run

def stream_command(prompt: str, fmt: str) -> str:
    cmd = f"t2v-rt stream {shlex.quote(prompt)}"
    return cmd if fmt == DEFAULT else f"{cmd} --format {fmt}"


def kill_group(proc: subprocess.Popen):
    """SIGTERM to the command's process group (sh, t2v-rt, the player), then SIGKILL to
    whatever of it is left after 3 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        proc.poll()
        time.sleep(0.05)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def one_run(display: str, player: str, fmt: str, relay: bool, args, env: dict,
            colour: tuple[int, int, int], timeout: float, work: Path,
            root: dict | None = None, xvfb_pid: int | None = None) -> dict:
    """One run of the command, filmed. ``root`` holds the empty screen of the first run
    (``root["frame"]``): each run waits (up to 5 s) for the screen to be empty again.

    CPU: ``others_cpu_s`` is what the rest of the machine used during the run (all CPUs' busy
    time less this benchmark, its screenshot ffmpeg, Xvfb and the command's processes)."""
    busy_before = wait_until_idle(args.max_busy, args.load_wait)
    stamp = work / "first_byte"
    stamp.unlink(missing_ok=True)
    middle = (f" | {shlex.quote(sys.executable)} -I -S -c {shlex.quote(RELAY)} "
              f"{shlex.quote(str(stamp))}") if relay else ""
    command = f"{stream_command(args.prompt, fmt)}{middle} | {player} -"
    log = work / "log.txt"
    root = {} if root is None else root

    grabber = Grabber(display)
    try:
        index = 0
        deadline = time.monotonic() + 5
        while True:
            shot = grabber.next(index, 10)
            if shot is None:
                raise SystemExit("first_picture: ffmpeg x11grab gave no screenshot: "
                                 + grabber.proc.stderr.read().decode(errors="replace")[-300:])
            baseline = shot[1].copy()
            grabber.forget(index)
            index += 1
            if "frame" not in root:
                root["frame"] = baseline
            if np.array_equal(baseline, root["frame"]):
                break
            if time.monotonic() > deadline:
                raise SystemExit("first_picture: the screen is not empty before a run "
                                 "(a window of the previous run left?)")
        cpu0 = (machine_busy_s(), own_cpu_s(), proc_cpu_s(grabber.proc.pid),
                proc_cpu_s(xvfb_pid))
        detector = Detector(baseline, colour, args.tolerance, args.min_pixels)
        stamps: list[float] = []
        with open(log, "wb") as logf:
            t0 = time.monotonic()
            proc = subprocess.Popen(["sh", "-c", command], env=env, stdin=subprocess.DEVNULL,
                                    stdout=logf, stderr=logf, start_new_session=True)
            try:
                exited_at = None
                while time.monotonic() - t0 < timeout:
                    shot = grabber.next(index, 1.0)
                    if shot is None:
                        if grabber.done:
                            raise SystemExit("first_picture: the screenshot ffmpeg stopped")
                        continue
                    t, frame = shot
                    if t >= t0:  # earlier ones were taken before the command started
                        stamps.append(t - t0)
                        if detector.feed(t - t0, frame):
                            break
                    grabber.forget(index)
                    index += 1
                    if proc.poll() is not None:  # the command ended: one more second
                        exited_at = exited_at or time.monotonic()
                        if time.monotonic() - exited_at > 1.0:
                            break
            finally:
                command_cpu = group_cpu_s(proc.pid)
                cpu1 = (machine_busy_s(), own_cpu_s(), proc_cpu_s(grabber.proc.pid),
                        proc_cpu_s(xvfb_pid))
                kill_group(proc)
    finally:
        grabber.close()
    if args.save_shots and detector.picture is not None:
        args.save_shots.mkdir(parents=True, exist_ok=True)
        stem = f"{player}-{fmt}-{'relay' if relay else 'plain'}"
        n = len(list(args.save_shots.glob(f"{stem}-*.ppm")))
        name = f"{stem}-{n}.ppm"
        write_ppm(args.save_shots / name, detector.picture)

    first_byte_s = None
    if relay and stamp.exists():
        try:
            first_byte_s = float(stamp.read_text()) - t0
        except ValueError:
            pass
    gaps = np.diff(stamps) * 1000 if len(stamps) > 1 else np.array([])
    run = {
        "player": player, "format": fmt, "relay": relay,
        "window_s": _r(detector.window_s), "first_picture_s": _r(detector.first_picture_s),
        "before_s": _r(detector.before_s), "first_byte_s": _r(first_byte_s),
        "picture_after_first_byte_s": _r(detector.first_picture_s - first_byte_s)
        if None not in (detector.first_picture_s, first_byte_s) else None,
        "shape_pixels": detector.shape_pixels, "screenshots": len(stamps),
        "cadence_ms": {"median": _r(float(np.median(gaps)), 1) if gaps.size else None,
                       "p95": _r(float(np.percentile(gaps, 95)), 1) if gaps.size else None,
                       "max": _r(float(gaps.max()), 1) if gaps.size else None},
        "command_cpu_s": _r(command_cpu, 2), "grabber_cpu_s": _r(cpu1[2] - cpu0[2], 2),
        "others_cpu_s": _r(max(0.0, (cpu1[0] - cpu0[0]) - command_cpu
                               - sum(cpu1[i] - cpu0[i] for i in (1, 2, 3))), 2),
        "busy_before_run": round(busy_before, 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    if detector.first_picture_s is None:
        tail = log.read_bytes().decode(errors="replace").replace("\r", "\n").splitlines()
        run["error"] = ("no picture in %.0f s" % timeout
                        + ("; the command exited" if proc.returncode is not None else ""))
        run["log_tail"] = [line for line in tail if line.strip()][-8:]
    return run


def _package_dir() -> str | None:
    """Where this interpreter imports t2v_rt from (the runtime measured, when the benchmark
    runs in its environment)."""
    spec = importlib.util.find_spec("t2v_rt")
    return str(Path(spec.origin).parent) if spec and spec.origin else None


def write_ppm(path: Path, rgb: np.ndarray):
    h, w, _ = rgb.shape
    path.write_bytes(b"P6 %d %d 255\n" % (w, h) + np.ascontiguousarray(rgb).tobytes())


def _r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


# ---------------------------------------------------------------- the benchmark

def require(tools: list[str]):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pkgs = sorted({APT_PACKAGE.get(t, t) for t in missing if t in APT_PACKAGE})
        hint = f"; apt-get install -y {' '.join(pkgs)}" if pkgs else ""
        if "t2v-rt" in missing:
            hint += "; t2v-rt: pip install -e . (and activate its venv)"
        raise SystemExit(f"first_picture: missing {', '.join(missing)}{hint}")


def apt_version(package: str) -> str | None:
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True,
                       text=True)
    return r.stdout.strip() or None if r.returncode == 0 else None


def tool_version(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0].strip() if out else None


def wait_for_quiet(max_load: float, wait_s: float) -> list[float]:
    deadline = time.monotonic() + wait_s
    while True:
        load = os.getloadavg()
        if load[0] < max_load or time.monotonic() >= deadline:
            if load[0] >= max_load:
                print(f"first_picture: load average {load[0]:.2f} still >= {max_load} after "
                      f"{wait_s:.0f} s; measuring anyway (recorded)", file=sys.stderr)
            return [round(x, 2) for x in load]
        print(f"first_picture: load average {load[0]:.2f} >= {max_load}, waiting",
              file=sys.stderr)
        time.sleep(min(20.0, max(1.0, deadline - time.monotonic())))


def warm_up(prompt: str, env: dict):
    r = subprocess.run(["t2v-rt", "stream", prompt, "--frames", "2", "--no-realtime"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    if r.returncode != 0:
        raise SystemExit("first_picture: the warm-up stream failed: "
                         + r.stderr.decode(errors="replace").strip().splitlines()[-1])


def summary(runs: list[dict]) -> dict:
    out = {"runs": runs, "failed": sum(r["first_picture_s"] is None for r in runs)}
    others = [r["others_cpu_s"] for r in runs if r.get("others_cpu_s") is not None]
    out["others_cpu_s_max"] = max(others) if others else None
    for key in ("first_picture_s", "window_s", "first_byte_s", "picture_after_first_byte_s"):
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = ({"median": _r(statistics.median(values)), "min": min(values),
                     "max": max(values), "n": len(values)} if values else None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--formats", default=",".join(FORMATS),
                    help="containers passed as --format (default mpegts,nut,matroska); the "
                         "default container (no --format) is always measured too")
    ap.add_argument("--players", default=None,
                    help="ffplay,mpv (default: ffplay, and mpv when installed)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--colour", default=None, help="shape colour R,G,B (default: from the prompt)")
    ap.add_argument("--tolerance", type=int, default=60)
    ap.add_argument("--min-pixels", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=20.0, help="per warm run, seconds")
    ap.add_argument("--cold-timeout", type=float, default=120.0)
    ap.add_argument("--cold-repeats", type=int, default=1)
    ap.add_argument("--no-relay", action="store_true",
                    help="skip the relay runs (no first-byte times)")
    ap.add_argument("--max-load", type=float, default=0.5)
    ap.add_argument("--max-busy", type=float, default=0.15,
                    help="before each run, wait for a second in which other processes use "
                         "less than this fraction of the CPUs (default 0.15)")
    ap.add_argument("--load-wait", type=float, default=600.0,
                    help="the longest wait for a quiet machine, at the start and per run")
    ap.add_argument("--save-shots", type=Path, default=None,
                    help="folder: the first-picture screenshot of every run, as PPM")
    args = ap.parse_args()

    formats = [DEFAULT] + [f for f in args.formats.split(",") if f and f != DEFAULT]
    if args.players:
        players = [p for p in args.players.split(",") if p]
    else:
        players = ["ffplay"] + (["mpv"] if shutil.which("mpv") else [])
    require(["Xvfb", "xdpyinfo", "ffmpeg", "t2v-rt", *players])
    if args.colour:
        colour = tuple(int(c) for c in args.colour.split(","))
        colour_name = args.colour
    else:
        try:
            colour_name, colour = prompt_colour(args.prompt)
        except ValueError as e:
            raise SystemExit(f"first_picture: {e}") from None

    work = Path(tempfile.mkdtemp(prefix="t2v-first-picture-"))
    runtime_dir = work / "xdg"
    runtime_dir.mkdir(mode=0o700)
    warm_cache = work / "cache-warm"
    env = dict(os.environ, T2V_RT_CACHE=str(warm_cache), XDG_RUNTIME_DIR=str(runtime_dir))
    env.pop("WAYLAND_DISPLAY", None)
    # mpv's default video output (gpu) refuses a software OpenGL such as Xvfb's (and then falls
    # through to legacy outputs that never map a window here); a desktop has a real GPU. A
    # private MPV_HOME with `gpu-sw=yes` keeps mpv on its default output, and keeps the user's
    # own mpv.conf out of the measurement.
    mpv_home = work / "mpv"
    mpv_home.mkdir()
    (mpv_home / "mpv.conf").write_text("gpu-sw=yes\n")
    env["MPV_HOME"] = str(mpv_home)
    # A user's second run finds the runtime's bytecode cached (the warm-up writes it); an
    # environment that forbids writing it would make every run compile the runtime again.
    bytecode_env = env.pop("PYTHONDONTWRITEBYTECODE", None)
    x = None
    try:
        print("first_picture: warm-up (fills the ONNX cache)", file=sys.stderr)
        warm_up(args.prompt, env)
        load_start = wait_for_quiet(args.max_load, args.load_wait)
        x = Xvfb()
        env["DISPLAY"] = x.display
        root: dict = {}
        results: dict = {p: {f: {"plain": [], "relay": []} for f in formats} for p in players}
        variants = [False] if args.no_relay else [False, True]
        total = args.repeats * len(players) * len(formats) * len(variants)
        done = 0
        for _ in range(args.repeats):
            for player in players:
                for fmt in formats:
                    for relay in variants:
                        run = one_run(x.display, player, fmt, relay, args, env, colour,
                                      args.timeout, work, root, x.proc.pid)
                        done += 1
                        results[player][fmt]["relay" if relay else "plain"].append(run)
                        _progress(done, total, run)
        cold: dict = {}
        for player in players:
            cold[player] = []
            for _ in range(args.cold_repeats):
                cold_cache = Path(tempfile.mkdtemp(prefix="cache-cold-", dir=work))
                cenv = dict(env, T2V_RT_CACHE=str(cold_cache))
                run = one_run(x.display, player, DEFAULT, False, args, cenv, colour,
                              args.cold_timeout, work, root, x.proc.pid)
                run["cache"] = "cold (empty T2V_RT_CACHE)"
                cold[player].append(run)
                _progress(0, 0, run, label="cold")
                shutil.rmtree(cold_cache, ignore_errors=True)
        load_end = [round(v, 2) for v in os.getloadavg()]
    finally:
        if x is not None:
            x.close()
        shutil.rmtree(work, ignore_errors=True)

    table = {p: {f: {"plain": summary(results[p][f]["plain"]),
                     "relay": summary(results[p][f]["relay"]) if results[p][f]["relay"]
                     else None}
                 for f in formats} for p in players}
    fastest = {}
    for p in players:
        meds = {f: table[p][f]["plain"]["first_picture_s"]["median"] for f in formats
                if f != DEFAULT and table[p][f]["plain"]["first_picture_s"]}
        if meds:
            best = min(meds, key=meds.get)
            fastest[p] = {"format": best, "median_first_picture_s": meds[best],
                          "slower_by_s": {f: _r(m - meds[best]) for f, m in meds.items()}}
    all_runs = [r for p in players for f in formats for v in ("plain", "relay")
                for r in results[p][f][v]]
    others = [r["others_cpu_s"] for r in all_runs + [r for c in cold.values() for r in c]]
    gaps = [r["cadence_ms"] for r in all_runs if r["cadence_ms"]["median"] is not None]
    which = shutil.which("t2v-rt")
    payload = {
        "command": "t2v-rt stream PROMPT [--format F] | PLAYER -   (sh -c, no player flags)",
        "prompt": args.prompt,
        "criterion": {"colour": colour_name, "rgb": list(colour), "tolerance": args.tolerance,
                      "min_pixels": args.min_pixels,
                      "window": "first screenshot with >= 500 pixels unlike the empty root",
                      "picture": "first screenshot with >= min_pixels changed pixels within "
                                 "tolerance of the shape colour in every channel"},
        "display": f"Xvfb {WIDTH}x{HEIGHT}x24 -retro (black-and-white weave root), no window "
                   "manager; XDG_RUNTIME_DIR set to a private folder; mpv: MPV_HOME a private "
                   "folder whose mpv.conf holds only gpu-sw=yes (its default vo=gpu on Xvfb's "
                   "software OpenGL)",
        "screenshots": {
            "method": f"ffmpeg -f x11grab -framerate {GRAB_FPS} -draw_mouse 0, raw bgr0 on a "
                      "pipe, time.monotonic() on arrival, relative to the command's start",
            "target_ms": 1000 / GRAB_FPS,
            "achieved_ms": {"median": _r(statistics.median(g["median"] for g in gaps), 1),
                            "p95_worst_run": max(g["p95"] for g in gaps),
                            "max_gap": max(g["max"] for g in gaps)} if gaps else None,
        },
        "python_bytecode": "written by the warm-up"
        + (f" (PYTHONDONTWRITEBYTECODE={bytecode_env} removed from the runs' environment)"
           if bytecode_env is not None else ""),
        "repeats": args.repeats, "timeout_s": args.timeout,
        "cache": {"warm": "ONNX cache filled by one warm-up stream before timing",
                  "cold": "a fresh empty T2V_RT_CACHE, default container, once per player"},
        "load_average_start": load_start, "load_average_end": load_end,
        "quiet": {"max_busy": args.max_busy,
                  "rule": "before each run, a 1-second sample in which the machine's other "
                          "processes use less than max_busy of its CPUs",
                  "others_cpu_s_per_run": {
                      "median": _r(statistics.median(others), 2) if others else None,
                      "max": max(others) if others else None}},
        "tools": {
            "apt": {pkg: apt_version(pkg) for pkg in ("ffmpeg", "xvfb", "x11-utils", "mpv")},
            "ffplay": tool_version(["ffplay", "-version"]),
            "mpv": tool_version(["mpv", "--version"]) if "mpv" in players else None,
            "t2v-rt": which,
            "t2v_rt_package": _package_dir(),
        },
        "notes": [
            "plain: the README command exactly; relay: the same with a Python relay between "
            "t2v-rt and the player, to time the first byte (reported apart)",
            f"'{DEFAULT}' is the command without --format (the runtime's own default)",
            "times in seconds from the start of the command; a picture shown at time T is seen "
            "by the next screenshot, at most one cadence later (before_s is the screenshot "
            "before)",
        ],
        "results": table,
        "cold": cold,
        "fastest": fastest,
        "fastest_for_plain_ffplay": fastest.get("ffplay", {}).get("format"),
    }
    sys.path.insert(0, str(Path(__file__).parent))
    from common import write_result

    path = write_result("first_picture", payload)
    print_table(table, cold, fastest, payload, path)


def _progress(done: int, total: int, run: dict, label: str | None = None):
    fp = run["first_picture_s"]
    tag = label or f"{done}/{total}"
    print(f"  [{tag}] {run['player']:<6} {run['format']:<9} "
          f"{'relay' if run['relay'] else 'plain'}: window {_s(run['window_s'])}, "
          f"picture {_s(fp)}, first byte {_s(run['first_byte_s'])}, load "
          f"{run['load_average_1m']}, others {run['others_cpu_s']} CPU s"
          + (f"  ERROR {run['error']}" if "error" in run else ""),
          file=sys.stderr)


def _s(x: float | None) -> str:
    return "   -  " if x is None else f"{x:5.2f}s"


def print_table(table: dict, cold: dict, fastest: dict, payload: dict, path: Path):
    err = sys.stderr
    print("\ntime to first picture (s, plain command, warm cache): median [min-max]; window; "
          "relay runs: first byte, first picture, picture - first byte (the player's share)",
          file=err)
    print(f"{'player':<7}{'container':<10}{'first picture':>24}{'window':>9}{'first byte':>12}"
          f"{'relay pic':>11}{'pic-byte':>10}", file=err)
    for p, per in table.items():
        for f, s in per.items():
            fp, win = s["plain"]["first_picture_s"], s["plain"]["window_s"]
            rel = s["relay"]
            fb = rel["first_byte_s"] if rel else None
            rp = rel["first_picture_s"] if rel else None
            lag = rel["picture_after_first_byte_s"] if rel else None
            pic = (f"{fp['median']:.2f} [{fp['min']:.2f}-{fp['max']:.2f}]" if fp else "failed")
            if s["plain"]["failed"]:
                pic += f" ({s['plain']['failed']} failed)"
            print(f"{p:<7}{f:<10}{pic:>24}{_m(win):>9}{_m(fb):>12}{_m(rp):>11}{_m(lag):>10}",
                  file=err)
    for p, runs in cold.items():
        for r in runs:
            print(f"{p:<7}{'default':<10}{_s(r['first_picture_s']):>24}{_s(r['window_s']):>9}"
                  "   (cold cache)", file=err)
    for p, best in fastest.items():
        others = ", ".join(f"{f} +{d:.2f}s" for f, d in best["slower_by_s"].items()
                           if f != best["format"])
        print(f"fastest in {p}: {best['format']} ({best['median_first_picture_s']:.2f} s; "
              f"{others})", file=err)
    cad = payload["screenshots"]["achieved_ms"]
    if cad:
        print(f"screenshot cadence: median {cad['median']} ms, worst run p95 "
              f"{cad['p95_worst_run']} ms, largest gap {cad['max_gap']} ms", file=err)
    print(f"-> {path}", file=err)


def _m(s: dict | None) -> str:
    return "-" if not s else f"{s['median']:.2f}"


if __name__ == "__main__":
    main()
