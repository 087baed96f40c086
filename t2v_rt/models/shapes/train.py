"""The training loop: reconstruction + adversarial losses, R1, EMA, checkpoints, samples.

Losses of the generator, per clip of ``frames_per_clip`` frames at random times:
- adversarial, against a text-aware frame discriminator and a text-aware video discriminator
  (non-saturating, R1 on real data, mismatched captions as negatives);
- choice: the caption says which attributes it names; the per-video latent ``z`` also drives
  the contract renderer (see ``world.scene``), which knows every attribute of the clip, the
  left-out ones included. Cross-entropies pull the generator's text encoder (its reading of
  the caption) to the first and its prior head to the second, and the synthesis is fed the
  true one-hot code (teacher forcing);
- pose: the generator's pose (the origin of its coordinate bias) is pulled to the shape's
  true centre;
- reconstruction: a squared error against the clip rendered with the true attributes at the
  generator's own (detached) pose, weighted up on the shape's bounding box, on the frames and
  on the shape's coverage (the generator's alpha against the renderer's). Rendering the
  target where the generator put the shape keeps the loss about the shape's appearance: a
  target at the true centre would make a blurred shape the optimum of any pose error.

This is what makes a CPU-trainable model follow every word of the prompt; the adversarial
terms keep frames sharp and motion plausible.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch

from t2v_rt.console import say
from t2v_rt.errors import ConfigError, T2VError, UsageError
from t2v_rt.files import atomic_write
from t2v_rt.generators.config import _check_field, bounded
from t2v_rt.models.shapes.config import ModelConfig
from t2v_rt.models.shapes.discriminators import (
    FrameDiscriminator,
    VideoDiscriminator,
    d_loss,
    g_loss,
    r1_penalty,
)
from t2v_rt.models.shapes.generator import Generator, attribute_code, named_code
from t2v_rt.models.shapes import spec
from t2v_rt.models.shapes.dataset import ShapesClips, render_clips

MAX_STEPS = 10**8
MAX_WEIGHT = 1e6
# batch_size x frames_per_clip x resolution^2: what one step renders and generates. 2^30
# pixels (12 GiB of float32 RGB per copy) is far beyond any run this model needs.
MAX_PIXELS_PER_STEP = 1 << 30
MIN_RESOLUTION = 16               # the discriminators' 4x4 kernels need 16 pixels or more
MAX_CONFIG_BYTES = 1 << 20
RUN_FILE = "run.json"             # the run's own record: which checkpoints it wrote
RUN_FORMAT = "t2v-rt train run"
CHECKPOINT_RE = re.compile(r"checkpoint-(\d{7,9})\.safetensors")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Write failures that are the machine's, not the user's choice of folder: exit 1, not 2.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.ENOMEM}


class TrainError(T2VError):
    """A failure of the training work itself (a write to the run folder that fails, memory
    that runs out): the message names what, where, why and what to do. Exit code 1."""

    exit_code = 1


class TrainInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C / SIGTERM; the message says what was kept and how to go on."""


def _flag(default: bool, doc: str = ""):
    return field(default=default, metadata={"flag": True, "doc": doc})


def _text(default: str, kind: str, doc: str = "", choices: tuple | None = None):
    return field(default=default, metadata={"text": kind, "doc": doc, "choices": choices})


