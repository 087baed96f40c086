"""The ``mocogan`` generator: MoCoGAN / TGANs-C family, recurrent in time.

    tokens or sentence embedding -> text encoder -> t    (per prompt)
    (t, z_content) -> MLP -> content code c             (per video)
    (t, z_motion)  -> MLP -> motion conditioning m      (per video)
    z_motion -> phases phi, per-step rotations omega    (per video)
    w = [c | m | cos phi | sin phi | cos omega | sin omega]
    h_0 = tanh(A w); phasors p_0 = (cos phi, sin phi)    (initial_state)
    e_t = P p_t; h_t = GRU([e_t, m], h_{t-1});
    p_{t+1} = normalise(rotate(p_t, omega))             (step: one frame)
    frame_t = G_I([c, h_t])                              (synthesize, any batch of frames)

``z`` [latent_dim] is split as ``z_content = z[:content_latent]``, ``z_motion =
z[content_latent:]`` (default 50 + 10, MoCoGAN's sizes).

**The motion pseudo-noise.** MoCoGAN feeds its GRU i.i.d. Gaussian noise e_t each step. A
runtime that streams for hours needs a step graph that is deterministic (the same video twice,
the same frames; a batch split differently, the same frames), exportable (no RNG op in the
ONNX graph) and of constant cost per step (no noise table that grows with the video's length).
So e_t comes from the state: K unit phasors (cos, sin), each rotated every step by its own
per-video angle omega_k in (0, pi) (from z_motion, kept in ``w`` as cos/sin so the step has no
trigonometry), and e_t = P p_t with P a fixed buffer [noise_dim, 2K] of N(0, 1/K) entries
(so e_t has unit variance, like MoCoGAN's noise). A sum of K sinusoids of incommensurate
frequencies is quasi-periodic, not periodic: over the video it behaves as broadband noise, and
the same seed gives the same sequence. The phasors are renormalised every step (x rsqrt(c^2 +
s^2)), so rounding does not make them grow or decay over hours of streaming (their phase
error is a random walk that only changes which pseudo-noise is drawn, never its size).

Unlike MoCoGAN's, this GRU also reads a per-video conditioning ``m`` (from the text and
z_motion) every step, as TGANs-C conditions its LSTM on the sentence: a text-to-video model's
motion has to follow the prompt for the whole stream, not only from h_0.

The state is one float tensor ``[B, motion_dim + 2K]``: ``[h | cos p | sin p]``; a frame's
features are ``h_t`` itself ``[B, motion_dim]``. Constant size, so constant cost per step.

The image generator G_I is DCGAN's: ``[c, h]`` as a 1x1 map -> :class:`Stem`
(ConvTranspose2d 4x4 stride 1 -> BatchNorm2d -> ReLU) at 4x4, then one :class:`UpBlock`
(ConvTranspose2d kernel 4 stride 2 padding 1 without bias -> BatchNorm2d -> ReLU) per entry of
``channels`` after the first, then ConvTranspose2d to RGB (x2) -> tanh. BatchNorm runs in eval
mode (running statistics), so a block is an affine epilogue of its transposed conv: each block
is one module so a fusion pass can replace it. Weights are drawn N(0, 2 / fan_in) with fan_in
the taps that reach one output pixel (He init, for ReLU; tanh layers 1 / fan_in), so a random
generator's frames already vary with the prompt, the seed and the step.
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
from t2v_rt.models.mocogan.config import MocoganConfig


class MLP(nn.Module):
    """Linear -> leaky ReLU 0.2 -> Linear."""

    def __init__(self, cin: int, hidden: int, cout: int):
        super().__init__()
        self.fc1 = _linear(cin, hidden, math.sqrt(2))
        self.fc2 = _linear(hidden, cout)

    def forward(self, x):
        return self.fc2(F.leaky_relu(self.fc1(x), 0.2))


class MeanTextEncoder(nn.Module):
    """Token ids [B, L] (0 = pad) -> text code [B, dim]: embedding, mean over the non-pad
    tokens, MLP."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.embed = _embedding(vocab_size, dim)
        self.mlp = MLP(dim, dim, dim)

    def forward(self, tokens):
        mean = masked_mean(self.embed, tokens)
        return self.mlp(mean)


class SentenceTextEncoder(nn.Module):
    """A frozen sentence embedding [B, E] (config ``text_encoder``; unit length, computed on the
    host) -> text code [B, dim]: a trained Linear (``proj``, in place of the token embedding;
    gain sqrt(E): unit-variance codes, as a token embedding's rows), then the MLP."""

    def __init__(self, width: int, dim: int):
        super().__init__()
        self.proj = _linear(width, dim, math.sqrt(width))
        self.mlp = MLP(dim, dim, dim)

    def forward(self, embedding):
        return self.mlp(self.proj(embedding))


