"""The ``stylegan-v`` generator: a StyleGAN2-style synthesis network with continuous-time
motion codes, after StyleGAN-V (Skorokhodov, Tulyakov and Elhoseiny, CVPR 2022).

    tokens or sentence embedding -> text encoder -> t       (per prompt)
    [t, normalise(z)] -> mapping (lrelu MLP) -> w           (per video)
    w -> motion modulation (gamma, beta)                    (per video)
    w -> time-feature gains a (time_modulation "features")  (per video; [B, 2K])
    w_full = [w | gamma | beta (| a)]                       (style(); [B, config.style_width])
    f = time features of t (host, float64, mod each period) (config.time_features; [N, 2K])
    f = f * (1 + a)                                         (time_modulation "features" only)
    m = M2(lrelu(M1(f) * (1 + gamma) + beta))               (per frame motion code)
    frame = synthesis(style = [w, m])                       (per frame; any batch, any times)

StyleGAN-V conditions its motion codes on the video's latent; here the per-video part is a
FiLM (gamma, beta) of the motion MLP's hidden layer, so each video moves its own way through
the same sinusoids of time. With ``time_modulation`` "features", each video also scales every
time feature by its own gain before the MLP, as StyleGAN-V's motion codes set the amplitudes
of its sinusoids: a video then picks its periods (how fast it moves) and, through the gains of
each period's cosine and sine, its phase, by a linear function of ``w``, where the FiLM of the
hidden layer can only do that through whatever mixture of periods ``M1`` learnt. The motion
code joins ``w`` in every layer's style:
``s_l = A_l([w, m])`` (an ``nn.Linear``, bias initialised to 1, as StyleGAN2's affines).

Synthesis: a learned constant 4x4 input -> :class:`ModulatedConv` (3x3, at 4x4) -> one
:class:`ModulatedUpConv` per resolution 8, 16, ..., ``resolution`` (each followed by
``block_convs`` - 1 :class:`ModulatedConv` at its resolution) -> :class:`ToRGB` (1x1
modulated conv, no demodulation, + bias) -> tanh. StyleGAN2 has two 3x3 convs per resolution
(``block_convs`` 2) and sums toRGB outputs over resolutions (skip architecture); this one
defaults to one upsampling conv per resolution and keeps one toRGB at the end, to stay light
on the CPU; the widths are StyleGAN2's
(512 at 4..16, then halving to 64 at 128 and 256 for the default 256x256).

Every modulated conv is written in the *non-grouped* form of StyleGAN2's
``fused_modconv=False`` path (modulate the input per sample and channel, a plain conv2d with
the shared weight, demodulate the output per sample and channel), with this exact op order,
which a fusion pass recognises (``ModulatedUpConv.forward``)::

    s = affine(style)                                   # [N, Cin]
    d = rsqrt(s^2 @ sum_{ky,kx}(weight^2)^T + 1e-8)     # [N, Cout], = rsqrt(sum_{c,ky,kx}
                                                        #   (weight[k,c] s[n,c])^2 + 1e-8)
    x = x * s[:, :, None, None]
    x = F.interpolate(x, scale_factor=2, mode="nearest")    # ModulatedUpConv only
    x = F.conv2d(x, weight, padding=1)
    x = x * d[:, :, None, None]
    x = x + noise * noise_strength[None, :, None, None]     # noise: buffer [1, 1, H, W]
    x = x + bias[None, :, None, None]
    x = x + coord(coordinate_features(centre, H, W))        # coordinates "absolute" only
    x = F.leaky_relu(x, 0.2) * sqrt(2)

With ``coordinates`` "absolute", every 3x3 modulated conv adds that learned 1x1 conv of the
pixel coordinates about the frame centre (x, y, |x|, |y|, r; CoordConv, Liu et al. 2018, as
CIPS and INR-GAN feed coordinates to every layer): the next layer's modulation then weighs
ramps of x and y per video and frame, so drawing an edge at a position the style names is a
threshold of a modulated ramp, not a pattern the convs must build from the 4x4 constant
through nearest upsampling (where edges come out soft and corners round). The fusion pass
maps the term onto the kernel's coordinate epilogue (a constant pose: the centre).

The equalised-learning-rate gain 1 / sqrt(fan_in) is folded into the stored weights (drawn
N(0, 1 / fan_in)), so the forward has no extra scale. Noise is a fixed buffer per layer (saved
with the weights): the generator is deterministic, no RNG at inference; its per-channel
strength starts at 0, as StyleGAN2's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from t2v_rt.generators.interface import VideoGenerator
from t2v_rt.generators.layers import embedding as _embedding
from t2v_rt.generators.layers import linear as _linear
from t2v_rt.generators.layers import masked_mean
from t2v_rt.generators.layers import normal_ as _normal_
from t2v_rt.generators.layers import randn as _randn
from t2v_rt.generators.ops import COORD_FEATURES, coordinate_features
from t2v_rt.models.stylegan_v.config import StyleganVConfig

SQRT2 = math.sqrt(2.0)


class MeanTextEncoder(nn.Module):
    """Token ids [B, L] (0 = pad) -> text code [B, dim]: embedding, mean over the non-pad
    tokens, Linear -> leaky ReLU 0.2 -> Linear."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.embed = _embedding(vocab_size, dim)
        self.fc1 = _linear(dim, dim, SQRT2)
        self.fc2 = _linear(dim, dim)

    def forward(self, tokens):
        mean = masked_mean(self.embed, tokens)
        return self.fc2(F.leaky_relu(self.fc1(mean), 0.2))