@dataclass
class TrainConfig:
    """Every training setting, with its type and bounds (``bounded``, as in model configs):
    :meth:`from_dict`, :meth:`set` and :meth:`validate` refuse, in one line naming the
    setting, a wrong type, a non-finite number or a value out of its range."""

    run_dir: str = _text("runs", "path", "numbered run folders are made inside")
    name: str = _text("shapes", "name", "the run folders' name after the number")
    steps: int = bounded(20000, 1, MAX_STEPS, "total steps")
    batch_size: int = bounded(16, 1, 4096, "clips per step")
    frames_per_clip: int = bounded(3, 1, 32)
    lr_g: float = bounded(5e-4, 0.0, 1.0)
    lr_d: float = bounded(5e-4, 0.0, 1.0)
    rec_weight: float = bounded(1.0, 0.0, MAX_WEIGHT)
    shape_weight: float = bounded(9.0, 0.0, MAX_WEIGHT, "extra reconstruction weight near the shape")
    # The extra weight covers the shape's bounding box (+ 2 pixels), not only its pixels:
    # painting background inside the box then costs as much as missing shape pixels, where
    # a weight on the shape's pixels alone makes a covering blob the cheap answer for every
    # shape (a triangle fills half its box).
    weight_box: bool = _flag(True)
    pose_weight: float = bounded(10.0, 0.0, MAX_WEIGHT, "the pose is pulled to the shape's true centre")
    alpha_weight: float = bounded(1.0, 0.0, MAX_WEIGHT, "the same squared error on the coverage")
    choice_weight: float = bounded(1.0, 0.0, MAX_WEIGHT, "cross-entropy of the text reading and prior head")
    choice_batch: int = bounded(256, 0, 65536, "extra captions per step for those heads alone (0: none)")
    align_target: bool = _flag(True, "render the reconstruction target at the generator's pose")
    lr_decay_steps: int = bounded(0, 0, MAX_STEPS, "the last this many steps decay the lr linearly")
    lr_final_ratio: float = bounded(0.1, 0.0, 1.0, "to this share of lr_g / lr_d")
    adv_weight: float = bounded(0.05, 0.0, MAX_WEIGHT)
    adv_start: int = bounded(2500, 0, MAX_STEPS, "adversarial terms join here, ramped over adv_ramp")
    adv_ramp: int = bounded(500, 0, MAX_STEPS)
    d_warmup: int = bounded(300, 0, MAX_STEPS, "the discriminators start this many steps earlier")
    r1_gamma: float = bounded(1.0, 0.0, MAX_WEIGHT)
    r1_every: int = bounded(4, 1, MAX_STEPS)
    ema_halflife_steps: float = bounded(200.0, 1e-3, 1e9)
    seed: int = bounded(0, 0, 2**63 - 1)
    device: str = _text("auto", "choice", "auto | cpu | cuda", ("auto", "cpu", "cuda"))
    threads: int = bounded(0, 0, 1024, "CPU threads, 0: torch's default")
    log_every: int = bounded(25, 1, MAX_STEPS)
    sample_every: int = bounded(1000, 0, MAX_STEPS, "0: no sample videos")
    checkpoint_every: int = bounded(500, 1, MAX_STEPS)
    model: ModelConfig = field(default_factory=ModelConfig)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: Any, source: str = "training config") -> TrainConfig:
        """A parsed JSON object -> a validated config; every failure is one ConfigError line."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source} must be a JSON object, got {_json_type(data)}; write "
                              "settings as {\"steps\": 1000, ...} (a run's config.json is one)")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise ConfigError(f"{source}: unknown setting '{unknown[0][:40]}'; the settings are "
                              f"{', '.join(known)}")
        cfg = cls(**{k: _check_setting(known[k], v, source) for k, v in data.items()})
        cfg.check(source)
        return cfg

    def set(self, key: str, value: Any, source: str) -> None:
        """Set one setting, checked (``source`` names where the value came from)."""
        f = {f.name: f for f in fields(self)}.get(key)
        if f is None:
            raise ConfigError(f"{source}: unknown setting '{key[:40]}'")
        setattr(self, key, _check_setting(f, value, source))

    def check(self, source: str = "training config") -> None:
        """The rules across settings (each setting alone is checked where it is parsed)."""
        m = self.model
        if m.resolution < MIN_RESOLUTION:
            raise ConfigError(f"{source}: model resolution {m.resolution} is below "
                              f"{MIN_RESOLUTION}, the smallest frame the discriminators read; "
                              f"train at resolution {MIN_RESOLUTION} or more")
        pixels = self.batch_size * self.frames_per_clip * m.resolution ** 2
        if pixels > MAX_PIXELS_PER_STEP:
            raise ConfigError(f"{source}: batch_size {self.batch_size} x frames_per_clip "
                              f"{self.frames_per_clip} x {m.resolution}^2 pixels is {pixels} "
                              f"pixels a step, more than {MAX_PIXELS_PER_STEP}; lower batch_size")

    def validate(self, source: str = "training config") -> TrainConfig:
        """This config, every setting checked (for configs built in code); a checked copy."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return TrainConfig.from_dict(data, source)


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            int: "a number", float: "a number", type(None): "null"}.get(type(value),
                                                                     type(value).__name__)


