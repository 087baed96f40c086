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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from t2v_rt.errors import ConfigError, UsageError
from t2v_rt.generators.config import bounded
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
# The run folders, checkpoints, resuming and settings are every trainer's (t2v_rt.training);
# the names below stay importable from here.
from t2v_rt.training import runs
from t2v_rt.training.runs import (
    MAX_STEPS,
    Stop as _Stop,
    TrainError,
    TrainInterrupted,
    flat_state as _flat_state,
    load_opt as _load_opt,
    log,
    sub as _sub,
    write_file as _write_file,
)
from t2v_rt.training.settings import (
    Settings,
    check_setting,
    flag as _flag,
    read_settings,
    show as _show,
    text as _text,
)
from t2v_rt.training.settings import apply_settings as _apply_settings

MAX_WEIGHT = 1e6
# batch_size x frames_per_clip x resolution^2: what one step renders and generates. 2^30
# pixels (12 GiB of float32 RGB per copy) is far beyond any run this model needs.
MAX_PIXELS_PER_STEP = 1 << 30
MIN_RESOLUTION = 16               # the discriminators' 4x4 kernels need 16 pixels or more


@dataclass
class TrainConfig(Settings):
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

    @classmethod
    def check_value(cls, f, value: Any, source: str) -> Any:
        return _check_setting(f, value, source)

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
        return super().validate(source)


def _check_setting(f, value: Any, source: str) -> Any:
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
    return check_setting(f, value, source)


def apply_settings(cfg: TrainConfig, items: list[str]) -> None:
    """``--set KEY=VALUE`` items onto ``cfg``, each checked. VALUE is JSON (a string setting
    takes the text as it is); NaN, Infinity and numbers out of range are refused."""
    _apply_settings(cfg, items)


def read_config(path: str | Path) -> TrainConfig:
    """A training config JSON file (e.g. a run's config.json) -> the validated config."""
    return read_settings(TrainConfig, path)


def _has_train_config(run: Path) -> bool:
    """``run`` holds a training config as config.json (every run folder does; those made
    before run.json are known by it alone)."""
    data = runs.read_run_config(run)
    return data is not None and "steps" in data and "model" in data


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
    """``--resume`` -> (checkpoint, the run folder to continue in or None, its record)
    (:func:`t2v_rt.training.runs.resume_target`)."""
    return runs.resume_target(resume, _has_train_config)


def _load_checkpoint(tr: Trainer, path: Path) -> tuple[int, dict[str, str]]:
    """Check ``path`` against the trainer's model from the safetensors header alone (names,
    shapes), then load it; returns (step, metadata). Every failure is one UsageError line."""
    beside = path.parent / "config.json"
    config_hint = f"--config {beside}" if _has_train_config(path.parent) else "--config RUN/config.json"
    flat, meta = runs.load_checkpoint(
        path, {"G": tr.G, "G_ema": tr.G_ema, "FD": tr.FD, "VD": tr.VD},
        {"opt_g": tr.opt_g, "opt_d": tr.opt_d}, {}, config_hint)
    try:
        return tr.load(flat), meta
    except (RuntimeError, KeyError, ValueError) as e:
        raise UsageError(f"--resume {path} is not a readable safetensors checkpoint "
                         f"({type(e).__name__}: {str(e)[:100]}); pass a checkpoint-*."
                         "safetensors written by t2v-rt train, or its run folder") from None


class _Run(runs.Run):
    """The shapes trainer's run folder (:class:`t2v_rt.training.runs.Run`); its raw writes go
    through this module's ``_write_file`` (the tests make it fail like a full disk)."""

    def write_file(self, path: Path, data: bytes) -> None:
        _write_file(path, data)


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

    def describe(run: runs.Run) -> str:
        n_g = sum(p.numel() for p in tr.G.parameters())
        return (f"run {run.path} | device {tr.device} | generator {n_g / 1e6:.2f}M params | "
                f"{cfg.steps} steps of {cfg.batch_size} clips x {cfg.frames_per_clip} frames")

    return runs.run_training(
        tr, cfg, resume, target, dry_run, stop, load=lambda ckpt: _load_checkpoint(tr, ckpt),
        describe=describe, loop=lambda run, start: _train_steps(tr, cfg, run, start, stop),
        oom_hint=f"lower batch_size (now {cfg.batch_size}) or choice_batch (now "
                 f"{cfg.choice_batch})", make_run=_Run)


def _train_steps(tr: Trainer, cfg: TrainConfig, run: runs.Run, start: int,
                 stop: Callable[[], bool] | None) -> None:
    """The loop: steps, metrics, checkpoints, samples. ``run.done`` counts finished steps."""
    progress = runs.Progress(start)
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
            rate = progress.rate(done)
            run.append_metrics({"step": done, "steps_per_s": rate,
                                **{k: v / n for k, v in stats.items()}})
            log(f"step {done}/{cfg.steps} | G rec {stats['rec'] / n:.4f} pose {stats['pose'] / n:.4f}"
                f" choice {stats['choice'] / n:.4f}"
                f" adv {stats['adv'] / n:.3f}"
                f" | D {stats['d'] / n:.3f} | {rate:.2f} steps/s | ETA "
                f"{runs.eta((cfg.steps - done) / max(rate, 1e-9))}")
            stats.clear()
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            run.save(tr, done)
        if cfg.sample_every and (done % cfg.sample_every == 0 or done == cfg.steps):
            from t2v_rt.models.shapes.samples import write_samples

            run.write_with(run.path / f"samples-{done:07d}.mp4",
                           lambda tmp: write_samples(tr.G_ema, tmp, tr.device),
                           "sample video")


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


__all__ = ["TrainConfig", "TrainError", "TrainInterrupted", "Trainer", "apply_settings",
           "read_config", "train"]
