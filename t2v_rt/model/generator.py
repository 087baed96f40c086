"""The generator: frame = G(text, per-video latent z, time t), continuous in t.

    tokens -> TextEncoder -> e            (once per prompt)
    (e, z) -> choice      -> c            (once per video: every attribute, one-hot)
    (c, z) -> mapping     -> w            (once per video)
    (w, t) -> synthesis   -> frame        (per frame, constant cost, any t, any batch)

Time enters only through sinusoids of 2 pi k t / T (T = 2 s, the world's base period, of
which every motion period is a divisor), reduced modulo T in float64 first, so a frame at
t = 600 s is computed as exactly as one at t = 0. The sinusoids are rotated by the video's
phase, read from the latent as in ``world.scene`` (p = atan2(z1, z0)), and mixed with
amplitudes from ``w`` into motion features: a position such as 0.5 + 0.3 sin(2 pi t / P + p)
is then a linear read-out that the text selects (which axis, which period).

The attribute code ``c`` is a bottleneck: the choice head reads the prompt and the latent and
names one value of every attribute (shape, colour, size, motion, speed, background), picking
the ones the prompt leaves out from ``z``; the synthesis sees only that one-hot code and ``z``.
A left-out attribute is then a hard choice, never a blend of the values a seed could pick,
and a colour-shape pair the data never showed is two independent entries of the code.

From the motion features and ``w``, a small MLP makes the frame code ``h``; ``h`` gives a 4 x 4
stem and per-block scale/shift (FiLM). The 2-D pose (the shape's centre) is a per-video offset
plus per-video amplitudes of the same rotated sinusoids: every contract motion has that form.
The body is a stack of :class:`UpConvAct` blocks (nearest x2 upsample -> 3x3 conv +
coordinate term -> scale/shift -> leaky ReLU), each one module so a fused kernel can replace
it. The coordinate term is a 1 x 1 conv of each pixel's position relative to the pose, so
drawing the shape at a place is a translation of coordinates rather than something
convolutions have to discover. There is no normalisation layer to fold; the coordinate term
and the scale/shift are per-pixel epilogue arithmetic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from t2v_rt.model.config import ModelConfig
from t2v_rt.text.grammar import MAX_TOKENS, VOCAB
from t2v_rt.world import spec
from t2v_rt.world.spec import BASE_PERIOD

# The attribute code: one one-hot group per attribute, in the order of ``spec.ATTRIBUTES``.
CODE_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = tuple(spec.ATTRIBUTES.items())
CODE_DIM = sum(len(values) for _, values in CODE_GROUPS)


def attribute_code(scenes: list[dict[str, str]]) -> torch.Tensor:
    """Full attribute dicts -> their one-hot codes [B, CODE_DIM] (training targets)."""
    code = torch.zeros(len(scenes), CODE_DIM)
    for i, attrs in enumerate(scenes):
        start = 0
        for name, values in CODE_GROUPS:
            code[i, start + values.index(attrs[name])] = 1
            start += len(values)
    return code


def code_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """[B, CODE_DIM] logits -> one-hot codes: the most likely value of each attribute."""
    parts, start = [], 0
    for _, values in CODE_GROUPS:
        g = logits[:, start : start + len(values)]
        parts.append((g == g.amax(1, keepdim=True)).to(logits.dtype))
        start += len(values)
    return torch.cat(parts, dim=1)


def code_loss(logits: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the choice head against the true one-hot code, summed over attributes."""
    loss, start = logits.new_zeros(()), 0
    for _, values in CODE_GROUPS:
        sl = slice(start, start + len(values))
        loss = loss + F.cross_entropy(logits[:, sl].float(), code[:, sl].argmax(1))
        start += len(values)
    return loss


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


COORD_FEATURES = 5