def _show(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_setting(f, value: Any, source: str) -> Any:
    meta = f.metadata
    if f.name == "model":
        if isinstance(value, ModelConfig):
            value = asdict(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: 'model' must be an object of model settings, got "
                              f"{_show(value)}")
        arch = value.get("architecture", ModelConfig.ARCH)
        if arch != ModelConfig.ARCH:
            raise ConfigError(f"{source}: 'model' is architecture {_show(arch)}; t2v-rt train "
                              f"trains the '{ModelConfig.ARCH}' architecture only")
        try:
            return ModelConfig.from_dict(value)
        except ConfigError as e:
            raise ConfigError(f"{source}: model: {str(e).removeprefix('model config: ')}") from None
    if meta.get("flag"):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{f.name}' must be true or false, got {_show(value)}")
        return value
    kind = meta.get("text")
    if kind:
        if kind == "path" and isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{f.name}' must be a string, got {_show(value)}")
        if kind == "path" and (not value or "\0" in value or len(value) > 4096):
            raise ConfigError(f"{source}: '{f.name}' must be a folder path, got {_show(value)}")
        if kind == "name" and not NAME_RE.fullmatch(value):
            raise ConfigError(f"{source}: '{f.name}' names the run folders: 1 to 64 letters, "
                              f"digits, '.', '_' or '-', starting with a letter or digit; got "
                              f"{_show(value)}")
        if meta.get("choices") and value not in meta["choices"]:
            raise ConfigError(f"{source}: '{f.name}' must be one of "
                              f"{', '.join(meta['choices'])}, got {_show(value)}")
        return value
    try:
        return _check_field(f, value)
    except ConfigError as e:
        raise ConfigError(f"{source}: {str(e).removeprefix('model config: ')}") from None


class _NotFinite(Exception):
    pass


def _no_constant(name: str):
    raise _NotFinite(name)


def apply_settings(cfg: TrainConfig, items: list[str]) -> None:
    """``--set KEY=VALUE`` items onto ``cfg``, each checked. VALUE is JSON (a string setting
    takes the text as it is); NaN, Infinity and numbers out of range are refused."""
    known = {f.name: f for f in fields(TrainConfig)}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or key not in known:
            raise ConfigError(f"--set {item[:60]}: expected KEY=VALUE with KEY one of "
                              f"{', '.join(known)}")
        source = f"--set {key}"
        if known[key].metadata.get("text"):
            value: Any = text
        else:
            try:
                value = json.loads(text, parse_constant=_no_constant)
            except _NotFinite as e:
                lo, hi = known[key].metadata.get("lo"), known[key].metadata.get("hi")
                rng = f"; give a number in [{lo:g}, {hi:g}]" if lo is not None else ""
                raise ConfigError(f"{source}: '{key}' must be a finite number, got {e}{rng}") from None
            except (ValueError, RecursionError):
                value = text
        cfg.set(key, value, source)


def read_config(path: str | Path) -> TrainConfig:
    """A training config JSON file (e.g. a run's config.json) -> the validated config."""
    path = Path(path)
    source = f"--config {path}"
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise UsageError(f"cannot read {source} ({e.strerror or e}); pass a training config "
                         "JSON file, such as a run folder's config.json") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source} is over {MAX_CONFIG_BYTES} bytes; a training config is a "
                          "small JSON object, such as a run folder's config.json")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except _NotFinite as e:
        raise ConfigError(f"{source} holds {e}, which is not a finite number; give numbers "
                          "within each setting's range") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source} is not UTF-8 text; pass a training config JSON file, "
                          "such as a run folder's config.json") from None
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"{source} is not valid JSON ({str(e)[:80]}); fix it or start from "
                          "a run folder's config.json") from None
    return TrainConfig.from_dict(data, source)


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
        raise _write_error(e, rootp, "make a run folder in --run-dir", before_start=True) from None


