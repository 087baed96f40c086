#!/usr/bin/env python3
"""The GPU kit (issue #13): every GPU path of t2v-rt checked in one command on a lent GPU.

    bash bench/gpu/run.sh                  # on the lent GPU machine: results into $OUT
    bash bench/gpu/run.sh --dry-run        # the rehearsal on a CPU machine (--out DIR)
    bash bench/gpu/run.sh --plan           # the plan only: steps, time boxes, wheels, $OUT rules
    python3 bench/gpu/kit.py fetch         # the carried wheels and headers (fetch-wheels.sh)
    python3 bench/gpu/kit.py collect DIR   # returned files -> bench/results/*-<gpu>.* (collect.sh)

Standard library only: it runs under the device image's python3 before anything is installed.
Each step runs in its own process group under a time box (SIGINT or SIGTERM at the box, or to
the leader alone a little before it; SIGKILL KILL_GRACE_S after the box); its output goes to a
log, its status (ok, failed, timeout, skipped), seconds, return code and last lines into the
record, and the run goes on. The boxes, with the grace periods and FINISH_S, add up to at most
TOTAL_S (8 minutes); a global deadline shrinks a step's box if earlier steps ran long. What
comes back ($OUT, at most 8 files): record.json (the kit's record: environment, device facts,
install, probes verbatim, every step, the checks, the summary), tests.xml (JUnit),
<bench>-gpu.json of each benchmark (bench/common.write_result, directed there by
T2V_RT_RESULTS) and logs.txt (every step's output). The summary table is
printed last. Exit status: 0 when every step ran or was recorded and the output checks pass
(steps may have failed: the summary says which); in --dry-run also every step must be ok or
skipped; 1 otherwise; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

KIT = Path(__file__).resolve().parent
ROOT = KIT.parent.parent
CARRY = ROOT / ".whl"                  # the one carried (git-ignored) folder
HEADERS = CARRY / "include"            # NVENC_INCLUDE_DIR: include/ffnvcodec/nvEncodeAPI.h
COMMIT_FILE = CARRY / "COMMIT"
WHEELS_TXT = KIT / "wheels.txt"

MIB = 2**20
TOTAL_S = 480                          # the 8 minutes, install included
KILL_GRACE_S = 3                       # after the box's first signal, before SIGKILL
FINISH_S = 8                           # the record, logs.txt and checks after the last step
WHEEL_BUDGET = 60 * MIB                # the carried folder (wheels + headers)
TREE_BUDGET = 64 * MIB                 # what travels: the working tree + carried paths
OUT_MAX_FILES, OUT_MAX_DEPTH, OUT_MAX_FILE, OUT_MAX_TOTAL = 8, 2, 16 * MIB, 64 * MIB
OUT_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
LOG_CAP = 1536 * 1024                  # per step in logs.txt (head and tail kept)
DEVICE_COMMAND = "bash bench/gpu/run.sh"
DEVICE_CARRY = [".whl"]
DEVICE_TIMEOUT_S = 540                 # the run call's timeout_s: TOTAL_S + 60 s of slack
CROSS = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
         "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
         "--platform", "manylinux2014_x86_64"]
NVENC_HEADER_FILES = ["nvEncodeAPI.h", "dynlink_cuda.h", "dynlink_cuviddec.h",
                      "dynlink_loader.h", "dynlink_nvcuvid.h"]
TEST_FILES = ["test_kernels.py", "test_triton_backend.py", "test_encoders.py",
              "test_tensorrt_backend.py"]
# Only these architectures on the device: one nvcc pass instead of six (the H200 is sm_90).
CUDA_ARCHS = "90"
# What stands in on the CPU machine for what the device image already has (dry run only).
IMAGE_STANDIN = ["scikit-build-core", "pybind11", "pytest-xdist", "pytest-timeout"]


def log(msg: str) -> None:
    print(f"[kit] {msg}", file=sys.stderr, flush=True)


# --- the plan ---------------------------------------------------------------------------------

@dataclass
class Step:
    name: str
    box: int               # seconds on the device
    dry_box: int           # seconds in the dry run (2-core CPU machine)
    what: str
    output: str | None = None          # the file it leaves in $OUT ({kind}: gpu or cpu)
    extra: tuple[str, ...] = ()        # more files it leaves there (not summarised)
    needs_cuda: bool = False
    first_signal: int = signal.SIGTERM
    early: float = 0.0     # first signal to the leader alone, this long before the box


STEPS = [
    Step("wheels", 10, 60, "the carried wheels into the install target (pip --no-index)"),
    Step("build", 80, 240, "the project from the working tree (pip --no-build-isolation, nvcc "
         f"sm_{CUDA_ARCHS}, carried nvEncodeAPI.h); on failure the source is mapped instead"),
    Step("facts", 20, 60, "nvidia-smi, the device (name, CC, memory, clocks), versions"),
    Step("tests", 110, 240, "pytest: -m gpu and the kernel, triton-backend, encoder, tensorrt tests "
         "(JUnit XML)", output="tests.xml", first_signal=signal.SIGINT, early=15),
    Step("fused_blocks", 80, 60, "bench/fused_blocks.py: fused vs cuDNN NCHW, channels-last, "
         "torch.compile; fp16, bf16; ceilings", output="fused_blocks-{kind}.json", needs_cuda=True,
         first_signal=signal.SIGINT, early=6),
    Step("backends", 70, 150, "bench/backends.py on CUDA, batches 1, 8, 64, 256",
         output="backends-{kind}.json", first_signal=signal.SIGINT, early=6),
    Step("encoders", 30, 120, "bench/encoders.py: nvJPEG, NV12 kernel bandwidth vs copy",
         output="encoders-{kind}.json"),
    Step("train_speed", 30, 120, "bench/train_speed.py, bf16 autocast on CUDA",
         output="train_speed-{kind}.json"),
    Step("probes", 15, 60, "what NVENC, TensorRT and every backend say here, verbatim; doctor"),
]
# The train suite (issue #18: --suite train): the training paths alone, for a lease that
# goes to training. No nvcc build (training needs neither the NVENC module nor an install):
# the source is mapped as a failed build would leave it.
TRAIN_STEPS = [
    Step("wheels", 10, 60, "the carried wheels into the install target (pip --no-index)"),
    Step("source", 5, 20, "t2v_rt/ and kernels/ from the working tree (no build: training needs "
         "no native module)"),
    Step("facts", 20, 60, "nvidia-smi, the device (name, CC, memory, clocks), versions"),
    Step("train_speed_generic", 45, 150, "bench/train_speed.py --arch stylegan-v --arch mocogan: "
         "the generic trainer's step at batches 8, 32, 128, bf16 autocast on CUDA", output="train_speed_generic-{kind}.json"),
    Step("train_shapes", 432, 240, "bench/gpu/train_shapes.py: render 5,000 clips, train "
         "stylegan-v at batches 32, 64, 128 side by side (eval: back here, on the returned "
         "generators)",
         output="train_shapes-{kind}.json", extra=("train_shapes-{kind}.tar.gz",),
         first_signal=signal.SIGINT, early=0),
]


@dataclass
class Suite:
    steps: list[Step]
    total_s: int           # the boxes, grace periods and finish add up to at most this
    timeout_s: int         # the run call's timeout_s: total_s + slack for the tool
    command: str


SUITES = {
    "kit": Suite(STEPS, TOTAL_S, DEVICE_TIMEOUT_S, DEVICE_COMMAND),
    "train": Suite(TRAIN_STEPS, 540, 590, DEVICE_COMMAND + " --suite train"),
}
RECORD, LOGS = "record.json", "logs.txt"


def budget(steps=STEPS, dry: bool = False) -> int:
    """Seconds the run takes at most: every box, its kill grace, and the finish."""
    return sum((s.dry_box if dry else s.box) + KILL_GRACE_S for s in steps) + FINISH_S


def expected_outputs(kind: str, steps=STEPS) -> list[str]:
    return [RECORD, LOGS] + [o.format(kind=kind) for s in steps
                             for o in ((s.output,) if s.output else ()) + s.extra]


# --- wheels -------------------------------------------------------------------------------------

@dataclass
class Wheel:
    requirement: str       # name==version
    file: str
    size: int
    sha256: str

    @property
    def dist_info(self) -> str:
        name, version = self.requirement.split("==")
        return f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"


def read_wheels(path: Path = WHEELS_TXT) -> list[Wheel]:
    """wheels.txt: one wheel a line, ``name==version file bytes sha256``; # comments."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 4 or "==" not in parts[0] or not parts[1].endswith(".whl") \
                or not parts[2].isdigit() or not re.fullmatch(r"[0-9a-f]{64}", parts[3]):
            raise ValueError(f"{path.name}:{n}: expected 'name==version file bytes sha256', "
                             f"got {line!r}")
        out.append(Wheel(parts[0], parts[1], int(parts[2]), parts[3]))
    names = [w.requirement.split("==")[0].lower() for w in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{path.name}: one version of each package (two stop the install)")
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def verify_carry(wheels: list[Wheel], hashes: bool = True) -> list[str]:
    """Problems with the carried folder: a listed wheel missing or different, extra wheels,
    the NVENC headers missing, the total over WHEEL_BUDGET."""
    problems = []
    for w in wheels:
        p = CARRY / w.file
        if not p.exists():
            problems.append(f"{w.file} missing (bash bench/gpu/fetch-wheels.sh)")
        elif p.stat().st_size != w.size or (hashes and sha256(p) != w.sha256):
            problems.append(f"{w.file} is not the listed file (size or sha256 differs)")
    listed = {w.file for w in wheels}
    extra = sorted(p.name for p in CARRY.glob("*.whl") if p.name not in listed)
    if extra:
        problems.append(f"unlisted wheels in .whl/ (two versions stop the install): {', '.join(extra)}")
    missing = [h for h in NVENC_HEADER_FILES if not (HEADERS / "ffnvcodec" / h).exists()]
    if missing:
        problems.append(f"NVENC headers missing in .whl/include/ffnvcodec: {', '.join(missing)}")
    total = folder_bytes(CARRY)
    if total > WHEEL_BUDGET:
        problems.append(f".whl/ holds {total / MIB:.1f} MiB, over the {WHEEL_BUDGET // MIB} MiB budget")
    return problems


def fetch(args) -> int:
    """Download the listed wheels (cp312 manylinux x86_64, no deps) into .whl/, check each
    against wheels.txt, drop unlisted wheels, copy the NVENC headers, write COMMIT."""
    try:
        wheels = read_wheels()
    except ValueError as e:
        print(f"fetch-wheels: {e}", file=sys.stderr)
        return 1
    total = sum(w.size for w in wheels)
    if total > WHEEL_BUDGET:
        print(f"fetch-wheels: wheels.txt lists {total / MIB:.1f} MiB, over {WHEEL_BUDGET // MIB} MiB",
              file=sys.stderr)
        return 1
    CARRY.mkdir(exist_ok=True)
    for w in wheels:
        p = CARRY / w.file
        if p.exists() and p.stat().st_size == w.size and sha256(p) == w.sha256:
            log(f"{w.file}: present, sha256 checked")
            continue
        log(f"{w.requirement}: downloading")
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *CROSS,
                            "-d", str(CARRY), w.requirement], capture_output=True, text=True)
        if r.returncode != 0 or not p.exists():
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"fetch-wheels: pip saved no {w.file} for {w.requirement} ({last})", file=sys.stderr)
            return 1
        if p.stat().st_size != w.size or sha256(p) != w.sha256:
            print(f"fetch-wheels: {w.file} differs from wheels.txt (size or sha256)", file=sys.stderr)
            return 1
    for p in CARRY.glob("*.whl"):
        if p.name not in {w.file for w in wheels}:
            log(f"removing unlisted {p.name}")
            p.unlink()
    src = Path(args.headers)
    if not (src / "nvEncodeAPI.h").exists():
        print(f"fetch-wheels: no nvEncodeAPI.h in {src} (apt install libffmpeg-nvenc-dev, or "
              "--headers DIR)", file=sys.stderr)
        return 1
    dst = HEADERS / "ffnvcodec"
    dst.mkdir(parents=True, exist_ok=True)
    for h in NVENC_HEADER_FILES:
        if (src / h).exists():
            shutil.copy2(src / h, dst / h)
    commit = git_commit() or "unknown"
    COMMIT_FILE.write_text(json.dumps({"commit": commit, "source_digest": source_digest(),
                                       "written": utc()}) + "\n")
    problems = verify_carry(wheels, hashes=False)
    if problems:
        print("fetch-wheels: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(f"fetch-wheels: .whl/ ready: {len(wheels)} wheel(s) + NVENC headers, "
          f"{folder_bytes(CARRY) / MIB:.1f} MiB of {WHEEL_BUDGET // MIB}; commit {commit}")
    return 0