class SentenceTextEncoder(nn.Module):
    """A frozen sentence embedding [B, E] (config ``text_encoder``; unit length, computed on the
    host) -> text code [B, dim]: a trained Linear (``proj``, in place of the token embedding;
    gain sqrt(E), so the unit-length embedding gives codes of unit variance, as a token
    embedding's rows have), then Linear -> leaky ReLU 0.2 -> Linear as :class:`MeanTextEncoder`."""

    def __init__(self, width: int, dim: int):
        super().__init__()
        self.proj = _linear(width, dim, math.sqrt(width))
        self.fc1 = _linear(dim, dim, SQRT2)
        self.fc2 = _linear(dim, dim)

    def forward(self, embedding):
        return self.fc2(F.leaky_relu(self.fc1(self.proj(embedding)), 0.2))


class MappingNetwork(nn.Module):
    """[text code, z normalised to unit second moment] -> w: ``layers`` x (Linear -> leaky ReLU
    0.2 x sqrt 2)."""

    def __init__(self, cin: int, w_dim: int, layers: int):
        super().__init__()
        dims = [cin] + [w_dim] * layers
        self.layers = nn.ModuleList(_linear(dims[i], dims[i + 1], 1.0) for i in range(layers))

    def forward(self, x):
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2) * SQRT2
        return x


class MotionNetwork(nn.Module):
    """Time features [N, F] and the video's (gamma, beta) [N, H] -> motion code [N, H]:
    ``fc2(lrelu(fc1(f) * (1 + gamma) + beta) * sqrt 2)``."""

    def __init__(self, features: int, dim: int):
        super().__init__()
        self.fc1 = _linear(features, dim, SQRT2)
        self.fc2 = _linear(dim, dim)

    def forward(self, f, gamma, beta):
        h = self.fc1(f) * (1 + gamma) + beta
        return self.fc2(F.leaky_relu(h, 0.2) * SQRT2)


class _Modulated(nn.Module):
    """Parameters of a modulated conv: ``affine`` (style -> s [N, Cin], bias 1), ``weight``
    [Cout, Cin, k, k] (gain folded in), ``bias`` [Cout]."""

    def __init__(self, cin: int, cout: int, style_dim: int, kernel: int):
        super().__init__()
        self.affine = _linear(style_dim, cin, 1.0, bias=1.0)
        self.weight = nn.Parameter(_randn(cout, cin, kernel, kernel,
                                          std=1 / math.sqrt(cin * kernel * kernel)))
        self.bias = nn.Parameter(torch.zeros(cout))

    def demodulation(self, s):
        """s [N, Cin] -> d [N, Cout] = rsqrt(sum_{c,ky,kx} (weight[k,c,ky,kx] s[n,c])^2 + 1e-8)."""
        return torch.rsqrt(s.square() @ self.weight.square().sum(dim=(2, 3)).t() + 1e-8)


class _Noisy(_Modulated):
    """Adds the fixed per-layer noise: ``noise`` buffer [1, 1, size, size] and its learned
    per-channel strength ``noise_strength`` [Cout] (0 at init); with ``coordinates``, also
    ``coord``, a 1x1 conv (no bias, [Cout, 5, 1, 1]) of the pixel coordinates
    (:func:`~t2v_rt.generators.ops.coordinate_features` about the frame centre: x, y, |x|,
    |y|, r), the term :meth:`position` adds before the activation."""

    def __init__(self, cin: int, cout: int, style_dim: int, size: int, coordinates: bool = False):
        super().__init__(cin, cout, style_dim, 3)
        self.register_buffer("noise", _randn(1, 1, size, size))
        self.noise_strength = nn.Parameter(torch.zeros(cout))
        self.coord = None
        if coordinates:
            self.coord = nn.Conv2d(COORD_FEATURES, cout, 1, bias=False)
            _normal_(self.coord.weight, 1 / math.sqrt(COORD_FEATURES))
            # The frame centre as a pose of every sample: a constant, not saved.
            self.register_buffer("centre", torch.zeros(1, 2), persistent=False)

    def position(self, x):
        """x [N, Cout, H, W] plus the coordinate term (``coord`` of the pixel coordinates)."""
        return x + self.coord(coordinate_features(self.centre, x.shape[-2], x.shape[-1]))


