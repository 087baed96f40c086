"""Run folders, checkpoints and resuming: what every trainer of t2v-rt shares.

A run is a numbered folder (``runs/00000-NAME/``) holding ``run.json`` (its id and the
checkpoints it wrote), ``config.json`` (and ``config-from-STEP.json`` for each resume),
``metrics.jsonl``, safetensors checkpoints (the last two this run wrote kept; nothing else is
ever deleted), the EMA generator (``generator.safetensors`` + ``generator.json``, loadable with
``--model``) and sample videos, each written atomically. :func:`run_training` drives a trainer
through it: resume, Ctrl-C (the current step saved), a failing write (one line naming the
path), out of memory, and a run that ends before its first checkpoint (its folder removed).

A trainer gives :func:`run_training` an object with ``G_ema`` (the generator to export) and
``state(step)`` (every tensor of a checkpoint, flat), and a loop that calls :meth:`Run.save`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Callable

import torch

from t2v_rt.console import say
from t2v_rt.errors import ConfigError, T2VError, UsageError
from t2v_rt.files import atomic_write

MAX_STEPS = 10**8
RUN_FILE = "run.json"             # the run's own record: which checkpoints it wrote
RUN_FORMAT = "t2v-rt train run"
CHECKPOINT_RE = re.compile(r"checkpoint-(\d{7,9})\.safetensors")
# Write failures that are the machine's, not the user's choice of folder: exit 1, not 2.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.ENOMEM}


class TrainError(T2VError):
    """A failure of the training work itself (a write to the run folder that fails, memory
    that runs out): the message names what, where, why and what to do. Exit code 1."""

    exit_code = 1


class TrainInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C / SIGTERM; the message says what was kept and how to go on."""


class Stop(Exception):
    """``stop()`` turned true: save the last step and end."""


def log(msg: str) -> None:
    say(msg)


def _os_reason(e: OSError, path: Path | str) -> str:
    where = e.filename if e.filename and str(e.filename) != str(path) else None
    return f"{e.strerror or e}" + (f": {where}" if where else "")


def new_run_dir(root: str, name: str) -> Path:
    """Make the next numbered run folder in ``root`` (made if missing); one UsageError line
    (path, reason, fix) when that cannot be done."""
    rootp = Path(root)
    try:
        if rootp.exists() and not rootp.is_dir():
            raise UsageError(f"cannot make a run folder in --run-dir {root}: it is a file, not a "
                             "folder; choose another --run-dir")
        rootp.mkdir(parents=True, exist_ok=True)
        for _ in range(1000):    # another run may take a number between the listing and mkdir
            nums = [int(m.group(1)) for p in rootp.iterdir()
                    if (m := re.match(r"(\d{5,})-", p.name))]
            run = rootp / f"{max(nums, default=-1) + 1:05d}-{name}"
            try:
                run.mkdir()
                return run
            except FileExistsError:
                continue
        raise UsageError(f"cannot make a run folder in --run-dir {root}: every try was taken "
                         "by another run; choose another --run-dir")
    except OSError as e:
        raise write_error(e, rootp, "make a run folder in --run-dir", before_start=True) from None


def write_error(e: OSError, path: Path, what: str, before_start: bool, tail: str = "") -> T2VError:
    """An OSError of a write -> one line naming the path, the reason and the fix."""
    env = e.errno in ENVIRONMENT_ERRNOS
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free space there (or choose another --run-dir)"
    elif e.errno == errno.EFBIG:
        fix = "the file system or a file size limit (ulimit -f) refuses a file this large; " \
              "lift the limit or choose another --run-dir"
    elif env:
        fix = "check that disk (or choose another --run-dir)"
    else:
        fix = "choose another --run-dir, or make this one writable"
    msg = f"cannot {what} {path} ({_os_reason(e, path)}); {fix}" + (f"; {tail}" if tail else "")
    return UsageError(msg) if before_start and not env else TrainError(msg)


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (a temporary file of atomic_write) and flush it to the disk."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def append_line(path: Path, line: str) -> None:
    """Append one line, whole or not at all (a failed write is cut back off)."""
    data = line.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            n = os.write(fd, data)
            if n != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        except BaseException:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


