"""The generator: frame = G(text, per-video latent z, time t), continuous in t.

    tokens -> TextEncoder -> e            (once per prompt: what it names, per attribute)
    (e, z) -> prior       -> c            (once per video: every attribute, one-hot)
    (c, z) -> mapping, palettes -> w      (once per video)
    (w, t) -> synthesis   -> frame        (per frame, constant cost, any t, any batch)

Time enters only through sinusoids of 2 pi k t / T (T = 2 s, the world's base period, of
which every motion period is a divisor), reduced modulo T in float64 first, so a frame at
t = 600 s is computed as exactly as one at t = 0. The sinusoids are rotated by the video's
phase, read from the latent as in ``world.scene`` (p = atan2(z1, z0)), and mixed with
amplitudes from ``w`` into motion features: a position such as 0.5 + 0.3 sin(2 pi t / P + p)
is then a linear read-out that the text selects (which axis, which period).

The attribute code ``c`` is a bottleneck, chosen in two steps that mirror the contract:

- the text encoder reads the prompt alone and says, for every attribute (shape, colour, size,
  motion, speed, background), which value the prompt names or that it leaves it out. It is a
  tagger (:class:`TextEncoder`): each word's context-free votes for values, routed in context
  to the attribute the word speaks about;
- the *prior* head reads that and ``z`` and picks the left-out values, as the world does
  (``world.scene``: thresholds on Phi(z), never a held-out pair on its own).

A named word therefore decides its attribute alone: the rule "orange is never drawn as a
triangle", which the data teaches about left-out shapes, lives in the prior head, and the
context that sees "orange" next to "triangle" only routes words: it can never make the word
"triangle" say square (the held-out prompts are read right; ``tests/test_bundled_model.py``). The result is one one-hot code, so a left-out attribute is a hard
choice, never a blend of the values a seed could pick.

The code is factored the way the world is: the synthesis draws the shape's coverage (alpha)
from the shape, size, motion and speed entries and ``z`` only; colour and background are two
learned palettes (one RGB value per colour word and per background word), and the frame is
``bg + alpha * (fg - bg)``, the contract renderer's own compositing. A colour-shape pair the
data never showed is then a shape the body draws and a colour the palette holds, by
construction; nothing in the synthesis ever sees the pair.

From the motion features and ``w``, a small MLP makes the frame code ``h``; ``h`` gives a 4 x 4
stem and per-block scale/shift (FiLM). The 2-D pose (the shape's centre) is a per-video offset
plus per-video amplitudes of the same rotated sinusoids: every contract motion has that form.
The body is a stack of :class:`UpConvAct` blocks (nearest x2 upsample -> 3x3 conv +
coordinate term -> scale/shift -> leaky ReLU), each one module so a fused kernel can replace
it. The coordinate term is a 1 x 1 conv of each pixel's position relative to the pose, so
drawing the shape at a place is a translation of coordinates rather than something
convolutions have to discover. There is no normalisation layer to fold; the coordinate term
and the scale/shift are per-pixel epilogue arithmetic. A last 3x3 conv gives the alpha
(sigmoid), blended between the two palette colours.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from t2v_rt.generators.interface import VideoGenerator
from t2v_rt.generators.ops import COORD_FEATURES, coordinate_features
from t2v_rt.models.shapes import spec
from t2v_rt.models.shapes.config import BASE_PERIOD, ModelConfig
from t2v_rt.models.shapes.config import time_basis as time_features
from t2v_rt.models.shapes.grammar import MAX_TOKENS, VOCAB

# The attribute code: one one-hot group per attribute, in the order of ``spec.ATTRIBUTES``.
CODE_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = tuple(spec.ATTRIBUTES.items())
CODE_DIM = sum(len(values) for _, values in CODE_GROUPS)
# The text encoder's reading: per attribute its values, then one slot for "left out".
NAMED_DIM = CODE_DIM + len(CODE_GROUPS)
# The attributes the synthesis body draws from; colour and background go to the palettes.
BODY_GROUPS = ("shape", "size", "motion", "speed")
# Palette entries are tanh(PALETTE_GAIN * weight): a learning-rate multiplier (as StyleGAN's
# equalised learning rate). Adam moves a weight by about lr per step, so without it a white
# background (tanh^-1 of about 1) would take ten thousand steps to reach.
PALETTE_GAIN = 10.0


def _slices(named: bool) -> dict[str, slice]:
    out, start = {}, 0
    for name, values in CODE_GROUPS:
        n = len(values) + int(named)
        out[name] = slice(start, start + n)
        start += n
    return out


CODE_SLICES = _slices(named=False)
NAMED_SLICES = _slices(named=True)


def attribute_code(scenes: list[dict[str, str]]) -> torch.Tensor:
    """Full attribute dicts -> their one-hot codes [B, CODE_DIM] (training targets)."""
    code = torch.zeros(len(scenes), CODE_DIM)
    for i, attrs in enumerate(scenes):
        for name, values in CODE_GROUPS:
            code[i, CODE_SLICES[name].start + values.index(attrs[name])] = 1
    return code


def named_code(prompts: list[dict[str, str | None]]) -> torch.Tensor:
    """What prompts name (None: left out) -> one-hot [B, NAMED_DIM] (the text encoder's targets)."""
    code = torch.zeros(len(prompts), NAMED_DIM)
    for i, attrs in enumerate(prompts):
        for name, values in CODE_GROUPS:
            v = attrs.get(name)
            code[i, NAMED_SLICES[name].start + (len(values) if v is None else values.index(v))] = 1
    return code


def one_hot_groups(logits: torch.Tensor, slices: dict[str, slice]) -> torch.Tensor:
    """[B, D] logits -> one-hot per group: the most likely entry of each (exact ties, as in
    an untrained model's all-zero votes, keep every tied entry)."""
    parts = []
    for sl in slices.values():
        g = logits[:, sl]
        parts.append((g == g.amax(1, keepdim=True)).to(logits.dtype))
    return torch.cat(parts, dim=1)


def code_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """[B, CODE_DIM] logits -> one-hot codes: the most likely value of each attribute."""
    return one_hot_groups(logits, CODE_SLICES)


def merge_code(named: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """The named one-hot [B, NAMED_DIM] with its left-out groups filled from ``picked``
    [B, CODE_DIM]: a named value stands; a left-out slot takes the picked value."""
    parts = []
    for name, values in CODE_GROUPS:
        g = named[:, NAMED_SLICES[name]]
        parts.append(g[:, :-1] + g[:, -1:] * picked[:, CODE_SLICES[name]])
    return torch.cat(parts, dim=1)


def grouped_cross_entropy(logits: torch.Tensor, target: torch.Tensor, slices: dict[str, slice],
                          rows: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Cross-entropy per group against one-hot ``target``, summed over groups; ``rows``
    (per group, [B] bool) restricts a group to some rows (a group with none adds nothing)."""
    loss = logits.new_zeros((), dtype=torch.float32)
    for name, sl in slices.items():
        ce = F.cross_entropy(logits[:, sl].float(), target[:, sl].argmax(1), reduction="none")
        if rows is None:
            loss = loss + ce.mean()
        else:
            m = rows[name].to(ce.dtype)
            loss = loss + (ce * m).sum() / m.sum().clamp(min=1)
    return loss


def left_out_rows(named: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per attribute, [B] bool: the prompt leaves it out (its named one-hot's last slot)."""
    return {name: named[:, sl.stop - 1] > 0.5 for name, sl in NAMED_SLICES.items()}


def _mlp(dims: list[int], slope: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


# Word votes and the "left out" logits are read through this gain: a learning-rate multiplier
# for tables that must reach logit margins of several units (see PALETTE_GAIN).
VOTE_GAIN = 20.0


class TextEncoder(nn.Module):
    """Token ids ``[B, L]`` (0 = padding) -> what the prompt names, ``[B, NAMED_DIM]`` logits:
    per attribute, its values, then "left out".

    A tagger, built so that a named word decides its own attribute alone. Every word carries
    context-free *votes* for values (a table: "ball" votes circle, "quickly" votes fast,
    "circle" votes both the circle shape and the circling motion). A Transformer reads the
    words in context and only *routes* each word to the attribute it speaks about (a softmax
    over the attributes and "none": "circle" in "a red circle" is a shape, in "moving in a
    circle" a motion; "a", "moving", "on" route to none). An attribute's value logits are the
    routed votes summed over the words; its "left out" logit falls with how much is routed to
    it. Context can move a word between attributes but never changes what the word says, so a
    colour next to a shape it never appeared with cannot change the shape.
    """

    def __init__(self, dim: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(len(VOCAB), dim, padding_idx=0)
        self.pos = nn.Parameter(torch.empty(MAX_TOKENS, dim))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=2 * dim, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.route = nn.Linear(dim, len(CODE_GROUPS) + 1)
        self.votes = nn.Embedding(len(VOCAB), CODE_DIM, padding_idx=0)
        nn.init.zeros_(self.votes.weight)
        # Per attribute: "left out" logit = gain * (bias - slope * words routed to it).
        self.absent = nn.Parameter(torch.tensor([[0.0, 0.1]] * len(CODE_GROUPS)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pad = tokens == 0
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        x = self.encoder(x, src_key_padding_mask=pad)
        route = self.route(x).softmax(-1) * (~pad).unsqueeze(-1).to(x.dtype)   # [B, L, G + 1]
        votes = VOTE_GAIN * self.votes(tokens)                                  # [B, L, CODE_DIM]
        parts = []
        for k, (name, _) in enumerate(CODE_GROUPS):
            r = route[..., k : k + 1]                                           # [B, L, 1]
            values = (r * votes[..., CODE_SLICES[name]]).sum(1)                 # [B, n]
            bias, slope = self.absent[k, 0], self.absent[k, 1]
            absent = VOTE_GAIN * (bias - slope * r.sum(1))                      # [B, 1]
            parts += [values, absent]
        return torch.cat(parts, dim=1)


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


class FrameHead(NamedTuple):
    """What the synthesis body needs per frame (:meth:`Generator.frame_head`)."""

    x: torch.Tensor             # [N, C0, base, base]: the stem
    scales: list[torch.Tensor]  # per block [N, K]: the FiLM scale (1 + modulation)
    shifts: list[torch.Tensor]  # per block [N, K]
    pose: torch.Tensor          # [N, 2]: the shape's centre
    fg: torch.Tensor            # [N, 3]: the shape's colour, in [-1, 1]
    bg: torch.Tensor            # [N, 3]: the background's


class Generator(VideoGenerator):
    """The shapes-world generator (architecture ``shapes``, continuous in time)."""

    Config = ModelConfig

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.cfg = cfg
        s, m, h = cfg.style_dim, cfg.motion_channels, cfg.harmonics
        self.text = TextEncoder(cfg.text_dim, cfg.text_layers)
        self.prior = _mlp([NAMED_DIM + cfg.latent_dim, s, s, CODE_DIM], cfg.leaky_slope)
        body = sum(len(spec.ATTRIBUTES[g]) for g in BODY_GROUPS)
        self.mapping = _mlp([body + cfg.latent_dim, s, s, s], cfg.leaky_slope)
        # One learned RGB value per colour word and per background word (see PALETTE_GAIN).
        self.palette = nn.Linear(len(spec.COLOURS), 3, bias=False)
        self.backdrop = nn.Linear(len(spec.BACKGROUNDS), 3, bias=False)
        nn.init.zeros_(self.palette.weight)
        nn.init.zeros_(self.backdrop.weight)
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
        self.to_alpha = nn.Conv2d(cfg.channels[-1], 1, 3, padding=1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, L] token ids -> [B, NAMED_DIM]: per attribute, the value the prompt names or
        "left out" (logits; see :class:`TextEncoder`)."""
        return self.text(tokens)

    def prior_logits(self, named: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The named one-hot [B, NAMED_DIM] x [B, latent_dim] -> [B, CODE_DIM] logits of the
        values the latent picks (only the left-out attributes' are used)."""
        return self.prior(torch.cat([named, uniform_latent(z)], dim=1))

    def choose(self, text: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """[B, NAMED_DIM] named logits x [B, latent_dim] -> the one-hot code [B, CODE_DIM]."""
        named = one_hot_groups(text, NAMED_SLICES)
        return merge_code(named, code_from_logits(self.prior_logits(named, z)))

    def choice_loss(self, text: torch.Tensor, z: torch.Tensor, named: torch.Tensor,
                    code: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of both heads: the named logits ``text`` against what the prompt names
        ``named`` [B, NAMED_DIM]; the prior head, fed the true ``named``, against the full
        code [B, CODE_DIM] on the attributes the prompt leaves out."""
        return (grouped_cross_entropy(text, named, NAMED_SLICES)
                + grouped_cross_entropy(self.prior_logits(named, z), code, CODE_SLICES,
                                        rows=left_out_rows(named)))

    def style(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The interface's per-video work: token ids [B, L] x [B, latent_dim] -> w."""
        return self.style_from_reading(self.encode_text(tokens), z)

    def style_from_reading(self, text: torch.Tensor, z: torch.Tensor,
                           code: torch.Tensor | None = None) -> torch.Tensor:
        """Per-video style: [B, NAMED_DIM] x [B, latent_dim] -> w [B, style_dim + 8].

        ``code`` [B, CODE_DIM] overrides the chosen one-hot code (teacher forcing in
        training). ``w`` is the mapped style of the body's attributes, then the phase's unit
        vector, the shape's RGB and the background's RGB (both in [-1, 1]).
        """
        if code is None:
            code = self.choose(text, z)
        body = torch.cat([code[:, CODE_SLICES[g]] for g in BODY_GROUPS], dim=1)
        w = self.mapping(torch.cat([body, uniform_latent(z)], dim=1))
        fg = torch.tanh(PALETTE_GAIN * self.palette(code[:, CODE_SLICES["colour"]]))
        bg = torch.tanh(PALETTE_GAIN * self.backdrop(code[:, CODE_SLICES["background"]]))
        return torch.cat([w, latent_phase(z), fg, bg], dim=1)

    def synthesize(self, w: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The interface's per-frame work: w [N, style_dim + 8], time features [N, 2H]
        (:meth:`ModelConfig.time_features`) -> frames [N, 3, R, R] in [-1, 1]."""
        return self.synthesize_basis(w, features)[0]

    def synthesize_at(self, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Frames at times ``t``: w [N, style_dim + 8], t [N] seconds -> [N, 3, R, R] in [-1, 1]."""
        return self.synthesize_all(w, t)[0]

    def synthesize_with_pose(self, w: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`synthesize`, also returning the pose [N, 2] (centre, coordinates in [-1, 1])."""
        frames, _, pose = self.synthesize_all(w, t)
        return frames, pose

    def synthesize_all(self, w: torch.Tensor,
                       t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Frames [N, 3, R, R], the shape's coverage (alpha) [N, 1, R, R] and the pose [N, 2]."""
        return self.synthesize_basis(w, time_features(t, self.cfg.harmonics).to(w.dtype))

    def synthesize_basis(self, w: torch.Tensor,
                         time: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As :meth:`synthesize_all`, from the time basis [N, 2H] (:func:`time_features`,
        computed in float64 on the host): what compiled graphs take instead of seconds."""
        head = self.frame_head(w, time)
        x = head.x
        for block, a, b in zip(self.blocks, head.scales, head.shifts):
            x = block(x, a, b, head.pose)
        alpha = torch.sigmoid(self.to_alpha(x))
        frames = head.bg[:, :, None, None] + alpha * (head.fg - head.bg)[:, :, None, None]
        return frames, alpha, head.pose

    def frame_head(self, w: torch.Tensor, time: torch.Tensor) -> FrameHead:
        """The per-frame work before the convolutions (small matrix products): the 4 x 4
        stem, every block's scale/shift, the pose, the two colours."""
        cfg = self.cfg
        n, s = w.shape[0], cfg.style_dim
        w, phase, fg, bg = w[:, :s], w[:, s : s + 2], w[:, s + 2 : s + 5], w[:, s + 5 : s + 8]
        amp = self.motion(w).view(n, cfg.motion_channels, 2 * cfg.harmonics)
        basis = rotate(time, phase)                                           # [N, 2H]
        motion = (amp * basis[:, None, :]).sum(-1)                            # [N, M]
        pose_amp = self.pose_motion(w).view(n, 2, 2 * cfg.harmonics)
        pose = self.pose_offset(w) + (pose_amp * basis[:, None, :]).sum(-1)   # [N, 2]
        h = F.leaky_relu(self.frame_mlp(torch.cat([w, motion], dim=1)), cfg.leaky_slope)
        x = F.leaky_relu(self.stem(h), cfg.leaky_slope)
        x = x.view(n, cfg.channels[0], cfg.base_size, cfg.base_size)
        mod = self.modulation(h)
        scales, shifts, offset = [], [], 0
        for cout in cfg.channels[1:]:
            scales.append(1 + mod[:, offset : offset + cout])
            shifts.append(mod[:, offset + cout : offset + 2 * cout])
            offset += 2 * cout
        return FrameHead(x, scales, shifts, pose, fg, bg)

    def forward(self, tokens: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """tokens [B, L], z [B, Z], t [B, T] -> frames [B, T, 3, R, R]."""
        return self.forward_with_pose(tokens, z, t)[0]

    def forward_with_pose(self, tokens: torch.Tensor, z: torch.Tensor,
                          t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, L], z [B, Z], t [B, T] -> frames [B, T, 3, R, R], pose [B, T, 2]."""
        b, nt = t.shape
        w = self.style(tokens, z)
        w = w.repeat_interleave(nt, dim=0)
        frames, pose = self.synthesize_with_pose(w, t.reshape(-1))
        return frames.view(b, nt, *frames.shape[1:]), pose.view(b, nt, 2)