def _init_convT(conv: nn.ConvTranspose2d, fan_in: int, gain: float) -> None:
    _normal_(conv.weight, gain / math.sqrt(fan_in))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class Stem(nn.Module):
    """[N, Cin, 1, 1] -> [N, C0, 4, 4]: ConvTranspose2d(Cin, C0, 4, 1, 0, bias=False) ->
    BatchNorm2d -> ReLU (the same shape of block as :class:`UpBlock`)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 4, 1, 0, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()
        _init_convT(self.conv, cin, math.sqrt(2))          # every output pixel sees Cin taps

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class UpBlock(nn.Module):
    """[N, Cin, H, W] -> [N, Cout, 2H, 2W]: ``act(bn(conv(x)))`` with ``conv`` =
    ConvTranspose2d(Cin, Cout, kernel 4, stride 2, padding 1, bias=False), ``bn`` =
    BatchNorm2d(Cout) (eval: running stats), ``act`` = ReLU. The fusable unit."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()
        _init_convT(self.conv, 4 * cin, math.sqrt(2))      # 2x2 taps per input channel

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class MocoganGenerator(VideoGenerator):
    """MoCoGAN-style text-to-video generator (architecture ``mocogan``, recurrent)."""

    Config = MocoganConfig

    def __init__(self, config: MocoganConfig):
        super().__init__(config)
        cfg = config
        k = cfg.oscillators
        self.text = (SentenceTextEncoder(cfg.text_embedding_dim, cfg.text_dim) if cfg.text_encoder
                     else MeanTextEncoder(len(cfg.vocab) + 1, cfg.text_dim))
        self.content = MLP(cfg.text_dim + cfg.content_latent, cfg.content_dim, cfg.content_dim)
        self.motion_cond = MLP(cfg.text_dim + cfg.motion_latent, cfg.motion_dim, cfg.motion_dim)
        self.phase = _linear(cfg.motion_latent, k)          # phi = pi * phase(z_motion)
        self.freq = _linear(cfg.motion_latent, k)           # omega = pi * sigmoid(freq(z_motion))
        self.h0 = _linear(cfg.style_width, cfg.motion_dim)
        # e_t = noise_proj @ [cos p; sin p]: fixed (a buffer, saved with the weights).
        self.register_buffer("noise_proj", _randn(cfg.noise_dim, 2 * k, std=1 / math.sqrt(k)))
        self.gru = nn.GRUCell(cfg.noise_dim + cfg.motion_dim, cfg.motion_dim)
        ch = cfg.channels
        self.stem = Stem(cfg.content_dim + cfg.motion_dim, ch[0])
        self.blocks = nn.ModuleList(UpBlock(ch[i], ch[i + 1]) for i in range(len(ch) - 1))
        self.to_rgb = nn.ConvTranspose2d(ch[-1], 3, 4, 2, 1)
        _init_convT(self.to_rgb, 4 * ch[-1], 1.0)

    # --- layout of w and of the state ---------------------------------------------------

    @property
    def style_dim(self) -> int:
        return self.config.style_width

    def _split_w(self, w):
        cfg = self.config
        c, m, k = cfg.content_dim, cfg.motion_dim, cfg.oscillators
        o = c + m
        return (w[:, :c], w[:, c:o], w[:, o:o + k], w[:, o + k:o + 2 * k],
                w[:, o + 2 * k:o + 3 * k], w[:, o + 3 * k:o + 4 * k])

    # --- the interface ------------------------------------------------------------------

    def style(self, text, z):
        """text (tokens [B, L] int64, or with ``text_encoder`` the sentence embedding [B, E]
        float32), z [B, latent_dim] -> w [B, content + motion + 4K]."""
        cfg = self.config
        t = self.text(text)
        zc, zm = z[:, :cfg.content_latent], z[:, cfg.content_latent:]
        c = self.content(torch.cat([t, zc], dim=1))
        m = self.motion_cond(torch.cat([t, zm], dim=1))
        phi = math.pi * self.phase(zm)
        omega = math.pi * torch.sigmoid(self.freq(zm))
        return torch.cat([c, m, torch.cos(phi), torch.sin(phi), torch.cos(omega),
                          torch.sin(omega)], dim=1)

    def initial_state(self, w):
        """w [B, S] -> state [B, motion_dim + 2K] = [h_0 | cos phi | sin phi]."""
        _, _, cos_p, sin_p, _, _ = self._split_w(w)
        return torch.cat([torch.tanh(self.h0(w)), cos_p, sin_p], dim=1)

    def step(self, w, state):
        """w [B, S], state [B, D] -> (features h_t [B, motion_dim], next state [B, D])."""
        cfg = self.config
        h_dim, k = cfg.motion_dim, cfg.oscillators
        _, m, _, _, cos_w, sin_w = self._split_w(w)
        h = state[:, :h_dim]
        pc, ps = state[:, h_dim:h_dim + k], state[:, h_dim + k:h_dim + 2 * k]
        e = F.linear(torch.cat([pc, ps], dim=1), self.noise_proj)             # [B, noise_dim]
        h = self.gru(torch.cat([e, m], dim=1), h)
        nc = pc * cos_w - ps * sin_w                                          # rotate by omega
        ns = pc * sin_w + ps * cos_w
        r = torch.rsqrt(nc * nc + ns * ns + 1e-12)                            # stay on |p| = 1
        return h, torch.cat([h, nc * r, ns * r], dim=1)

    def synthesize(self, w, features):
        """w [N, S], features h_t [N, motion_dim] -> frames [N, 3, R, R] in [-1, 1]."""
        c = w[:, :self.config.content_dim]
        x = torch.cat([c, features], dim=1)
        x = self.stem(x.view(x.shape[0], x.shape[1], 1, 1))
        for block in self.blocks:
            x = block(x)
        return torch.tanh(self.to_rgb(x))

