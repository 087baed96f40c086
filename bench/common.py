"""Shared by the benchmarks: the environment record every result carries.

Two variables, for runs away from a git checkout (the GPU kit, bench/gpu/): ``T2V_RT_RESULTS``
names the folder results are written to (default bench/results/), ``T2V_RT_COMMIT`` the
commit recorded (default: ``git rev-parse`` of this checkout).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parent.parent


def kernels_from_source() -> None:
    """Make ``t2v_rt.kernels`` importable from a plain source checkout (``PYTHONPATH=.``, as
    on a lent GPU machine with no install): the installed wheel maps ``kernels/`` there."""
    import importlib.util
    import sys

    try:
        importlib.import_module("t2v_rt.kernels")
        return
    except ModuleNotFoundError:
        pass
    spec = importlib.util.spec_from_file_location(
        "t2v_rt.kernels", ROOT / "kernels" / "__init__.py",
        submodule_search_locations=[str(ROOT / "kernels")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["t2v_rt.kernels"] = module
    spec.loader.exec_module(module)


def git_commit() -> tuple[str, bool]:
    """(commit, dirty): ``$T2V_RT_COMMIT`` when set, else this checkout's HEAD."""
    if os.environ.get("T2V_RT_COMMIT"):
        return os.environ["T2V_RT_COMMIT"], False
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True,
                                    cwd=Path(__file__).parent).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit, dirty


def environment() -> dict:
    import av
    import torch

    from t2v_rt import __version__

    commit, dirty = git_commit()
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "device": gpu or f"CPU: {cpu}, {os.cpu_count()} logical cores",
        "cpu": cpu, "cpu_count": os.cpu_count(), "gpu": gpu,
        "python": platform.python_version(), "torch": torch.__version__, "av": av.__version__,
        "t2v_rt": __version__, "commit": commit + ("-dirty" if dirty else ""),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_result(name: str, payload: dict) -> Path:
    folder = Path(os.environ.get("T2V_RT_RESULTS") or RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    env = environment()
    kind = "gpu" if env["gpu"] else "cpu"
    path = folder / f"{name}-{kind}.json"
    path.write_text(json.dumps({"benchmark": name, "environment": env, **payload}, indent=2) + "\n")
    return path