class ModulatedConv(_Noisy):
    """3x3 modulated conv with demodulation, noise, bias, leaky ReLU (no resampling):
    [N, Cin, H, W], style [N, style_dim] -> [N, Cout, H, W]. Op order as
    :class:`ModulatedUpConv` without the upsample."""

    def forward(self, x, style):
        s = self.affine(style)
        d = self.demodulation(s)
        x = x * s[:, :, None, None]
        x = F.conv2d(x, self.weight, padding=1)
        x = x * d[:, :, None, None]
        x = x + self.noise * self.noise_strength[None, :, None, None]
        x = x + self.bias[None, :, None, None]
        if self.coord is not None:
            x = self.position(x)
        return F.leaky_relu(x, 0.2) * SQRT2


class ModulatedUpConv(_Noisy):
    """The fusable block: [N, Cin, H, W], style [N, style_dim] -> [N, Cout, 2H, 2W]:
    modulate -> nearest x2 -> 3x3 conv -> demodulate -> + noise -> + bias -> leaky ReLU x sqrt 2
    (StyleGAN2's ``fused_modconv=False`` math; see the module docstring)."""

    def forward(self, x, style):
        s = self.affine(style)
        d = self.demodulation(s)
        x = x * s[:, :, None, None]
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.conv2d(x, self.weight, padding=1)
        x = x * d[:, :, None, None]
        x = x + self.noise * self.noise_strength[None, :, None, None]
        x = x + self.bias[None, :, None, None]
        if self.coord is not None:
            x = self.position(x)
        return F.leaky_relu(x, 0.2) * SQRT2


class ToRGB(_Modulated):
    """1x1 modulated conv to RGB, no demodulation, + bias (tanh is the generator's)."""

    def __init__(self, cin: int, style_dim: int):
        super().__init__(cin, 3, style_dim, 1)

    def forward(self, x, style):
        s = self.affine(style)
        x = x * s[:, :, None, None]
        x = F.conv2d(x, self.weight)
        return x + self.bias[None, :, None, None]


class StyleganVGenerator(VideoGenerator):
    """StyleGAN-V style text-to-video generator (architecture ``stylegan-v``, continuous)."""

    Config = StyleganVConfig

    def __init__(self, config: StyleganVConfig):
        super().__init__(config)
        cfg = config
        self.text = (SentenceTextEncoder(cfg.text_embedding_dim, cfg.text_dim) if cfg.text_encoder
                     else MeanTextEncoder(len(cfg.vocab) + 1, cfg.text_dim))
        self.mapping = MappingNetwork(cfg.text_dim + cfg.latent_dim, cfg.w_dim,
                                      cfg.mapping_layers)
        self.motion_mod = _linear(cfg.w_dim, 2 * cfg.motion_dim, 1.0)
        self.time_mod = (_linear(cfg.w_dim, cfg.feature_dim, 1.0)
                         if cfg.time_modulation == "features" else None)
        self.motion = MotionNetwork(cfg.feature_dim, cfg.motion_dim)
        sd, ch = cfg.w_dim + cfg.motion_dim, cfg.channels
        self.const = nn.Parameter(_randn(ch[0], 4, 4))
        xy = cfg.coordinates == "absolute"
        self.conv4 = ModulatedConv(ch[0], ch[0], sd, 4, xy)
        self.blocks = nn.ModuleList(ModulatedUpConv(ch[i - 1], ch[i], sd, 4 * 2**i, xy)
                                    for i in range(1, len(ch)))
        # block_convs - 1 more ModulatedConvs after each block, at its resolution (empty lists
        # at 1: the state dict of a one-conv generator is unchanged).
        self.refine = nn.ModuleList(
            nn.ModuleList(ModulatedConv(ch[i], ch[i], sd, 4 * 2**i, xy)
                          for _ in range(cfg.block_convs - 1))
            for i in range(1, len(ch)))
        self.to_rgb = ToRGB(ch[-1], sd)

    @property
    def style_dim(self) -> int:
        return self.config.style_width

    def style(self, text, z):
        """text (tokens [B, L] int64, or with ``text_encoder`` the sentence embedding [B, E]
        float32), z [B, latent_dim] -> w [B, w_dim + 2 motion_dim] = [w | gamma | beta]."""
        t = self.text(text)
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        w = self.mapping(torch.cat([t, z], dim=1))
        parts = [w, self.motion_mod(w)]
        if self.time_mod is not None:
            parts.append(self.time_mod(w))
        return torch.cat(parts, dim=1)

    def synthesize(self, w, features):
        """w [N, S], time features [N, 2K] -> frames [N, 3, R, R] in [-1, 1]."""
        cfg = self.config
        wd, md = cfg.w_dim, cfg.motion_dim
        if self.time_mod is not None:
            features = features * (1 + w[:, wd + 2 * md:wd + 2 * md + cfg.feature_dim])
        m = self.motion(features, w[:, wd:wd + md], w[:, wd + md:wd + 2 * md])
        style = torch.cat([w[:, :wd], m], dim=1)
        x = self.const.unsqueeze(0).expand(w.shape[0], -1, -1, -1)
        x = self.conv4(x, style)
        for block, convs in zip(self.blocks, self.refine):
            x = block(x, style)
            for conv in convs:
                x = conv(x, style)
        return torch.tanh(self.to_rgb(x, style))