# --- checkpoints: flat dicts of tensors ---------------------------------------------------

def flat_state(prefix: str, module_or_opt) -> dict[str, torch.Tensor]:
    """A module's or an optimiser's state as ``{prefix.name: tensor}`` (CPU, contiguous)."""
    out = {}
    sd = module_or_opt.state_dict()
    if "state" in sd:  # optimizer
        for idx, st in sd["state"].items():
            for k, v in st.items():
                out[f"{prefix}.{idx}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    else:
        for k, v in sd.items():
            out[f"{prefix}.{k}"] = v.detach().cpu().contiguous()
    return out


def load_opt(opt: torch.optim.Optimizer, prefix: str, flat: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in flat.items():
        if key.startswith(prefix + "."):
            idx, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def sub(flat: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in flat.items() if k.startswith(prefix + ".")}


def step_of(name: str) -> int:
    m = CHECKPOINT_RE.fullmatch(name)
    return int(m.group(1)) if m else -1


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:07d}.safetensors"


def latest_checkpoint(run: Path, names: list[str] | None = None) -> Path | None:
    """The run's checkpoint of the highest step: among ``names`` (its record's list) when
    given, else among the folder's ``checkpoint-*.safetensors`` (runs made before run.json)."""
    if names is None:
        names = [p.name for p in run.glob("checkpoint-*.safetensors")]
    found = [n for n in names if step_of(n) >= 0 and (run / n).is_file()]
    return run / max(found, key=step_of) if found else None


def read_record(run: Path) -> dict | None:
    """The run's record (run.json) when ``run`` is a run folder of t2v-rt train; else None."""
    try:
        data = json.loads((run / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = (isinstance(data, dict) and data.get("format") == RUN_FORMAT
          and isinstance(data.get("id"), str) and isinstance(data.get("checkpoints"), list)
          and all(isinstance(n, str) and step_of(n) >= 0 for n in data["checkpoints"]))
    return data if ok else None


def read_run_config(run: Path) -> dict | None:
    """The run folder's config.json as a JSON object, or None."""
    try:
        data = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def resume_target(resume: str, has_config: Callable[[Path], bool]
                  ) -> tuple[Path, Path | None, dict | None]:
    """``--resume`` -> (checkpoint, the run folder to continue in or None for a new one, its
    record). A folder must be a run folder of t2v-rt train (a run.json, or a config.json that
    ``has_config`` accepts); a checkpoint file continues in its own run folder only when that
    folder's run.json lists it as its latest checkpoint (and the checkpoint names that run,
    checked on load); any other file starts a new run folder."""
    rp = Path(resume)
    try:
        os.stat(rp)
    except OSError as e:
        raise UsageError(f"--resume {resume}: no such run folder or checkpoint ({e.strerror}); "
                         "pass a run folder or a checkpoint file") from None
    if rp.is_dir():
        record = read_record(rp)
        if record is None and not has_config(rp):
            raise UsageError(f"--resume {resume} is not a run folder of t2v-rt train (it has no "
                             f"{RUN_FILE} or config.json); pass a run folder, or a checkpoint "
                             "file to continue it in a new run folder under --run-dir")
        ckpt = latest_checkpoint(rp, record["checkpoints"] if record else None)
        if ckpt is None:
            raise UsageError(f"--resume {resume}: the run folder holds no checkpoint to resume "
                             "from; start a new run instead (leave out --resume)")
        return ckpt, rp, record
    if not rp.is_file():
        raise UsageError(f"--resume {resume} is neither a run folder nor a checkpoint file")
    record = read_record(rp.parent)
    if record is not None and rp.name in record["checkpoints"]:
        latest = latest_checkpoint(rp.parent, record["checkpoints"])
        if latest is not None and latest.name == rp.name:
            return rp, rp.parent, record
    return rp, None, None


def load_checkpoint(path: Path, modules: dict, optimizers: dict, extra: dict[str, tuple],
                    config_hint: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Check ``path`` against the trainer's ``modules`` ({prefix: nn.Module}), ``optimizers``
    ({prefix: Adam-like}) and ``extra`` tensors ({name: shape}) from the safetensors header
    alone (names, shapes), then load it; returns (tensors, metadata). Every failure is one
    UsageError line; ``config_hint`` says which config fits (e.g. "--config RUN/config.json")."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    def unreadable(e: BaseException) -> UsageError:
        return UsageError(f"--resume {path} is not a readable safetensors checkpoint "
                          f"({type(e).__name__}: {str(e)[:100]}); pass a checkpoint-*."
                          "safetensors written by t2v-rt train, or its run folder")

    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
            have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user problem
        raise unreadable(e) from None
    want: dict[str, tuple[int, ...]] = {"step": (), **extra}
    for prefix, m in modules.items():
        want.update({f"{prefix}.{k}": tuple(v.shape) for k, v in m.state_dict().items()})
    if "step" not in have or not any(k.startswith("G.") for k in have):
        hint = (" (a generator.safetensors holds the generator alone)"
                if any(k in have for k in (key[2:] for key in want if key.startswith("G."))) else "")
        raise UsageError(f"--resume {path} is not a training checkpoint of t2v-rt train: it has "
                         f"no 'step' and 'G.*' tensors{hint}; pass a checkpoint-*.safetensors "
                         "from a run folder, or the run folder")
    params = {name: [tuple(p.shape) for g in opt.param_groups for p in g["params"]]
              for name, opt in optimizers.items()}
    for key, shape in have.items():
        prefix, _, rest = key.partition(".")
        if key in want:
            expected = want[key]
        elif prefix in params and re.fullmatch(r"\d+\.(step|exp_avg|exp_avg_sq)", rest):
            idx, name = rest.split(".")
            if int(idx) >= len(params[prefix]):
                expected = None
            else:
                expected = () if name == "step" else params[prefix][int(idx)]
        else:
            expected = None
        if expected is None or shape != expected:
            what = (f"it holds '{key}' {list(shape)}, which this model does not have"
                    if expected is None else
                    f"'{key}' is {list(shape)} in it, {list(expected)} in this model")
            raise ConfigError(f"--resume {path} does not fit the model of this training config "
                              f"({what}); resume with the config of the run that wrote it "
                              f"({config_hint})")
    missing = sorted(set(want) - set(have))
    if missing:
        raise ConfigError(f"--resume {path} does not fit the model of this training config (it "
                          f"lacks '{missing[0]}'); resume with the config of the run that wrote "
                          f"it ({config_hint})")
    try:
        flat = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - a truncated or corrupt file
        raise unreadable(e) from None
    s = flat["step"]
    if s.dtype.is_floating_point or s.dtype == torch.bool or not 0 <= int(s) <= MAX_STEPS:
        raise UsageError(f"--resume {path}: its step ({s.item()}) is not a step count; pass a "
                         "checkpoint written by t2v-rt train")
    return flat, meta


class Run:
    """A run folder and what this process wrote in it. Checkpoints of the run are listed in its
    record (run.json), and only those are ever pruned; nothing is written outside the folder.
    A run folder made by this process that ends without a checkpoint is removed again.

    ``resume_command``: the command line that continues the run (said on Ctrl-C and after a
    failure); by default ``t2v-rt train --resume RUN`` plus ``--config`` of its settings."""

    def __init__(self, path: Path, new: bool, record: dict | None, cfg, start: int,
                 resume_command: Callable[[Run], str] | None = None):
        self.path, self.new, self.cfg, self.start = path, new, cfg, start
        self.legacy = not new and record is None     # a run folder made before run.json
        self.record = record or {"format": RUN_FORMAT, "id": uuid.uuid4().hex, "checkpoints": [],
                                 "resumed_from": []}
        self.wrote: list[Path] = []        # files this process made (removed with a new run)
        self.saved: list[int] = []         # steps of the checkpoints this process wrote
        self.config_file = path / "config.json" if new else None
        self.started = False               # the first step began (a failure is the work's)
        self.done = start                  # steps finished
        self.resume_command = resume_command

    def write_file(self, path: Path, data: bytes) -> None:
        """The raw write of one temporary file (a seam for the tests' failing disks)."""
        write_file(path, data)

    def write(self, path: Path, data: bytes, what: str) -> None:
        """Write a whole file atomically (no half-written file, even on Ctrl-C)."""
        existed = path.exists()
        try:
            atomic_write(path, lambda tmp: self.write_file(tmp, data))
        except OSError as e:
            raise write_error(e, path, f"write {what}", before_start=not self.started,
                              tail=self.state_hint()) from None
        if not existed:
            self.wrote.append(path)

    def write_with(self, path: Path, write: Callable[[Path], None], what: str) -> None:
        """Write a file by ``write(tmp_path)`` (a video), atomically; one line if it fails."""
        existed = path.exists()
        try:
            atomic_write(path, write)
        except OSError as e:
            raise write_error(e, path, f"write {what}", False, self.state_hint()) from None
        if not existed:
            self.wrote.append(path)

    def append_metrics(self, row: dict) -> None:
        """One line of metrics.jsonl, whole or not at all."""
        metrics = self.path / "metrics.jsonl"
        existed = metrics.exists()
        try:
            append_line(metrics, json.dumps(row) + "\n")
        except OSError as e:
            raise write_error(e, metrics, "write metrics", False, self.state_hint()) from None
        if not existed:
            self.wrote.append(metrics)

    def write_record(self) -> None:
        self.write(self.path / RUN_FILE, (json.dumps(self.record, indent=2) + "\n").encode(),
                   "the run record")

    def begin(self, resumed: Path | None) -> None:
        if resumed is not None:
            self.record["resumed_from"].append({"checkpoint": str(resumed.resolve()),
                                                "step": self.start})
        if self.new:
            self.write(self.path / "config.json", (self.cfg.to_json() + "\n").encode(),
                       "the run's config")
            self.write_record()

    def save(self, tr, step: int) -> Path:
        """Checkpoint + generator export, then prune this run's older checkpoints (keeps 2)."""
        from safetensors.torch import save

        if not self.saved and not self.new:
            # A resumed run's settings, beside the checkpoints they produce.
            self.config_file = self.path / f"config-from-{self.start:07d}.json"
            self.write(self.config_file, (self.cfg.to_json() + "\n").encode(), "the run's config")
        name = checkpoint_name(step)
        path = self.path / name
        data = save(tr.state(step), metadata={"run": self.record["id"], "step": str(step)})
        self.write(path, data, "checkpoint")
        self.saved.append(step)
        if name not in self.record["checkpoints"]:
            self.record["checkpoints"].append(name)
        self.write_record()
        g = tr.G_ema
        state = {k: v.detach().float().contiguous().cpu() for k, v in g.state_dict().items()}
        self.write(self.path / "generator.safetensors", save(state, metadata={"step": str(step)}),
                   "the generator")
        self.write(self.path / "generator.json", (g.config.to_json() + "\n").encode(),
                   "the generator's config")
        listed = sorted(self.record["checkpoints"], key=step_of)
        for old in listed[:-2]:
            try:
                (self.path / old).unlink(missing_ok=True)
            except OSError as e:
                log(f"warning: cannot remove old checkpoint {self.path / old} ({e.strerror})")
                continue
            self.record["checkpoints"].remove(old)
        if len(listed) > 2:
            self.write_record()
        return path

    def latest(self) -> Path | None:
        latest = latest_checkpoint(self.path, self.record["checkpoints"])
        return latest if latest is not None or not self.legacy else latest_checkpoint(self.path)

    def resume_hint(self) -> str:
        if self.resume_command is not None:
            return f"continue with: {self.resume_command(self)}"
        cfg = f" --config {self.config_file}" if self.config_file and self.config_file.exists() else ""
        return f"continue with: t2v-rt train --resume {self.path}{cfg}"

    def state_hint(self) -> str:
        """What the run folder keeps, said after a failure."""
        latest = self.latest()
        if latest is not None:
            return f"the last checkpoint is {latest}; {self.resume_hint()}"
        return "no checkpoint was saved, so the run folder is removed"

    def discard(self) -> None:
        """A new run folder that ended without a checkpoint: remove what this process wrote,
        then the folder if that left it empty."""
        if not self.new or self.saved:
            return
        for p in self.wrote:
            try:
                p.unlink(missing_ok=True)
            except OSError:
                pass
        try:
            self.path.rmdir()
        except OSError:
            pass


def out_of_memory(e: BaseException) -> bool:
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in str(e)
                                         or "out of memory" in str(e)))


def eta(seconds: float) -> str:
    """H:MM:SS."""
    s = max(0.0, seconds)
    return f"{int(s // 3600)}:{int(s % 3600 // 60):02d}:{int(s % 60):02d}"


class Progress:
    """Steps per second since this process started training (for progress lines and ETAs)."""

    def __init__(self, start: int):
        self.t0, self.start = time.time(), start

    def rate(self, done: int) -> float:
        return (done - self.start) / max(time.time() - self.t0, 1e-9)


def run_training(tr, cfg, resume: str | None, target, dry_run: bool,
                 stop: Callable[[], bool] | None, *, load: Callable[[Path], tuple[int, dict]],
                 describe: Callable[[Run], str], loop: Callable[[Run, int], None],
                 oom_hint: str, make_run: Callable[..., Run] = Run) -> Path:
    """Drive one training run in its folder; returns the folder.

    ``target``: :func:`resume_target` of ``resume`` (or None); ``load(checkpoint)`` restores the
    trainer and returns (step, metadata); ``describe(run)`` is the first progress line;
    ``loop(run, start)`` trains from ``start`` to ``cfg.steps`` (setting ``run.done`` after
    each step and raising :class:`Stop` when ``stop()`` turns true). Ctrl-C or ``stop`` saves
    the step reached and raises :class:`TrainInterrupted`; a failure removes a new run folder
    that holds no checkpoint; out of memory is one :class:`TrainError` line ending in
    ``oom_hint``."""
    start, ckpt, run_path, record = 0, None, None, None
    if target is not None:
        ckpt, run_path, record = target
        start, meta = load(ckpt)
        if record is not None and not Path(resume).is_dir() and meta.get("run") != record["id"]:
            run_path, record = None, None      # not provably this run's: a new run folder
        if start >= cfg.steps:
            raise UsageError(f"--resume {ckpt} is at step {start}, and this run is {cfg.steps} "
                             f"steps long; pass --steps above {start} to train on")
    new = run_path is None
    run = make_run(new_run_dir(cfg.run_dir, cfg.name) if new else run_path, new, record, cfg, start)
    done = start
    try:
        run.begin(ckpt)
        if ckpt is not None:
            log(f"resumed {ckpt} at step {start}")
        log(describe(run))
        if dry_run:
            return run.path
        run.started = True
        loop(run, start)
        return run.path
    except Stop:
        done = run.done
        if done == start:
            run.discard()
            raise TrainInterrupted(f"interrupted before the first step; {run.state_hint()}") from None
        try:
            path = run.save(tr, done) if done not in run.saved else run.path / checkpoint_name(done)
        except KeyboardInterrupt:
            run.discard()
            raise TrainInterrupted(f"interrupted at step {done} of {cfg.steps} while saving it; "
                                   f"{run.state_hint()}") from None
        except BaseException:
            run.discard()
            raise
        raise TrainInterrupted(f"interrupted at step {done} of {cfg.steps}: saved {path}; "
                               f"{run.resume_hint()}") from None
    except KeyboardInterrupt:
        done = run.done
        run.discard()
        where = f"at step {done} of {cfg.steps}" if done > start else "before the first step"
        raise TrainInterrupted(f"interrupted {where}; {run.state_hint()}") from None
    except BaseException as e:
        run.discard()
        if out_of_memory(e):
            raise TrainError(f"out of memory at step {run.done + 1} ({str(e)[:120]}); "
                             f"{oom_hint}; {run.state_hint()}") from None
        raise


__all__ = ["CHECKPOINT_RE", "ENVIRONMENT_ERRNOS", "MAX_STEPS", "RUN_FILE", "RUN_FORMAT",
           "Progress", "Run", "Stop", "TrainError", "TrainInterrupted", "append_line",
           "checkpoint_name", "eta", "flat_state", "latest_checkpoint", "load_checkpoint",
           "load_opt", "log", "new_run_dir", "out_of_memory", "read_record", "read_run_config",
           "resume_target", "run_training", "step_of", "sub", "write_error", "write_file"]