# --- the commit and the source ------------------------------------------------------------

SOURCE_PARTS = ["t2v_rt", "kernels", "csrc", "bench", "tests", "pyproject.toml", "CMakeLists.txt"]


def source_digest() -> str:
    """sha256 over the source files (paths and bytes), the same with or without git: the
    device's copy has no history, so this says whether it is the commit recorded."""
    h = hashlib.sha256()
    files = []
    for part in SOURCE_PARTS:
        p = ROOT / part
        files += [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    for f in sorted(files):
        rel = f.relative_to(ROOT).as_posix()
        parts = rel.split("/")
        if rel.startswith("bench/results/") or rel.endswith((".pyc", ".so")) or any(
                x.startswith(".") or x == "__pycache__" or x.endswith(".egg-info") for x in parts):
            continue                   # results, caches, builds: what git ignores or we add
        h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def git_commit() -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("-dirty" if dirty else "")


def commit_info() -> dict:
    """The commit this run is of: $T2V_RT_COMMIT, else .whl/COMMIT (written by
    fetch-wheels.sh) when the source digest matches it, else git. .whl/COMMIT comes first: the
    device's copy of the tree once had a .git whose HEAD was a commit of a day before (the
    run of 2026-12-04 said 43cad04-dirty; its source digest was that of 99a52db)."""
    digest = source_digest()
    if os.environ.get("T2V_RT_COMMIT"):
        return {"commit": os.environ["T2V_RT_COMMIT"], "source": "T2V_RT_COMMIT", "source_digest": digest}
    try:
        carried = json.loads(COMMIT_FILE.read_text())
    except (OSError, ValueError):
        carried = None
    if carried and carried.get("source_digest") == digest:
        return {"commit": carried["commit"], "source": ".whl/COMMIT, source digest matches",
                "source_digest": digest}
    sha = git_commit()
    if sha:
        return {"commit": sha, "source": "git", "source_digest": digest}
    if not carried:
        return {"commit": "unknown", "source": "no git, no .whl/COMMIT", "source_digest": digest}
    return {"commit": f"{carried['commit']}+changes", "source_digest": digest,
            "source": f".whl/COMMIT of {carried.get('written')}: the source changed since "
                      "(run bash bench/gpu/fetch-wheels.sh right before the call)"}


def utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- $OUT checks --------------------------------------------------------------------------------

def check_out(out: Path) -> list[str]:
    """What breaks the rules of what comes back from the device ($OUT)."""
    problems, files, total = [], [], 0
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        for part in rel.parts:
            if not OUT_NAME.match(part):
                problems.append(f"{rel}: name outside letters, digits, '.', '_', '-'")
                break
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            problems.append(f"{rel}: not a plain file or folder")
        elif p.is_file():
            files.append(rel)
            size = p.stat().st_size
            total += size
            if len(rel.parts) - 1 > OUT_MAX_DEPTH:
                problems.append(f"{rel}: more than {OUT_MAX_DEPTH} folders down")
            if size > OUT_MAX_FILE:
                problems.append(f"{rel}: {size / MIB:.1f} MiB, over {OUT_MAX_FILE // MIB} MiB")
    if len(files) > OUT_MAX_FILES:
        problems.append(f"{len(files)} files, over {OUT_MAX_FILES}")
    if total > OUT_MAX_TOTAL:
        problems.append(f"{total / MIB:.1f} MiB in all, over {OUT_MAX_TOTAL // MIB} MiB")
    return problems


def check_records(out: Path) -> list[str]:
    """Each JSON parses and carries environment.device/commit/versions; tests.xml parses."""
    problems = []
    for p in sorted(out.glob("*.json")):
        try:
            env = json.loads(p.read_text()).get("environment") or {}
        except ValueError as e:
            problems.append(f"{p.name}: not JSON ({e})")
            continue
        missing = [k for k in ("device", "commit", "python", "torch") if not env.get(k)]
        if missing:
            problems.append(f"{p.name}: environment lacks {', '.join(missing)}")
    for p in sorted(out.glob("*.xml")):
        try:
            ET.parse(p)
        except ET.ParseError as e:
            problems.append(f"{p.name}: not XML ({e})")
    return problems


# --- running steps ----------------------------------------------------------------------------

@dataclass
class Result:
    name: str
    status: str = "pending"            # ok | failed | timeout | skipped
    seconds: float = 0.0
    box: int = 0
    rc: int | None = None
    command: list[str] = field(default_factory=list)
    error: str = ""
    note: str = ""
    output: str | None = None


def tail(path: Path, lines: int = 12) -> str:
    """The last lines of a step's log (its command line, first in the log, left out)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.strip().splitlines() if not line.startswith("$ ")]
    return "\n".join(kept[-lines:])


def headline(text: str) -> str:
    """The line of an error that says most: the last naming an error, else the last."""
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    for pattern in (r"\w+(Error|Exception): |CMake Error|fatal error|time box",
                    r"error:|FAILED|Failed|refused|not found"):
        said = [line for line in lines if re.search(pattern, line) and not line.startswith("hint:")]
        if said:
            return said[-1]
    return (lines or [""])[-1]


def run_boxed(argv: list[str], box: float, logfile: Path, env: dict | None, first_signal: int,
              early: float = 0.0, cwd: Path = ROOT) -> tuple[str, int | None, float]:
    """argv in its own process group, output to logfile; (ok|failed|timeout, rc, seconds).

    At ``box`` seconds the group gets ``first_signal``, and SIGKILL KILL_GRACE_S later. With
    ``early``, the leader alone gets ``first_signal`` that many seconds before the box (pytest
    with xdist then stops its workers and writes its report) and the group SIGTERM at the box."""
    t0 = time.monotonic()
    stages = [(box - early, False, first_signal)] if early else []
    stages += [(box, True, signal.SIGTERM if early else first_signal),
               (box + KILL_GRACE_S, True, signal.SIGKILL)]
    with open(logfile, "ab") as f:
        f.write(f"$ {' '.join(argv)}\n".encode())
        f.flush()
        try:
            p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                 start_new_session=True)
        except OSError as e:
            f.write(f"cannot start: {e}\n".encode())
            return "failed", None, time.monotonic() - t0
        timed_out = False
        for at, group, sig in stages:
            try:
                p.wait(timeout=max(0.05, t0 + at - time.monotonic()))
                break
            except subprocess.TimeoutExpired:
                if not timed_out:
                    f.write(f"\n[kit] time box of {box:.0f} s reached: stopping\n".encode())
                    f.flush()
                timed_out = True
                try:
                    os.killpg(p.pid, sig) if group else p.send_signal(sig)
                except ProcessLookupError:
                    pass
        p.wait()
    _reap(p.pid)
    status = "timeout" if timed_out else ("ok" if p.returncode == 0 else "failed")
    return status, p.returncode, time.monotonic() - t0


def _reap(group: int) -> None:
    """What a step left running in its process group (compile workers, test workers) ends
    with it: the next step gets the GPU and the cores to itself."""
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Kit:
    def __init__(self, out: Path, dry: bool, work: Path, suite: str = "kit"):
        self.out, self.dry, self.work = out, dry, work
        self.suite_name, self.suite = suite, SUITES[suite]
        self.steps = self.suite.steps
        self.start = time.monotonic()
        self.deadline = self.start + (budget(self.steps, dry=True) if dry else self.suite.total_s)
        self.site, self.target = work / "site", work / "t2v"
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.results: list[Result] = []
        self.facts: dict = {}
        self.probes: dict = {}
        self.install: dict = {}
        self.commit = commit_info()
        self.python, self.extra_path = self.step_python()
        self.env = self.step_env()

    # The Python the steps run under: the kit's own (the device image's python3), except
    # where it holds an editable install of t2v_rt (this worktree's .venv), whose import hook
    # would shadow the install target: then its base interpreter with the venv's packages as
    # a plain path (no .pth hooks run from PYTHONPATH).
    def step_python(self) -> tuple[str, list[str]]:
        if sys.prefix != sys.base_prefix:
            sp = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
            if any(sp.glob("*editable*t2v_rt*")):
                return sys._base_executable, [str(sp)]
        return sys.executable, []

    def step_env(self) -> dict:
        env = dict(os.environ)
        standin = [str(self.work / "standin")] if self.dry else []
        path = [str(self.target), str(self.site), str(KIT), *standin, *self.extra_path]
        env.update(PYTHONPATH=os.pathsep.join(path), PYTHONSAFEPATH="1", PYTHONUNBUFFERED="1",
                   T2V_RT_RESULTS=str(self.out),
                   T2V_RT_COMMIT=self.commit["commit"], T2V_RT_CACHE=str(self.work / "cache"),
                   NVENC_INCLUDE_DIR=str(HEADERS))
        if not shutil.which("nvcc", path=env.get("PATH")) and Path("/usr/local/cuda/bin/nvcc").exists():
            env["PATH"] = "/usr/local/cuda/bin" + os.pathsep + env.get("PATH", "")
        return env

    @property
    def kind(self) -> str:
        """gpu or cpu, as the facts say (without facts: what the mode expects)."""
        if "cuda" not in self.facts:
            return "cpu" if self.dry else "gpu"
        return "gpu" if self.facts["cuda"].get("available") else "cpu"

    def box(self, step: Step) -> float:
        left = self.deadline - time.monotonic() - KILL_GRACE_S - FINISH_S
        return min(step.dry_box if self.dry else step.box, left)

    # --- the steps' commands ---
    def pip(self) -> list[str]:
        return [self.python, "-m", "pip"] if not self.extra_path else [sys.executable, "-m", "pip"]

    def command(self, step: Step, box: float) -> list[str] | None:
        py, d = self.python, self.dry
        if step.name == "wheels":
            files = [str(CARRY / w.file) for w in read_wheels()]
            return [*self.pip(), "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--disable-pip-version-check",
                    *(CROSS if d else []), "--target", str(self.site), *files]
        if step.name == "build":
            return [*self.pip(), "install", "-v", "--no-build-isolation", "--no-deps", "--no-index",
                    "--no-cache-dir", "--disable-pip-version-check", "--target", str(self.target),
                    "-C", f"cmake.define.T2V_RT_CUDA_ARCHITECTURES={CUDA_ARCHS}",
                    "-C", f"build-dir={self.work / 'build'}", str(ROOT)]
        if step.name in ("facts", "probes"):
            return [py, str(KIT / "kit.py"), step.name, str(self.work / f"{step.name}.json")]
        if step.name == "tests":
            argv = [py, "-m", "pytest", "-p", "kit_select", "-p", "no:cacheprovider", "tests",
                    "-q", "-rfEs", "--durations=15", f"--junitxml={self.out / 'tests.xml'}"]
            if self.has("xdist") and not d:     # 2 workers on 2 cores: slower than none
                argv += ["-n", "8"]
            if self.has("pytest_timeout"):
                argv += ["--timeout", "60"]
            if d:
                argv += ["-m", "not slow"]    # the TensorRT-RTX engine builds: minutes on 2 cores
            return argv
        bench = str(ROOT / "bench" / f"{step.name}.py")
        spare = max(10, int(box) - 25)        # process start, model load, writing the result
        if step.name == "fused_blocks":
            if self.kind == "cpu":
                return [py, bench, "--help"]
            return [py, bench, "--compile-mode", "default", "--rep-ms", "50", "--budget-s", str(spare)]
        if step.name == "backends":
            if d:
                return [py, bench, "--models", "bundled", "--batches", "1", "--repeats", "1",
                        "--seconds", "0.2"]
            return [py, bench, "--models", "bundled,stylegan-v", "--repeats", "2", "--seconds", "0.5",
                    "--skip", "torch-compile-fp16", "--budget-s", str(spare)]
        if step.name == "encoders":
            return [py, bench, "--frames", "16" if d else "96", "--batch", "8" if d else "16"]
        if step.name == "source":
            return [py, "-c", "pass"]
        if step.name == "train_speed_generic":
            bench = str(ROOT / "bench" / "train_speed.py")
            if d:
                return [py, bench, "--arch", "stylegan-v", "--arch", "mocogan", "--steps", "1",
                        "--repeats", "1"]
            return [py, bench, "--arch", "stylegan-v", "--arch", "mocogan", "--steps", "10",
                    "--repeats", "3", "--more-batches", "32,128"]
        if step.name == "train_shapes":
            script = str(KIT / "train_shapes.py")
            return [py, script, "--budget-s", str(max(10, int(box) - 12)), *(["--dry-run"] if d else [])]
        if step.name == "train_speed":
            if d:
                return [py, bench, "--steps", "1", "--repeats", "1", "--batch", "2"]
            return [py, bench, "--steps", "5", "--repeats", "2"]
        raise ValueError(step.name)

    def has(self, module: str) -> bool:
        """Whether the steps' Python can import ``module`` (looked up, not imported)."""
        import importlib.util

        for p in self.env["PYTHONPATH"].split(os.pathsep):
            if (Path(p) / module).is_dir() or (Path(p) / f"{module}.py").exists():
                return True
        return importlib.util.find_spec(module) is not None

    # --- running ---
    def run(self) -> int:
        log(f"{'dry run' if self.dry else 'device run'} ({self.suite_name}): {len(self.steps)} steps, at most "
            f"{(self.deadline - self.start):.0f} s; commit {self.commit['commit']}; results in {self.out}")
        if self.dry:
            self.image_standin()
        for step in self.steps:
            self.results.append(self.run_step(step))
            self.write_record()
        checks = self.finish()
        self.print_summary()
        failed = [r.name for r in self.results if r.status not in ("ok", "skipped")]
        if checks:
            return 1
        return 1 if (self.dry and failed) else 0

    def run_step(self, step: Step) -> Result:
        r = Result(step.name, output=step.output)
        box = self.box(step)
        r.box = int(box)
        logfile = self.logs / f"{step.name}.log"
        if box < 5:
            r.status, r.error = "skipped", "no time left before the 8-minute deadline"
            return self.done(r)
        if step.name == "wheels":
            try:
                missing = [w.file for w in read_wheels() if not (CARRY / w.file).exists()]
            except (OSError, ValueError) as e:
                missing = [str(e)]
            if missing:
                r.status = "failed"
                r.error = f"not carried: {', '.join(missing)} (bash bench/gpu/fetch-wheels.sh; carry .whl)"
                return self.done(r)
        if step.needs_cuda and self.kind == "cpu":
            r.note = "needs a CUDA GPU; CPU form: --help"
        if step.name == "build":
            (self.work / "build").mkdir(exist_ok=True)
        argv = self.command(step, box)
        r.command = argv
        log(f"{step.name}: started (box {box:.0f} s)")
        r.status, r.rc, r.seconds = run_boxed(argv, box, logfile, self.env, step.first_signal,
                                              min(step.early, box / 3))
        if r.status != "ok":
            r.error = tail(logfile)
        cpu_form = step.needs_cuda and self.kind == "cpu"
        r.output = step.output.format(kind=self.kind) if step.output and not cpu_form else None
        try:
            getattr(self, f"after_{step.name}", lambda r, logfile: None)(r, logfile)
        except Exception as e:  # noqa: BLE001 - a summary line must not stop the run
            r.note = f"(kit: could not summarise: {type(e).__name__}: {e})"
        if cpu_form and r.status == "ok":
            r.status, r.error = "skipped", "needs a CUDA GPU (its --help ran: the script and its flags parse)"
        if r.output and not (self.out / r.output).exists():
            r.error = (r.error + "\n" if r.error else "") + f"no {r.output} written"
            r.status = "failed" if r.status == "ok" else r.status
        return self.done(r)

    def done(self, r: Result) -> Result:
        line = f"{r.name}: {r.status} in {r.seconds:.1f} s (box {r.box} s)"
        if r.status not in ("ok",):
            line += f": {headline(r.error or r.note)}"
        log(line)
        return r

    def image_standin(self) -> None:
        """Dry run: the packages the device image has and this Python may lack, into
        work/standin (from PyPI; reused from /tmp between dry runs)."""
        import importlib.util

        cache = Path(tempfile.gettempdir()) / "t2v-rt-kit-standin"
        modules = ["scikit_build_core", "pybind11", "xdist", "pytest_timeout"]
        need = [p for p, m in zip(IMAGE_STANDIN, modules) if importlib.util.find_spec(m) is None
                and not (cache / m).is_dir() and not (cache / f"{m}.py").exists()]
        if need:
            log(f"dry run: installing what the device image already has: {', '.join(need)}")
            r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                "--target", str(cache), *need], capture_output=True, text=True)
            if r.returncode != 0:
                log(f"could not install {', '.join(need)}: {(r.stderr.strip().splitlines() or [''])[-1]}")
        if cache.exists():
            os.symlink(cache, self.work / "standin")

    # --- after each step ---
    def after_wheels(self, r: Result, logfile: Path) -> None:
        if r.status != "ok":
            return
        problems = []
        for w in read_wheels():
            info = self.site / w.dist_info
            if not (info / "RECORD").exists():
                problems.append(f"{w.dist_info} not in the target")
                continue
            files = [line.split(",")[0] for line in (info / "RECORD").read_text().splitlines() if line]
            absent = [f for f in files if not f.startswith("..") and not (self.site / f).exists()]
            if absent:
                problems.append(f"{w.file}: {len(absent)} of {len(files)} files not unpacked ({absent[0]})")
        self.install["wheels"] = {"target": str(self.site), "wheels": [w.file for w in read_wheels()],
                                  "problems": problems}
        if problems:
            r.status, r.error = "failed", "; ".join(problems)
        else:
            r.note = f"{len(read_wheels())} wheel(s) unpacked, every file of their RECORD present"

    def after_build(self, r: Result, logfile: Path) -> None:
        text = logfile.read_text(errors="replace")
        native = sorted(self.target.glob("t2v_rt/_nvenc*.so"))
        kernels = (self.target / "t2v_rt" / "kernels" / "__init__.py").exists()
        info = {"target": str(self.target), "nvenc_module": native[0].name if native else None,
                "kernels": kernels, "nvenc_include_dir": str(HEADERS),
                "cmake_says": [m.strip() for m in re.findall(r"t2v-rt: (?!filename)[^\n]*", text)][:6]}
        if r.status == "ok" and not native:
            r.status = "failed"
            r.error = "built without the NVENC module: " + "; ".join(info["cmake_says"][-2:])
        if r.status == "ok" and not kernels:
            r.status, r.error = "failed", "t2v_rt/kernels missing from the install"
        if r.status == "ok":
            info["mode"] = "installed (pip --no-build-isolation --target)"
            self.env["T2V_RT_REQUIRE_NATIVE"] = "1"
            r.note = f"{native[0].name}, sm_{CUDA_ARCHS}"
        else:
            self.map_source()
            info["mode"] = "from source (the build failed): no NVENC module"
            self.env.pop("T2V_RT_REQUIRE_NATIVE", None)   # the encoder tests then skip, saying why
            r.note = "continuing from source"
        self.install["build"] = info

    def map_source(self) -> None:
        """The package as the wheel lays it out, without the native module (kernels/ mapped to
        t2v_rt/kernels, as bench/common does)."""
        shutil.rmtree(self.target, ignore_errors=True)
        shutil.copytree(ROOT / "t2v_rt", self.target / "t2v_rt",
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        shutil.copytree(ROOT / "kernels", self.target / "t2v_rt" / "kernels",
                        ignore=shutil.ignore_patterns("__pycache__"))

    def after_source(self, r: Result, logfile: Path) -> None:
        self.map_source()
        self.install["build"] = {"target": str(self.target), "nvenc_module": None, "kernels": True,
                                 "mode": "from source (suite train: no build)"}
        r.note = "t2v_rt/ and kernels/ mapped; no NVENC module (not built in this suite)"

    def after_train_speed_generic(self, r: Result, logfile: Path) -> None:
        d = self.bench_json(r)
        if d:
            r.note = f"{d['precision']}, batch {d['batch_clips']}: " + ", ".join(
                f"{k} {v['clips_per_s']:.0f} clips/s" for k, v in d["results"].items())

    def after_train_shapes(self, r: Result, logfile: Path) -> None:
        d = self.bench_json(r)
        if not d:
            return
        parts = []
        for name, row in d.get("runs", {}).items():
            ev, sp = row.get("eval") or {}, row.get("speed") or {}
            acc = "; ".join(f"{g} shape {v['accuracy']['shape']:.0%} speed {v['accuracy']['speed']:.0%}"
                            for g, v in ev.items() if isinstance(v, dict))
            parts.append(f"{name} {sp.get('steps', '?')} steps {acc or 'no eval'}")
        r.note = " | ".join(parts) or "no run finished"

    def after_facts(self, r: Result, logfile: Path) -> None:
        try:
            self.facts = json.loads((self.work / "facts.json").read_text())
        except (OSError, ValueError) as e:
            if r.status == "ok":
                r.status, r.error = "failed", f"no facts written ({e})"
            return
        c = self.facts.get("cuda", {})
        r.note = (f"{c.get('name')}, CC {c.get('capability')}, {c.get('memory_gib')} GiB"
                  if c.get("available") else "no CUDA device visible to torch")

    def after_tests(self, r: Result, logfile: Path) -> None:
        xml = self.out / "tests.xml"
        try:
            root = ET.parse(xml).getroot()
        except (OSError, ET.ParseError):
            return
        suites = [root] if root.tag == "testsuite" else list(root)
        count = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
        r.note = (("interrupted at the time box: " if r.status == "timeout" else "")
                  + f"{count['tests'] - count['failures'] - count['errors'] - count['skipped']} passed, "
                  f"{count['failures']} failed, {count['errors']} errors, {count['skipped']} skipped")
        bad = [f"{c.get('classname')}::{c.get('name')}" for s in suites for c in s.iter("testcase")
               if c.find("failure") is not None or c.find("error") is not None]
        if bad:
            r.error = "failing: " + ", ".join(bad[:10]) + ("" if len(bad) <= 10 else f" (+{len(bad) - 10})")

    def after_probes(self, r: Result, logfile: Path) -> None:
        try:
            self.probes = json.loads((self.work / "probes.json").read_text())
        except (OSError, ValueError) as e:
            if r.status == "ok":
                r.status, r.error = "failed", f"no probes written ({e})"
            return
        usable = [n for n, v in self.probes["backends"].items() if v["ok"]]
        r.note = (f"nvenc {self.probes['nvenc'].split(':')[0]}, tensorrt "
                  f"{self.probes['tensorrt_create'].split(':')[0]}; backends usable: {', '.join(usable)}")

    def bench_json(self, r: Result) -> dict | None:
        try:
            return json.loads((self.out / r.output).read_text()) if r.output else None
        except (OSError, ValueError):
            return None

    def after_fused_blocks(self, r: Result, logfile: Path) -> None:
        d = self.bench_json(r)
        if not d:
            return
        rows = d["rows"]
        ceil = ", ".join(f"{k} {v['matmul_tflops']:.0f} TFLOP/s {v['copy_gbs']:.0f} GB/s"
                         for k, v in d["ceilings"].items())
        speed = sorted(row.get("speedup_vs_cudnn", 0) for row in rows)
        r.note = (("interrupted; " if d.get("interrupted") else "")
                  + f"{len(rows)} blocks, {len(d.get('left_out', []))} left out; fused vs cuDNN "
                  f"median {speed[len(speed) // 2]:.2f}x; ceilings {ceil}" if rows else "no blocks measured")

    def after_backends(self, r: Result, logfile: Path) -> None:
        d = self.bench_json(r)
        measured = [b for b, row in (d or {}).get("batches", {}).items() if row]
        if not measured:
            return
        batch = max(measured, key=int)
        row = d["batches"][batch]
        best = sorted(row, key=lambda k: -row[k]["frames_per_s"])[:3]
        r.note = (("interrupted; " if d.get("interrupted") else "") + f"batch {batch}: "
                  + ", ".join(f"{k} {row[k]['frames_per_s']:.0f}" for k in best)
                  + f" fps; {len(d['skipped'])} left out, {len(d.get('left_out', []))} not timed")

    def after_encoders(self, r: Result, logfile: Path) -> None:
        d = self.bench_json(r)
        if not d:
            return
        parts = [f"{k} {v['frames_per_s']:.0f} fps" for k, v in d["encoders"].items()]
        nv12 = [x["share_of_copy"] for x in d.get("nv12_kernel", []) if "share_of_copy" in x]
        if nv12:
            parts.append(f"NV12 kernel up to {max(nv12):.0%} of copy")
        r.note = ", ".join(parts) + f"; not run: {', '.join(d['skipped']) or 'none'}"

    def after_train_speed(self, r: Result, logfile: Path) -> None:
        d = self.bench_json(r)
        if not d:
            return
        r.note = f"{d['precision']}: " + ", ".join(f"{k} {1e3 * v['s_per_step']:.0f} ms/step"
                                                   for k, v in d["results"].items())

    # --- the record ---
    def environment(self) -> dict:
        f = self.facts
        v = f.get("versions", {})
        c = f.get("cuda", {})
        return {"device": f.get("device") or f"unknown (facts: {platform.machine()} {platform.node()})",
                "gpu": c.get("name") if c.get("available") else None,
                "python": v.get("python") or platform.python_version(),
                "torch": v.get("torch") or "unknown (facts step failed)",
                **{k: v.get(k) for k in ("triton", "onnxruntime", "onnx", "av", "numpy", "t2v_rt")},
                "cuda_runtime": v.get("torch_cuda"), "driver": f.get("driver"),
                "commit": self.commit["commit"], "commit_source": self.commit["source"],
                "source_digest": self.commit["source_digest"], "date": utc()}

    def write_record(self, checks: list[str] | None = None) -> None:
        record = {"kit": "bench/gpu/kit.py (issue #13)", "suite": self.suite_name, "mode": "dry-run" if self.dry else "device",
                  "environment": self.environment(), "facts": self.facts, "install": self.install,
                  "probes": self.probes, "time_budget_s": int(self.deadline - self.start),
                  "elapsed_s": round(time.monotonic() - self.start, 1),
                  "steps": [r.__dict__ for r in self.results], "checks": checks,
                  "summary": self.summary_rows()}
        (self.out / RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
        self.write_logs()

    def write_logs(self) -> None:
        with open(self.out / LOGS, "wb") as out:
            for step in self.steps:
                p = self.logs / f"{step.name}.log"
                if not p.exists():
                    continue
                data = p.read_bytes()
                if len(data) > LOG_CAP:
                    cut = len(data) - LOG_CAP
                    data = data[:LOG_CAP // 4] + f"\n[... {cut} bytes cut ...]\n".encode() + data[-(LOG_CAP * 3 // 4):]
                out.write(f"===== {step.name} =====\n".encode() + data + b"\n")

    def finish(self) -> list[str]:
        self.write_record()
        checks = check_out(self.out) + check_records(self.out)
        allowed = set(expected_outputs(self.kind, self.steps))
        extra = sorted(p.name for p in self.out.iterdir() if p.name not in allowed)
        if extra:
            checks.append(f"unexpected files in $OUT: {', '.join(extra)}")
        if budget(self.steps) > self.suite.total_s:
            checks.append(f"the device time boxes add up to {budget(self.steps)} s, over "
                          f"{self.suite.total_s} s")
        if time.monotonic() - self.start > self.deadline - self.start + 2:
            checks.append(f"the run took {time.monotonic() - self.start:.0f} s, over its "
                          f"{self.deadline - self.start:.0f} s")
        self.write_record(checks)
        return checks

    def summary_rows(self) -> list[list[str]]:
        rows = []
        for r in self.results:
            text = r.note if r.status == "ok" else headline(r.error or r.note)
            if r.status not in ("ok", "skipped") and r.note:
                text = f"{r.note}; {text}"
            text = " ".join((text or "").split())
            rows.append([r.name, r.status, f"{r.seconds:.1f}", str(r.box),
                         text if len(text) <= 120 else text[:117] + "..."])
        return rows

    def print_summary(self) -> None:
        record = json.loads((self.out / RECORD).read_text())
        p = self.probes
        print()
        print(f"GPU kit ({record['mode']}), {record['environment']['device']}, commit "
              f"{self.commit['commit']}, {record['elapsed_s']} s of {record['time_budget_s']} s "
              f"(suite {self.suite_name}; device time boxes: {budget(self.steps)} s of {self.suite.total_s} s)")
        if p:
            print(f"  NVENC probe: {p.get('nvenc')}")
            print(f"  tensorrt backend: {p.get('tensorrt_create')}")
        for c in record["checks"] or []:
            print(f"  CHECK FAILED: {c}")
        print(f"  $OUT: {', '.join(sorted(x.name for x in self.out.iterdir()))}")
        header = ["step", "status", "s", "box", "result"]
        rows = [header] + self.summary_rows()
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        print()
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[4])
        sys.stdout.flush()


# --- facts and probes (run as steps, under the installed package) ------------------------------

def sh(argv: list[str], timeout: float = 8) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable: {e}"
    return (r.stdout + r.stderr).strip()


def facts(path: Path) -> int:
    from importlib import metadata

    f: dict = {"date": utc(), "host": platform.node(), "machine": platform.machine()}
    f["nvidia_smi"] = sh(["nvidia-smi"])
    q = ("name,compute_cap,memory.total,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,"
         "driver_version,power.limit,pstate,temperature.gpu,utilization.gpu")
    f["nvidia_smi_query"] = {"fields": q, "csv": sh(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"])}
    f["nvcc"] = sh(["nvcc", "--version"]).splitlines()[-2:]
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    f["cpu"], f["cpu_count"] = cpu, os.cpu_count()
    versions = {"python": platform.python_version()}
    for pkg in ("torch", "triton", "onnx", "onnxruntime", "onnxscript", "av", "numpy", "safetensors",
                "pytest", "pytest-benchmark", "pytest-xdist", "pytest-timeout", "scikit-build-core",
                "pybind11", "t2v-rt", "tensorrt-rtx-cu13", "tensorrt", "torchvision"):
        try:
            versions[pkg.replace("-", "_")] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg.replace("-", "_")] = None
    import torch

    import t2v_rt

    versions["torch_cuda"] = torch.version.cuda
    versions["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    f["t2v_rt_from"] = str(Path(t2v_rt.__file__).parent)
    try:
        from t2v_rt import _nvenc  # noqa: F401

        f["nvenc_module"] = "built"
    except ImportError as e:
        f["nvenc_module"] = f"not built: {e}"
    f["versions"] = versions
    c: dict = {"available": torch.cuda.is_available()}
    if c["available"]:
        p = torch.cuda.get_device_properties(0)
        c.update(name=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                 multiprocessors=p.multi_processor_count, device_count=torch.cuda.device_count(),
                 l2_cache_mib=round(getattr(p, "L2_cache_size", 0) / MIB, 1))
        f["driver"] = f["nvidia_smi_query"]["csv"].split(",")[7].strip() if f["nvidia_smi_query"]["csv"].count(",") >= 7 else None
    f["cuda"] = c
    f["device"] = c.get("name") or f"CPU: {cpu}, {os.cpu_count()} logical cores"
    path.write_text(json.dumps(f, indent=2) + "\n")
    print(json.dumps({k: f[k] for k in ("device", "cuda", "versions", "nvenc_module")}, indent=2))
    return 0


def probes(path: Path) -> int:
    """What each GPU path says on this machine, verbatim."""
    import torch

    from t2v_rt.backends import BACKENDS, create_backend, probe
    from t2v_rt.encode.encoders import ENCODERS, encoder_problem
    from t2v_rt.encode.nvenc import nvenc_status
    from t2v_rt.errors import RuntimeUnavailable

    cuda = torch.cuda.is_available()
    out: dict = {}
    ok, words = nvenc_status()
    out["nvenc"] = f"{'available' if ok else 'unavailable'}: {words}"
    out["backends"] = {name: dict(zip(("ok", "says"), probe(name))) for name in BACKENDS}
    try:
        be = create_backend("tensorrt")
        out["tensorrt_create"] = f"started: {be.describe()}"
        be.close()
    except RuntimeUnavailable as e:
        out["tensorrt_create"] = f"refused: {e}"
    fmt = {"raw": "y4m", "nvjpeg": "nut"}
    out["encoders"] = {name: encoder_problem(name, fmt.get(name, "mpegts"), cuda) or "usable"
                       for name in ENCODERS}
    from t2v_rt.doctor import report

    out["doctor"] = report()
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "doctor"}, indent=2))
    print(out["doctor"])
    return 0


# --- plan -------------------------------------------------------------------------------------

def plan(dry: bool, suite: str = "kit") -> int:
    """The step table, the time budget, the wheels against their budget, the $OUT rules, the
    call's size: everything checkable without running a step."""
    problems = []
    su = SUITES[suite]
    steps = su.steps
    print(f"GPU kit plan, suite {suite} ({'dry run' if dry else 'device'}): {su.command}, carry "
          f"{DEVICE_CARRY}, timeout_s {su.timeout_s}")
    print(f"{'step':19s} {'box s':>5s} {'dry s':>5s}  output / what")
    for s in steps:
        print(f"{s.name:19s} {s.box:5d} {s.dry_box:5d}  {(s.output or '-').format(kind='gpu')}: {s.what}")
    total = budget(steps)
    print(f"time: boxes {sum(s.box for s in steps)} s + {len(steps)} x {KILL_GRACE_S} s kill grace + "
          f"{FINISH_S} s finish = {total} s (limit {su.total_s} s; the call's timeout_s {su.timeout_s})")
    if total > su.total_s:
        problems.append(f"time boxes add up to {total} s, over {su.total_s} s")
    if su.timeout_s < su.total_s + 30 or su.timeout_s > 600:
        problems.append(f"timeout_s {su.timeout_s} leaves no slack over {su.total_s} s, or is over 600")
    if len(su.command) > 2000:
        problems.append("the run command is over 2000 characters")
    try:
        wheels = read_wheels()
    except (OSError, ValueError) as e:
        wheels = []
        problems.append(str(e))
    listed = sum(w.size for w in wheels)
    for w in wheels:
        print(f"wheel: {w.requirement:22s} {w.size / MIB:6.1f} MiB  {w.file}")
    print(f"wheels: {listed / MIB:.1f} MiB listed (budget {WHEEL_BUDGET // MIB} MiB, headers included)")
    if listed > WHEEL_BUDGET:
        problems.append(f"wheels.txt lists {listed / MIB:.1f} MiB, over {WHEEL_BUDGET // MIB} MiB")
    if not any(w.requirement.startswith("av==") for w in wheels):
        problems.append("wheels.txt lacks av (PyAV: not in the device image)")
    if CARRY.exists():
        carried = verify_carry(wheels, hashes=False)
        print(f"carried .whl/: {folder_bytes(CARRY) / MIB:.1f} MiB; "
              + ("ready" if not carried else "; ".join(carried)))
    else:
        print("carried .whl/: not fetched here (bash bench/gpu/fetch-wheels.sh)")
    tree = tree_bytes()
    if tree is not None:
        travels = tree + max(folder_bytes(CARRY), listed)
        print(f"travels: working tree {tree / MIB:.1f} MiB + carried {max(folder_bytes(CARRY), listed) / MIB:.1f} "
              f"MiB = {travels / MIB:.1f} MiB (limit {TREE_BUDGET // MIB} MiB)")
        if travels > TREE_BUDGET:
            problems.append(f"{travels / MIB:.1f} MiB would travel, over {TREE_BUDGET // MIB} MiB")
    outs = expected_outputs("gpu", steps)
    print(f"$OUT: {', '.join(outs)} ({len(outs)} files of {OUT_MAX_FILES}, none in folders)")
    if len(outs) > OUT_MAX_FILES or any(not OUT_NAME.match(o) for o in outs):
        problems.append("the $OUT layout breaks its rules")
    gi = (ROOT / ".gitignore").read_text() if (ROOT / ".gitignore").exists() else ""
    if "/.whl/" not in gi.split():
        problems.append(".gitignore does not ignore /.whl/")
    for p in problems:
        print(f"PLAN PROBLEM: {p}")
    print("plan: ok" if not problems else f"plan: {len(problems)} problem(s)")
    return 0 if not problems else 1


def tree_bytes() -> int | None:
    """Bytes of what travels besides the carried folder: tracked and untracked-not-ignored."""
    try:
        names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return None
    return sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file())