def _write_error(e: OSError, path: Path, what: str, before_start: bool, tail: str = "") -> T2VError:
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


def _flat_state(prefix: str, module_or_opt) -> dict[str, torch.Tensor]:
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


def _load_opt(opt: torch.optim.Optimizer, prefix: str, flat: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in flat.items():
        if key.startswith(prefix + "."):
            idx, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def _sub(flat: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in flat.items() if k.startswith(prefix + ".")}


def _step_of(name: str) -> int:
    m = CHECKPOINT_RE.fullmatch(name)
    return int(m.group(1)) if m else -1


def _checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:07d}.safetensors"


def latest_checkpoint(run: Path, names: list[str] | None = None) -> Path | None:
    """The run's checkpoint of the highest step: among ``names`` (its record's list) when
    given, else among the folder's ``checkpoint-*.safetensors`` (runs made before run.json)."""
    if names is None:
        names = [p.name for p in run.glob("checkpoint-*.safetensors")]
    found = [n for n in names if _step_of(n) >= 0 and (run / n).is_file()]
    return run / max(found, key=_step_of) if found else None


def read_record(run: Path) -> dict | None:
    """The run's record (run.json) when ``run`` is a run folder of t2v-rt train; else None."""
    try:
        data = json.loads((run / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = (isinstance(data, dict) and data.get("format") == RUN_FORMAT
          and isinstance(data.get("id"), str) and isinstance(data.get("checkpoints"), list)
          and all(isinstance(n, str) and _step_of(n) >= 0 for n in data["checkpoints"]))
    return data if ok else None


def _has_train_config(run: Path) -> bool:
    """``run`` holds a training config as config.json (every run folder does; those made
    before run.json are known by it alone)."""
    try:
        data = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "steps" in data and "model" in data


@dataclass
class Trainer:
    """Everything one training step touches; :meth:`step` is one step of the schedule."""

    cfg: TrainConfig
    device: torch.device
    G: Generator
    G_ema: Generator
    FD: FrameDiscriminator
    VD: VideoDiscriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    data: ShapesClips

    @classmethod
    def create(cls, cfg: TrainConfig) -> Trainer:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                              else ("cpu" if cfg.device == "auto" else cfg.device))
        torch.manual_seed(cfg.seed)
        G = Generator(cfg.model).to(device)
        G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        FD = FrameDiscriminator(cfg.model.resolution).to(device)
        VD = VideoDiscriminator(cfg.frames_per_clip, cfg.model.resolution).to(device)
        opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(0.5, 0.99))
        opt_d = torch.optim.Adam(list(FD.parameters()) + list(VD.parameters()), lr=cfg.lr_d,
                                 betas=(0.5, 0.99))
        data = ShapesClips(seed=cfg.seed, size=cfg.model.resolution,
                           frames_per_clip=cfg.frames_per_clip)
        return cls(cfg, device, G, G_ema, FD, VD, opt_g, opt_d, data)

    def load(self, flat: dict[str, torch.Tensor]) -> int:
        """Restore from a checkpoint's tensors; returns its step."""
        self.G.load_state_dict(_sub(flat, "G"))
        self.G_ema.load_state_dict(_sub(flat, "G_ema"))
        self.FD.load_state_dict(_sub(flat, "FD"))
        self.VD.load_state_dict(_sub(flat, "VD"))
        _load_opt(self.opt_g, "opt_g", flat)
        _load_opt(self.opt_d, "opt_d", flat)
        return int(flat["step"].item())

    def state(self, step: int) -> dict[str, torch.Tensor]:
        flat = {"step": torch.tensor(step)}
        for prefix, obj in (("G", self.G), ("G_ema", self.G_ema), ("FD", self.FD),
                            ("VD", self.VD), ("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            flat.update(_flat_state(prefix, obj))
        return flat

    def step(self, step: int) -> dict[str, torch.Tensor]:
        """One step (data, generator, discriminators, EMA); returns its losses (tensors)."""
        cfg, device = self.cfg, self.device
        G, FD, VD = self.G, self.FD, self.VD
        b = self.data.batch(step, cfg.batch_size)
        tokens, wrong = b.tokens.to(device), b.wrong_tokens.to(device)
        z, times = b.z.to(device), b.times.to(device)
        real, cov = b.frames.to(device), b.coverage.to(device)
        nt = times.shape[1]
        rep = lambda x: x.repeat_interleave(nt, dim=0)  # noqa: E731
        code = attribute_code([sc.attributes() for sc in b.scenes]).to(device)
        named = named_code(b.named).to(device)
        ratio = 1.0
        if cfg.lr_decay_steps > 0:
            into = (step - (cfg.steps - cfg.lr_decay_steps)) / cfg.lr_decay_steps
            ratio = 1 - (1 - cfg.lr_final_ratio) * min(1.0, max(0.0, into))
        for opt, lr in ((self.opt_g, cfg.lr_g), (self.opt_d, cfg.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * ratio
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

        # Generator step. Reconstruction alone first; the adversarial terms ramp in later.
        adv_w = cfg.adv_weight * min(1.0, max(0.0, (step - cfg.adv_start) / max(cfg.adv_ramp, 1)))
        train_d = step >= cfg.adv_start - cfg.d_warmup
        G.requires_grad_(True)
        FD.requires_grad_(False)
        VD.requires_grad_(False)
        with autocast:
            text = G.encode_text(tokens)
            w = rep(G.style_from_reading(text, z, code))      # the synthesis gets the true code
            fake, alpha, pose = G.synthesize_all(w, times.reshape(-1))
            fake, alpha, pose = (x.unflatten(0, (-1, nt)) for x in (fake, alpha, pose))
            choice = G.choice_loss(text, z, named, code)
            if cfg.choice_batch:
                # Left-out attributes are picked by thresholds on z; the clip batch holds a
                # couple per attribute, so the heads also read captions without clips.
                c_tok, c_z, c_named, c_attrs = self.data.choices(step, cfg.choice_batch)
                c_loss = G.choice_loss(G.encode_text(c_tok.to(device)), c_z.to(device),
                                       named_code(c_named).to(device),
                                       attribute_code(c_attrs).to(device))
                choice = (choice + c_loss) / 2
            adv = torch.zeros((), device=device)
            if adv_w > 0:
                adv = g_loss(FD(fake.flatten(0, 1), rep(tokens))) + g_loss(VD(fake, times, tokens))
        # Squared error: its optimum for an uncertain position is a blurred blob (the mean),
        # which sharpens as the position is learnt. (L1's optimum, the median, is plain
        # background: with it the model sat on a plateau for the first few hundred steps.)
        size = real.shape[-1]
        target, centres = real, b.centres
        if cfg.align_target:
            centres = ((pose.detach().float().cpu() + 1) / 2).clamp(-0.5, 1.5)
            target, cov = (x.to(device) for x in render_clips(b.scenes, centres, size))
        near = _box_mask(b.scenes, centres, size).to(device) if cfg.weight_box else cov
        weight = 1 + cfg.shape_weight * near
        rec = ((fake.float() - target).square() * weight).mean()
        rec = rec + cfg.alpha_weight * ((alpha.float() - cov).square() * weight).mean()
        pose_err = (pose.float() - (b.centres.to(device) * 2 - 1)).square().mean()
        loss_g = (cfg.rec_weight * rec + cfg.pose_weight * pose_err + cfg.choice_weight * choice
                  + adv_w * adv)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()

        loss_d = torch.zeros((), device=device)
        if train_d:
            loss_d = _d_step(cfg, step, FD, VD, self.opt_d, real, fake.detach(), times, tokens,
                             wrong, autocast, rep)

        beta = 0.5 ** (1.0 / cfg.ema_halflife_steps)
        with torch.no_grad():
            for pe, p in zip(self.G_ema.parameters(), G.parameters()):
                pe.lerp_(p, 1 - beta)
        return {"rec": rec, "pose": pose_err, "choice": choice, "adv": adv, "d": loss_d}


def _resume_target(resume: str) -> tuple[Path, Path | None, dict | None]:
    """``--resume`` -> (checkpoint, the run folder to continue in or None for a new one, its
    record). A folder must be a run folder of t2v-rt train; a checkpoint file continues in its
    own run folder only when that folder's run.json lists it as its latest checkpoint (and the
    checkpoint names that run, checked on load); any other file starts a new run folder."""
    rp = Path(resume)
    try:
        os.stat(rp)
    except OSError as e:
        raise UsageError(f"--resume {resume}: no such run folder or checkpoint ({e.strerror}); "
                         "pass a run folder or a checkpoint file") from None
    if rp.is_dir():
        record = read_record(rp)
        if record is None and not _has_train_config(rp):
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


def _load_checkpoint(tr: Trainer, path: Path) -> tuple[int, dict[str, str]]:
    """Check ``path`` against the trainer's model from the safetensors header alone (names,
    shapes), then load it; returns (step, metadata). Every failure is one UsageError line."""
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
    want: dict[str, tuple[int, ...]] = {"step": ()}
    for prefix, m in (("G", tr.G), ("G_ema", tr.G_ema), ("FD", tr.FD), ("VD", tr.VD)):
        want.update({f"{prefix}.{k}": tuple(v.shape) for k, v in m.state_dict().items()})
    if "step" not in have or not any(k.startswith("G.") for k in have):
        hint = (" (a generator.safetensors holds the generator alone)"
                if any(k in have for k in (key[2:] for key in want if key.startswith("G."))) else "")
        raise UsageError(f"--resume {path} is not a training checkpoint of t2v-rt train: it has "
                         f"no 'step' and 'G.*' tensors{hint}; pass a checkpoint-*.safetensors "
                         "from a run folder, or the run folder")
    beside = path.parent / "config.json"
    config_hint = f"--config {beside}" if _has_train_config(path.parent) else "--config RUN/config.json"
    params = {name: [tuple(p.shape) for g in opt.param_groups for p in g["params"]]
              for name, opt in (("opt_g", tr.opt_g), ("opt_d", tr.opt_d))}
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
    try:
        return tr.load(flat), meta
    except (RuntimeError, KeyError, ValueError) as e:
        raise unreadable(e) from None


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (a temporary file of atomic_write) and flush it to the disk."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _append_line(path: Path, line: str) -> None:
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


class _Run:
    """A run folder and what this process wrote in it. Checkpoints of the run are listed in its
    record (run.json), and only those are ever pruned; nothing is written outside the folder.
    A run folder made by this process that ends without a checkpoint is removed again."""

    def __init__(self, path: Path, new: bool, record: dict | None, cfg: TrainConfig, start: int):
        self.path, self.new, self.cfg, self.start = path, new, cfg, start
        self.legacy = not new and record is None     # a run folder made before run.json
        self.record = record or {"format": RUN_FORMAT, "id": uuid.uuid4().hex, "checkpoints": [],
                                 "resumed_from": []}
        self.wrote: list[Path] = []        # files this process made (removed with a new run)
        self.saved: list[int] = []         # steps of the checkpoints this process wrote
        self.config_file = path / "config.json" if new else None
        self.started = False               # the first step began (a failure is the work's)
        self.done = start                  # steps finished

    def write(self, path: Path, data: bytes, what: str) -> None:
        """Write a whole file atomically (no half-written file, even on Ctrl-C)."""
        existed = path.exists()
        try:
            atomic_write(path, lambda tmp: _write_file(tmp, data))
        except OSError as e:
            raise _write_error(e, path, f"write {what}", before_start=not self.started,
                               tail=self.state_hint()) from None
        if not existed:
            self.wrote.append(path)

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

    def save(self, tr: Trainer, step: int) -> Path:
        """Checkpoint + generator export, then prune this run's older checkpoints (keeps 2)."""
        from safetensors.torch import save

        if not self.saved and not self.new:
            # A resumed run's settings, beside the checkpoints they produce.
            self.config_file = self.path / f"config-from-{self.start:07d}.json"
            self.write(self.config_file, (self.cfg.to_json() + "\n").encode(), "the run's config")
        name = _checkpoint_name(step)
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
        listed = sorted(self.record["checkpoints"], key=_step_of)
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


class _Stop(Exception):
    """``stop()`` turned true: save the last step and end."""


def _out_of_memory(e: BaseException) -> bool:
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in str(e)
                                         or "out of memory" in str(e)))


def train(cfg: TrainConfig, resume: str | None = None, dry_run: bool = False,
          stop: Callable[[], bool] | None = None) -> Path:
    """Train; returns the run folder.

    ``resume``: a run folder of t2v-rt train (training goes on in it), or a checkpoint file
    (it goes on in the checkpoint's own run folder when that run's ``run.json`` lists it as its
    latest checkpoint, else in a new numbered run folder under ``cfg.run_dir``). ``stop``:
    polled before each step; once true, the last step is saved and :class:`TrainInterrupted`
    raised. Bad settings, folders and checkpoints raise one-line :class:`T2VError` before
    anything is written; a write that fails later raises :class:`TrainError`; Ctrl-C raises
    :class:`TrainInterrupted`. Every file is written whole or not at all, only this run's own
    checkpoints are pruned, and a new run folder left without a checkpoint is removed.
    """
    cfg = cfg.validate()
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' asked for, but PyTorch sees no CUDA GPU; use --device "
                         "cpu (or auto)")
    target = _resume_target(resume) if resume else None
    tr = Trainer.create(cfg)
    start, ckpt, run_path, record = 0, None, None, None
    if target is not None:
        ckpt, run_path, record = target
        start, meta = _load_checkpoint(tr, ckpt)
        if record is not None and not Path(resume).is_dir() and meta.get("run") != record["id"]:
            run_path, record = None, None      # not provably this run's: a new run folder
        if start >= cfg.steps:
            raise UsageError(f"--resume {ckpt} is at step {start}, and this run is {cfg.steps} "
                             f"steps long; pass --steps above {start} to train on")
    new = run_path is None
    run = _Run(new_run_dir(cfg.run_dir, cfg.name) if new else run_path, new, record, cfg, start)
    done = start
    try:
        run.begin(ckpt)
        if ckpt is not None:
            log(f"resumed {ckpt} at step {start}")
        n_g = sum(p.numel() for p in tr.G.parameters())
        log(f"run {run.path} | device {tr.device} | generator {n_g / 1e6:.2f}M params | "
            f"{cfg.steps} steps of {cfg.batch_size} clips x {cfg.frames_per_clip} frames")
        if dry_run:
            return run.path
        run.started = True
        _train_steps(tr, cfg, run, start, stop)
        return run.path
    except _Stop:
        done = run.done
        if done == start:
            run.discard()
            raise TrainInterrupted(f"interrupted before the first step; {run.state_hint()}") from None
        try:
            path = run.save(tr, done) if done not in run.saved else run.path / _checkpoint_name(done)
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
        if _out_of_memory(e):
            raise TrainError(f"out of memory at step {run.done + 1} ({str(e)[:120]}); lower "
                             f"batch_size (now {cfg.batch_size}) or choice_batch (now "
                             f"{cfg.choice_batch}); {run.state_hint()}") from None
        raise


def _train_steps(tr: Trainer, cfg: TrainConfig, run: _Run, start: int,
                 stop: Callable[[], bool] | None) -> None:
    """The loop: steps, metrics, checkpoints, samples. ``run.done`` counts finished steps."""
    t_start, step_start = time.time(), start
    stats: dict[str, float] = {}
    for step in range(start, cfg.steps):
        if stop is not None and stop():
            raise _Stop
        losses = tr.step(step)
        for k, v in losses.items():
            stats[k] = stats.get(k, 0.0) + float(v.detach())
        done = run.done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            n = cfg.log_every if done % cfg.log_every == 0 else done % cfg.log_every
            rate = (done - step_start) / max(time.time() - t_start, 1e-9)
            eta = (cfg.steps - done) / max(rate, 1e-9)
            metrics = run.path / "metrics.jsonl"
            existed = metrics.exists()
            try:
                _append_line(metrics, json.dumps({"step": done, "steps_per_s": rate,
                                                  **{k: v / n for k, v in stats.items()}}) + "\n")
            except OSError as e:
                raise _write_error(e, metrics, "write metrics", False, run.state_hint()) from None
            if not existed:
                run.wrote.append(metrics)
            log(f"step {done}/{cfg.steps} | G rec {stats['rec'] / n:.4f} pose {stats['pose'] / n:.4f}"
                f" choice {stats['choice'] / n:.4f}"
                f" adv {stats['adv'] / n:.3f}"
                f" | D {stats['d'] / n:.3f} | {rate:.2f} steps/s | ETA "
                f"{int(eta // 3600)}:{int(eta % 3600 // 60):02d}:{int(eta % 60):02d}")
            stats.clear()
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            run.save(tr, done)
        if cfg.sample_every and (done % cfg.sample_every == 0 or done == cfg.steps):
            from t2v_rt.models.shapes.samples import write_samples

            path = run.path / f"samples-{done:07d}.mp4"
            existed = path.exists()
            try:
                atomic_write(path, lambda tmp: write_samples(tr.G_ema, tmp, tr.device))
            except OSError as e:
                raise _write_error(e, path, "write sample video", False, run.state_hint()) from None
            if not existed:
                run.wrote.append(path)


def _box_mask(scenes, centres: torch.Tensor, size: int, margin: float = 2.0) -> torch.Tensor:
    """[B, T, 1, S, S]: 1 inside each frame's shape bounding box, centred at ``centres``
    [B, T, 2] (frame units), grown by ``margin`` pixels."""
    side = torch.tensor([spec.SIZES[sc.size] for sc in scenes], dtype=torch.float32)
    half = (side / 2 + margin / size).view(-1, 1, 1, 1)                 # [B, 1, 1, 1]
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    cx, cy = centres[..., 0, None], centres[..., 1, None]               # [B, T, 1]
    in_x = (c.view(1, 1, -1) - cx).abs() <= half.view(-1, 1, 1)          # [B, T, S]
    in_y = (c.view(1, 1, -1) - cy).abs() <= half.view(-1, 1, 1)
    return (in_y.unsqueeze(-1) & in_x.unsqueeze(-2)).unsqueeze(2).float()


def _d_step(cfg, step, FD, VD, opt_d, real, fake, times, tokens, wrong, autocast, rep):
    """One discriminator update: real vs generated vs real-with-the-wrong-caption, plus lazy R1."""
    FD.requires_grad_(True)
    VD.requires_grad_(True)
    do_r1 = cfg.r1_gamma > 0 and step % cfg.r1_every == 0
    real_in = real.detach().requires_grad_(do_r1)
    with autocast:
        fr, ff, fm = (FD(real_in.flatten(0, 1), rep(tokens)),
                      FD(fake.flatten(0, 1), rep(tokens)),
                      FD(real.flatten(0, 1), rep(wrong)))
        vr, vf, vm = VD(real_in, times, tokens), VD(fake, times, tokens), VD(real, times, wrong)
        loss_d = d_loss(fr, ff, fm) + d_loss(vr, vf, vm)
    if do_r1:
        r1 = r1_penalty(fr.float(), real_in) + r1_penalty(vr.float(), real_in)
        loss_d = loss_d + cfg.r1_gamma / 2 * r1 * cfg.r1_every
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return loss_d
