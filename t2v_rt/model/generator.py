"""The generator: frame = G(text, per-video latent z, time t), continuous in t.

    tokens -> TextEncoder -> e            (once per prompt)
    (e, z) -> mapping     -> w            (once per video)
    (w, t) -> synthesis   -> frame        (per frame, constant cost, any t, any batch)

Time enters only through sinusoids of 2 pi k t / T (T = 2 s, the world's base period, of
which every motion period is a divisor), reduced modulo T in float64 first, so a frame at
t = 600 s is computed as exactly as one at t = 0. The sinusoids are rotated by the video's
phase, read from the latent as in ``world.scene`` (p = atan2(z1, z0)), and mixed with
amplitudes from ``w`` into motion features: a position such as 0.5 + 0.3 sin(2 pi t / P + p)
is then a linear read-out that the text selects (which axis, which period).

From the motion features and ``w``, a small MLP makes the frame code ``h``; ``h`` gives a 4 x 4
stem and per-block scale/shift (FiLM). The 2-D pose (the shape's centre) is a per-video offset
plus per-video amplitudes of the same rotated sinusoids: every contract motion has that form. The body is a stack of :class:`UpConvAct`
blocks (nearest x2 upsample -> 3x3 conv -> positional bias -> scale/shift -> leaky ReLU), each
one module so a fused kernel can replace it. The positional bias is a conv of the pixel
coordinates relative to the pose, so drawing the shape at a place is a translation of
coordinates rather than something convolutions have to discover. There is no normalisation
layer to fold; at inference, the positional bias is a constant map and the pose term a
per-sample shift, both epilogue adds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from t2v_rt.model.config import ModelConfig
from t2v_rt.text.grammar import MAX_TOKENS, VOCAB
from t2v_rt.world.spec import BASE_PERIOD


def _mlp(dims: list[int], slope: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


class TextEncoder(nn.Module):
    """Token ids ``[B, L]`` (0 = padding) -> prompt embedding ``[B, out_dim]``."""

    def __init__(self, dim: int, layers: int, out_dim: int):
        super().__init__()
        self.embed = nn.Embedding(len(VOCAB), dim, padding_idx=0)
        self.pos = nn.Parameter(torch.randn(MAX_TOKENS, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=2 * dim, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(dim, out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pad = tokens == 0
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        x = self.encoder(x, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        return self.out((x * keep).sum(1) / keep.sum(1).clamp(min=1))


def coordinate_grid(size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[1, 2, size, size]: x and y of each pixel centre, in [-1, 1]."""
    c = (torch.arange(size, device=device, dtype=dtype) + 0.5) / size * 2 - 1
    return torch.stack([c.view(1, -1).expand(size, size), c.view(-1, 1).expand(size, size)])[None]