# --- collect ----------------------------------------------------------------------------------

def gpu_slug(name: str) -> str:
    """'NVIDIA H200' -> 'h200', 'NVIDIA GeForce RTX 4090' -> 'geforce-rtx-4090'."""
    s = re.sub(r"[^a-z0-9]+", "-", name.lower().replace("nvidia", "")).strip("-")
    return s or "gpu"


def collect(src: Path, dest: Path) -> int:
    """The files a device run returned -> bench/results/, the GPU's name in each file name."""
    try:
        record = json.loads((src / RECORD).read_text())
    except (OSError, ValueError) as e:
        print(f"collect: no readable {RECORD} in {src} ({e})", file=sys.stderr)
        return 1
    gpu = record["environment"].get("gpu")
    slug = gpu_slug(gpu) if gpu else "cpu-dry-run"
    dest.mkdir(parents=True, exist_ok=True)
    names = {RECORD: f"gpu_kit-{slug}.json", LOGS: f"gpu_kit-{slug}.log", "tests.xml": f"gpu_kit_tests-{slug}.xml"}
    for p in sorted(src.iterdir()):
        new = names.get(p.name) or re.sub(r"-(gpu|cpu)(\.json|\.tar\.gz)$", rf"-{slug}\2", p.name)
        shutil.copyfile(p, dest / new)
        print(f"{p.name} -> {(dest / new).relative_to(ROOT) if dest.is_relative_to(ROOT) else dest / new}")
    return 0