def coordinate_features(pose: torch.Tensor, size: int) -> torch.Tensor:
    """[N, 2] pose -> [N, 5, size, size]: each pixel centre relative to the pose.

    Channels ``dx, dy, |dx|, |dy|, r`` (coordinates in [-1, 1] across the frame; ``r`` the
    distance, CoordConv's radial channel). The shapes of the contract are then intersections
    of a few half-spaces in these features (circle: r; square: |dx| and |dy|; triangle: dy
    and |dx|), which a leaky-ReLU network forms in a layer or two.
    """
    c = (torch.arange(size, device=pose.device, dtype=pose.dtype) + 0.5) / size * 2 - 1
    dx = c.view(1, 1, size) - pose[:, 0, None, None]
    dy = c.view(1, size, 1) - pose[:, 1, None, None]
    dx, dy = torch.broadcast_tensors(dx, dy)
    r = torch.sqrt(dx * dx + dy * dy + 1e-8)
    return torch.stack([dx, dy, dx.abs(), dy.abs(), r], dim=1)


class UpConvAct(nn.Module):
    """Nearest x2 upsample -> 3x3 conv + coordinate term -> per-sample scale/shift -> leaky ReLU.

    x: [N, C, H, W], per-sample a, b: [N, K], pose: [N, 2] -> [N, K, 2H, 2W]:
    ``leaky_relu((conv(up(x)) + coord(coordinate_features(pose))) * a + b)``.

    The coordinate term is a 1 x 1 conv of the pixel coordinates relative to the frame's pose
    (CoordConv, Liu et al. 2018, with its radial channel): per output pixel, five
    multiply-adds of numbers computed from the pixel's position, an epilogue a fused kernel
    evaluates in registers. Drawing a shape at a position is then translating coordinates, not
    something plain convolutions must discover (they learn it very slowly). ``a`` multiplies
    the coordinates too, so it zooms them per channel (the shape's size).
    """

    def __init__(self, cin: int, cout: int, slope: float):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.coord = nn.Conv2d(COORD_FEATURES, cout, 1, bias=False)
        self.slope = slope

    def forward(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                pose: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.conv(x) + self.coord(coordinate_features(pose, x.shape[-1]))
        return F.leaky_relu(x * a[:, :, None, None] + b[:, :, None, None], self.slope)


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


def uniform_latent(z: torch.Tensor) -> torch.Tensor:
    """The latent through the standard normal CDF: uniform on [0, 1], where the world's picks
    of left-out attributes and start positions are thresholds and linear maps (``world.scene``)."""
    return 0.5 * (1 + torch.erf(z * (0.5**0.5)))


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        s, m, h = cfg.style_dim, cfg.motion_channels, cfg.harmonics
        self.text = TextEncoder(cfg.text_dim, cfg.text_layers, s)
        self.choice = _mlp([s + cfg.latent_dim, s, s, CODE_DIM], cfg.leaky_slope)
        self.mapping = _mlp([CODE_DIM + cfg.latent_dim, s, s, s], cfg.leaky_slope)
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

    def choice_logits(self, text: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """[B, style_dim] x [B, latent_dim] -> [B, CODE_DIM] logits of every attribute's value."""
        return self.choice(torch.cat([text, uniform_latent(z)], dim=1))

    def style(self, text: torch.Tensor, z: torch.Tensor,
              code: torch.Tensor | None = None) -> torch.Tensor:
        """Per-video style: [B, style_dim] x [B, latent_dim] -> w [B, style_dim + 2].

        ``code`` [B, CODE_DIM] overrides the choice head's one-hot code (teacher forcing in
        training). The last two entries of ``w`` are the phase's unit vector, the rest the
        mapped style.
        """
        if code is None:
            code = code_from_logits(self.choice_logits(text, z))
        w = self.mapping(torch.cat([code, uniform_latent(z)], dim=1))
        return torch.cat([w, latent_phase(z)], dim=1)

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
            a = 1 + mod[:, offset : offset + cout]
            b = mod[:, offset + cout : offset + 2 * cout]
            offset += 2 * cout
            x = block(x, a, b, pose)
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