class UpConvAct(nn.Module):
    """Nearest x2 upsample -> 3x3 conv (+ a positional bias) -> per-sample scale/shift -> leaky ReLU.

    x: [N, C, H, W], per-sample epilogue a, b: [N, K] -> [N, K, 2H, 2W].

    The positional bias is a 3x3 conv of the pixel coordinates relative to the frame's pose
    (CoordConv, Liu et al. 2018): a constant [K, 2H, 2W] map for the coordinates, plus a
    per-sample, per-channel shift for the pose (the conv is linear), folded into the epilogue's
    addend by :meth:`epilogue`. Drawing a shape at a position is then translating coordinates, not something
    plain convolutions must discover (they learn it very slowly).
    """

    def __init__(self, cin: int, cout: int, slope: float):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.coord = nn.Conv2d(2, cout, 3, padding=1, bias=False)
        self.slope = slope

    def positional_bias(self, size: int) -> torch.Tensor:
        """[1, K, size, size]: the coordinate conv's constant output at this resolution."""
        w = self.coord.weight
        return self.coord(coordinate_grid(size, w.device, w.dtype))

    def pose_shift(self, pose: torch.Tensor) -> torch.Tensor:
        """[N, 2] pose -> [N, K]: moving the coordinates by ``pose`` shifts each channel."""
        return -pose @ self.coord.weight.sum((2, 3)).t()

    def epilogue(self, scale: torch.Tensor, shift: torch.Tensor,
                 pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample [N, K] multiplier and addend of the block's epilogue.

        ``(conv + bias_map(grid - pose)) * (1 + scale) + shift`` = ``conv * a + bias_map * a + b``
        with ``a = 1 + scale`` and ``b = shift + a * pose_shift``: the coordinates stay relative
        to the pose whatever the scale, which then zooms them per channel (the shape's size).
        """
        a = 1 + scale
        return a, shift + a * self.pose_shift(pose)

    def forward(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a``, ``b`` [N, K]: the per-sample epilogue of :meth:`epilogue`."""
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = (self.conv(x) + self.positional_bias(x.shape[-1])) * a[:, :, None, None]
        return F.leaky_relu(x + b[:, :, None, None], self.slope)


def time_features(t: torch.Tensor, harmonics: int) -> torch.Tensor:
    """[N] seconds (any float dtype) -> [N, 2 * harmonics] cos/sin of 2 pi k t / BASE_PERIOD."""
    t = torch.remainder(t.to(torch.float64), BASE_PERIOD)
    k = torch.arange(1, harmonics + 1, dtype=torch.float64, device=t.device)
    w = 2 * math.pi * t[:, None] * k[None, :] / BASE_PERIOD
    return torch.cat([torch.cos(w), torch.sin(w)], dim=1).to(torch.float32)


def rotate(basis: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """cos/sin(a_k) [N, 2H] and (cos p, sin p) [N, 2] -> cos/sin(a_k + p) [N, 2H]."""
    h = basis.shape[1] // 2
    c, s = basis[:, :h], basis[:, h:]
    cp, sp = phase[:, :1], phase[:, 1:]
    return torch.cat([c * cp - s * sp, s * cp + c * sp], dim=1)


def latent_phase(z: torch.Tensor) -> torch.Tensor:
    """[B, Z] -> [B, 2]: the unit vector (cos p, sin p) of the video's phase p = atan2(z1, z0).

    The same convention as ``world.scene``: the latent's first two entries set the phase.
    """
    return F.normalize(z[:, :2], dim=1, eps=1e-6)


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        s, m, h = cfg.style_dim, cfg.motion_channels, cfg.harmonics
        self.text = TextEncoder(cfg.text_dim, cfg.text_layers, s)
        self.mapping = _mlp([s + cfg.latent_dim, s, s, s], cfg.leaky_slope)
        # Per motion channel and harmonic: amplitudes of cos and sin (a learned phase).
        self.motion = nn.Linear(s, m * h * 2)
        self.frame_mlp = _mlp([s + m, s, s], cfg.leaky_slope)
        c0 = cfg.channels[0]
        self.stem = nn.Linear(s, c0 * cfg.base_size**2)
        self.blocks = nn.ModuleList(
            UpConvAct(cfg.channels[i], cfg.channels[i + 1], cfg.leaky_slope)
            for i in range(len(cfg.channels) - 1)
        )
        self.modulation = nn.Linear(s, 2 * sum(cfg.channels[1:]))
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)
        # The pose (the shape's centre) is exactly what the contract's motions are: a
        # per-video offset plus per-video amplitudes of the phase-rotated sinusoids.
        self.pose_offset = nn.Linear(s, 2)
        self.pose_motion = nn.Linear(s, 2 * 2 * h)
        for layer in (self.pose_offset, self.pose_motion):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.to_rgb = nn.Conv2d(cfg.channels[-1], 3, 3, padding=1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, L] token ids -> [B, style_dim]."""
        return self.text(tokens)

    def style(self, text: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Per-video style: [B, style_dim] x [B, latent_dim] -> w [B, style_dim + 2].

        The last two entries are the phase's unit vector, the rest the mapped style.
        """
        return torch.cat([self.mapping(torch.cat([text, z], dim=1)), latent_phase(z)], dim=1)

    def synthesize(self, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Frames at times ``t``: w [N, style_dim + 2], t [N] seconds -> [N, 3, R, R] in [-1, 1]."""
        return self.synthesize_with_pose(w, t)[0]

    def synthesize_with_pose(self, w: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`synthesize`, also returning the pose [N, 2] (centre, coordinates in [-1, 1])."""
        cfg = self.cfg
        n = w.shape[0]
        w, phase = w[:, :-2], w[:, -2:]
        amp = self.motion(w).view(n, cfg.motion_channels, 2 * cfg.harmonics)
        basis = rotate(time_features(t, cfg.harmonics).to(w.dtype), phase)   # [N, 2H]
        motion = (amp * basis[:, None, :]).sum(-1)                            # [N, M]
        pose_amp = self.pose_motion(w).view(n, 2, 2 * cfg.harmonics)
        pose = self.pose_offset(w) + (pose_amp * basis[:, None, :]).sum(-1)   # [N, 2]
        h = F.leaky_relu(self.frame_mlp(torch.cat([w, motion], dim=1)), cfg.leaky_slope)
        x = F.leaky_relu(self.stem(h), cfg.leaky_slope)
        x = x.view(n, cfg.channels[0], cfg.base_size, cfg.base_size)
        mod = self.modulation(h)
        offset = 0
        for block, cout in zip(self.blocks, cfg.channels[1:]):
            a, b = block.epilogue(mod[:, offset : offset + cout],
                                  mod[:, offset + cout : offset + 2 * cout], pose)
            offset += 2 * cout
            x = block(x, a, b)
        return torch.tanh(self.to_rgb(x)), pose

    def forward(self, tokens: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """tokens [B, L], z [B, Z], t [B, T] -> frames [B, T, 3, R, R]."""
        return self.forward_with_pose(tokens, z, t)[0]

    def forward_with_pose(self, tokens: torch.Tensor, z: torch.Tensor,
                          t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, L], z [B, Z], t [B, T] -> frames [B, T, 3, R, R], pose [B, T, 2]."""
        b, nt = t.shape
        w = self.style(self.encode_text(tokens), z)
        w = w.repeat_interleave(nt, dim=0)
        frames, pose = self.synthesize_with_pose(w, t.reshape(-1))
        return frames.view(b, nt, *frames.shape[1:]), pose.view(b, nt, 2)