# --- main -------------------------------------------------------------------------------------

def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "commit":           # what bench/gpu/recipe_speed.sh records
        print(commit_info()["commit"])
        return 0
    if argv and argv[0] in ("facts", "probes"):
        return {"facts": facts, "probes": probes}[argv[0]](Path(argv[1]))
    if argv and argv[0] == "collect":
        ap = argparse.ArgumentParser(prog="collect", description=collect.__doc__)
        ap.add_argument("files", type=Path, help="the folder the run call returned (files_at)")
        ap.add_argument("--into", type=Path, default=ROOT / "bench" / "results")
        a = ap.parse_args(argv[1:])
        return collect(a.files, a.into)
    if argv and argv[0] == "fetch":
        ap = argparse.ArgumentParser(prog="fetch-wheels", description=fetch.__doc__)
        ap.add_argument("--headers", default=os.environ.get("NVENC_HEADERS", "/usr/include/ffnvcodec"),
                        help="folder of nvEncodeAPI.h (default /usr/include/ffnvcodec)")
        return fetch(ap.parse_args(argv[1:]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="the rehearsal on a CPU machine")
    ap.add_argument("--plan", action="store_true", help="check the plan only; run nothing")
    ap.add_argument("--out", type=Path, default=None,
                    help="where results go (default $OUT; in a dry run a fresh temporary folder)")
    ap.add_argument("--keep-work", action="store_true", help="keep the work folder (install target, logs)")
    ap.add_argument("--suite", choices=sorted(SUITES), default="kit",
                    help="kit (default): every GPU path (issue #13); train: the training paths "
                         "alone (issue #18: training speed, the shapes proof trained on the GPU)")
    args = ap.parse_args(argv)
    if args.plan:
        return plan(args.dry_run, args.suite)
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    if out is None:
        if not args.dry_run:
            print("kit: $OUT is not set (the device tool sets it); give --out DIR", file=sys.stderr)
            return 2
        out = Path(tempfile.mkdtemp(prefix="t2v-rt-kit-out-"))
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        print(f"kit: {out} is not empty; results need an empty folder", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="t2v-rt-kit-work-"))
    try:
        return Kit(out.resolve(), args.dry_run, work, args.suite).run()
    finally:
        if args.keep_work:
            log(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
