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
import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from t2v_rt.models.shapes.config import ModelConfig
from t2v_rt.models.shapes.discriminators import (
    FrameDiscriminator,
    VideoDiscriminator,
    d_loss,
    g_loss,
    r1_penalty,
)
from t2v_rt.models.shapes.generator import Generator, attribute_code, named_code
from t2v_rt.generators.io import atomic_write, save_generator
from t2v_rt.models.shapes import spec
from t2v_rt.models.shapes.dataset import ShapesClips, render_clips


@dataclass
class TrainConfig:
    run_dir: str = "runs"          # numbered run folders are made inside
    name: str = "shapes"
    steps: int = 20000
    batch_size: int = 16           # clips per step
    frames_per_clip: int = 3
    lr_g: float = 5e-4
    lr_d: float = 5e-4
    rec_weight: float = 1.0
    shape_weight: float = 9.0      # extra reconstruction weight near the shape
    # The extra weight covers the shape's bounding box (+ 2 pixels), not only its pixels:
    # painting background inside the box then costs as much as missing shape pixels, where
    # a weight on the shape's pixels alone makes a covering blob the cheap answer for every
    # shape (a triangle fills half its box).
    weight_box: bool = True
    pose_weight: float = 10.0      # the generator's pose is pulled to the shape's true centre
    alpha_weight: float = 1.0      # the same squared error on the coverage (alpha)
    choice_weight: float = 1.0     # cross-entropy of the text reading and the prior head
    choice_batch: int = 256        # extra captions per step for those heads alone (0: none)
    align_target: bool = True      # render the reconstruction target at the generator's pose
    lr_decay_steps: int = 0        # the last this many steps decay the learning rates linearly
    lr_final_ratio: float = 0.1    # to this share of lr_g / lr_d
    adv_weight: float = 0.05
    adv_start: int = 2500          # adversarial terms join here, ramped in over adv_ramp steps
    adv_ramp: int = 500
    d_warmup: int = 300            # the discriminators start training this many steps earlier
    r1_gamma: float = 1.0
    r1_every: int = 4
    ema_halflife_steps: float = 200.0
    seed: int = 0
    device: str = "auto"           # auto | cpu | cuda
    threads: int = 0               # CPU threads, 0: torch's default
    log_every: int = 25
    sample_every: int = 1000
    checkpoint_every: int = 500
    model: ModelConfig = field(default_factory=ModelConfig)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["model"] = ModelConfig(**d.get("model", {}))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def new_run_dir(root: str, name: str) -> Path:
    rootp = Path(root)
    rootp.mkdir(parents=True, exist_ok=True)
    nums = [int(m.group(1)) for p in rootp.iterdir() if (m := re.match(r"(\d{5})-", p.name))]
    run = rootp / f"{max(nums, default=-1) + 1:05d}-{name}"
    run.mkdir()
    return run


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


def latest_checkpoint(run: Path) -> Path | None:
    ckpts = sorted(run.glob("checkpoint-*.safetensors"))
    return ckpts[-1] if ckpts else None


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


def train(cfg: TrainConfig, resume: str | None = None, dry_run: bool = False) -> Path:
    """Train; returns the run folder. ``resume``: a run folder or checkpoint file."""
    tr = Trainer.create(cfg)
    start = 0
    if resume:
        rp = Path(resume)
        ckpt = latest_checkpoint(rp) if rp.is_dir() else rp
        if ckpt is None or not ckpt.is_file():
            raise FileNotFoundError(f"no checkpoint to resume from in {resume}")
        run = ckpt.parent
        start = tr.load(load_file(str(ckpt)))
        (run / f"config-from-{start:07d}.json").write_text(cfg.to_json() + "\n")
        log(f"resumed {ckpt} at step {start}")
    else:
        run = new_run_dir(cfg.run_dir, cfg.name)
        (run / "config.json").write_text(cfg.to_json() + "\n")
    n_g = sum(p.numel() for p in tr.G.parameters())
    log(f"run {run} | device {tr.device} | generator {n_g / 1e6:.2f}M params | "
        f"{cfg.steps} steps of {cfg.batch_size} clips x {cfg.frames_per_clip} frames")
    if dry_run:
        return run

    t_start, step_start = time.time(), start
    stats: dict[str, float] = {}

    def save(step: int) -> None:
        flat = tr.state(step)
        path = run / f"checkpoint-{step:07d}.safetensors"
        atomic_write(path, lambda tmp: save_file(flat, str(tmp)))
        save_generator(tr.G_ema, run / "generator.safetensors", {"step": str(step)})
        for old in sorted(run.glob("checkpoint-*.safetensors"))[:-2]:
            old.unlink()

    for step in range(start, cfg.steps):
        losses = tr.step(step)
        for k, v in losses.items():
            stats[k] = stats.get(k, 0.0) + float(v.detach())
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            n = cfg.log_every if done % cfg.log_every == 0 else done % cfg.log_every
            rate = (done - step_start) / max(time.time() - t_start, 1e-9)
            eta = (cfg.steps - done) / max(rate, 1e-9)
            with open(run / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": done, "steps_per_s": rate,
                                    **{k: v / n for k, v in stats.items()}}) + "\n")
            log(f"step {done}/{cfg.steps} | G rec {stats['rec'] / n:.4f} pose {stats['pose'] / n:.4f}"
                f" choice {stats['choice'] / n:.4f}"
                f" adv {stats['adv'] / n:.3f}"
                f" | D {stats['d'] / n:.3f} | {rate:.2f} steps/s | ETA "
                f"{int(eta // 3600)}:{int(eta % 3600 // 60):02d}:{int(eta % 60):02d}")
            stats.clear()
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            save(done)
        if cfg.sample_every and (done % cfg.sample_every == 0 or done == cfg.steps):
            from t2v_rt.models.shapes.samples import write_samples

            write_samples(tr.G_ema, run / f"samples-{done:07d}.mp4", tr.device)
    return run


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
