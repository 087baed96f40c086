"""The architectures ``mocogan`` (recurrent) and ``stylegan-v`` (continuous) on the runtime's
generator interface: registration, shapes and ranges, bounded configs, the recurrent contract,
the time features, the modulated conv against StyleGAN2's grouped form, save/load, ONNX."""

from __future__ import annotations

import json
import logging
import math
import random
import time
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from t2v_rt.errors import ConfigError
from t2v_rt.generators import registry
from t2v_rt.generators.io import (init_config, init_generator, load_generator, save_generator,
                                  shape_plan)
from t2v_rt.models.mocogan import MocoganConfig, MocoganGenerator, Stem, UpBlock
from t2v_rt.models.stylegan_v import (ModulatedConv, ModulatedUpConv, StyleganVConfig,
                                      StyleganVGenerator, ToRGB)

pytestmark = pytest.mark.usefixtures("one_thread")

ARCHS = ["mocogan", "stylegan-v"]


# --- helpers ------------------------------------------------------------------------------

def perturb(g) -> None:
    """Make the parts a random init leaves trivial non-trivial: BatchNorm running stats and
    affine, StyleGAN's zero-initialised noise strengths and biases."""
    with torch.no_grad():
        for mod in g.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.normal_(1, 0.2)
                mod.bias.normal_(0, 0.2)
            if isinstance(mod, (ModulatedConv, ModulatedUpConv)):
                mod.noise_strength.normal_(0, 0.3)
            if isinstance(mod, (ModulatedConv, ModulatedUpConv, ToRGB)):
                mod.bias.normal_(0, 0.2)


# Each architecture's tiny preset, and variants of it named "ARCH/VARIANT": config overrides.
VARIANTS = {"stylegan-v/features": ("stylegan-v", {"time_modulation": "features"}),
            "stylegan-v/deep": ("stylegan-v", {"block_convs": 2}),
            "stylegan-v/coords": ("stylegan-v", {"coordinates": "absolute", "block_convs": 2})}
MODELS = ARCHS + list(VARIANTS)


def tiny(name: str, seed: int = 0):
    arch, overrides = VARIANTS.get(name, (name, None))
    g = init_generator(arch, "tiny", overrides, seed=seed)
    perturb(g)
    return g


def prompts_tokens(g, prompts: list[str]) -> torch.Tensor:
    return torch.as_tensor(g.config.front_end().encode(prompts))


def random_prompts(g, n: int, seed: int) -> list[str]:
    """``n`` distinct random prompts of the generator's vocabulary."""
    rng, out = random.Random(seed), []
    while len(out) < n:
        p = g.config.front_end().example_prompts(rng, 1)[0]
        if p not in out:
            out.append(p)
    return out


def times(g, n: int) -> torch.Tensor:
    """Frame times [n] float64 (recurrent: only the count matters)."""
    return torch.rand(n, dtype=torch.float64) * 5.0 + 0.1


def frames_of(g, tokens, z, t) -> torch.Tensor:
    with torch.no_grad():
        return g(tokens, z, t)


def run_steps(g, w, state, n):
    feats = []
    for _ in range(n):
        f, state = g.step(w, state)
        feats.append(f)
    return torch.stack(feats, dim=1), state


# --- registration and shapes ----------------------------------------------------------------

def test_both_register():
    for name, gen, cfg in [("mocogan", MocoganGenerator, MocoganConfig),
                           ("stylegan-v", StyleganVGenerator, StyleganVConfig)]:
        arch = registry.get(name)
        assert isinstance(arch, registry.Architecture)
        assert arch.name == name and arch.generator_class is gen and arch.config_class is cfg
        assert cfg.ARCH == name
        assert {"tiny", "default"} <= set(arch.presets)
    assert MocoganConfig.FORM == "recurrent" and StyleganVConfig.FORM == "continuous"


@pytest.mark.parametrize("name", MODELS)
def test_tiny_shapes_and_range(name):
    g = tiny(name)
    cfg = g.config
    b, n = 3, 5
    tokens = prompts_tokens(g, random_prompts(g, b, 1))
    z = torch.randn(b, cfg.latent_dim)
    with torch.no_grad():
        w = g.style(tokens, z)
        assert w.shape == (b, g.style_dim) and w.dtype == torch.float32
        if cfg.FORM == "recurrent":
            state = g.initial_state(w)
            assert state.shape == (b, cfg.state_dim)
            f, state2 = g.step(w, state)
            assert f.shape == (b, cfg.feature_dim) and state2.shape == state.shape
            assert cfg.native_fps == Fraction(15) and cfg.default_fps == Fraction(15)
        else:
            f = cfg.time_features(times(g, b))        # numpy: the runtime streams torch-free
            assert f.shape == (b, cfg.feature_dim) and f.dtype == np.float32
            assert cfg.state_dim == 0 and cfg.native_fps is None
        wn = w.repeat_interleave(n, dim=0)
        feats = torch.randn(b * n, cfg.feature_dim)
        frames = g.synthesize(wn, feats)
    assert frames.shape == (b * n, 3, cfg.resolution, cfg.resolution)
    assert torch.isfinite(frames).all()
    assert frames.min() >= -1 and frames.max() <= 1
    assert frames.std() > 0.05                      # not constant
    assert frames.std(dim=(2, 3)).mean() > 0.02     # spatial structure within each frame
    video = frames_of(g, tokens, z, times(g, 4))
    assert video.shape == (b, 4, 3, cfg.resolution, cfg.resolution)


@pytest.mark.parametrize("name", MODELS)
def test_frames_depend_on_prompt_seed_and_time(name):
    g = tiny(name)
    cfg = g.config
    p1, p2 = random_prompts(g, 2, 7)
    t = times(g, 3)
    z1, z2 = torch.randn(2, 1, cfg.latent_dim).unbind(0)
    base = frames_of(g, prompts_tokens(g, [p1]), z1, t)
    assert torch.equal(base, frames_of(g, prompts_tokens(g, [p1]), z1, t))    # deterministic

    def diff(a, b):
        return (a - b).abs().mean().item()

    assert diff(base, frames_of(g, prompts_tokens(g, [p2]), z1, t)) > 1e-3       # prompt
    assert diff(base, frames_of(g, prompts_tokens(g, [p1]), z2, t)) > 1e-3       # latent
    # time / step: frames of one video differ from each other
    assert diff(base[0, 0], base[0, 1]) > 1e-3 and diff(base[0, 1], base[0, 2]) > 1e-3
    if cfg.FORM == "continuous":
        later = frames_of(g, prompts_tokens(g, [p1]), z1, t + 0.3)
        assert diff(base, later) > 1e-3


# --- configs ----------------------------------------------------------------------------------

BAD = {
    "mocogan": [{"channels": [10**6]}, {"channels": [64] * 100}, {"resolution": 10**6},
                {"motion_dim": 10**6}, {"vocab": ["a"] * 2 + ["b"]}, {"max_tokens": 1000},
                {"fps": 0}, {"fps": True}, {"bogus": 1}, {"mapping_layers": 10**6},
                {"resolution": 32},                                  # != 4 * 2^4
                {"content_latent": 60},                              # nothing left for motion
                {"resolution": 1024, "channels": [1024] * 8}],       # activation budget
    "stylegan-v": [{"channels": [10**6]}, {"mapping_layers": 10**6}, {"resolution": 10**6},
                   {"w_dim": 10**6}, {"time_periods": 10**6}, {"min_period": float("nan")},
                   {"mapping_layers": 2.5}, {"bogus": 1},
                   {"resolution": 96, "channels": [8] * 5},          # not a power of two
                   {"resolution": 128},                              # channels' length
                   {"min_period": 8.0, "max_period": 2.0},
                   {"resolution": 1024, "channels": [1024] * 9}],    # activation budget
}


@pytest.mark.parametrize("name", ARCHS)
def test_config_bounds(name):
    cls = registry.get(name).config_class
    for bad in BAD[name]:
        t0 = time.perf_counter()
        with pytest.raises(ConfigError) as e:
            cls.from_dict(bad)
        assert time.perf_counter() - t0 < 1.0
        assert "\n" not in str(e.value)
        key = next(iter(bad))
        if key != "resolution" or len(bad) == 1:
            assert key in str(e.value) or "channels" in str(e.value) or "period" in str(e.value)
    # presets and the defaults are valid, and round-trip through JSON
    for preset in ("tiny", "default"):
        cfg = init_config(name, preset)
        assert cls.from_dict(cfg.to_dict()) == cfg
    assert cls.from_dict({"architecture": name}) == cls()


def mocogan_params(c: MocoganConfig) -> int:
    """Learned parameters of a mocogan config, by hand (documented widths)."""
    v, t, h, k = len(c.vocab) + 1, c.text_dim, c.motion_dim, c.oscillators
    s = c.content_dim + h + 4 * k
    mlp = lambda i, m, o: i * m + m + m * o + o                        # noqa: E731
    text = v * t + mlp(t, t, t)
    style = (mlp(t + c.content_latent, c.content_dim, c.content_dim)
             + mlp(t + c.motion_latent, h, h) + 2 * (c.motion_latent * k + k))
    motion = s * h + h + 3 * h * (c.noise_dim + h) + 3 * h * h + 6 * h     # h0, GRU
    ch = c.channels
    body = ((c.content_dim + h) * ch[0] * 16 + 2 * ch[0]                   # stem conv + BN
            + sum(a * b * 16 + 2 * b for a, b in zip(ch, ch[1:]))          # UpBlocks
            + ch[-1] * 3 * 16 + 3)                                         # to RGB
    return text + style + motion + body


def stylegan_params(c: StyleganVConfig) -> int:
    """Learned parameters of a stylegan-v config, by hand (documented widths)."""
    v, t, wd, md = len(c.vocab) + 1, c.text_dim, c.w_dim, c.motion_dim
    sd, ch = wd + md, c.channels
    text = v * t + 2 * (t * t + t)
    mapping = (t + c.latent_dim) * wd + wd + (c.mapping_layers - 1) * (wd * wd + wd)
    motion = wd * 2 * md + 2 * md + 2 * md * c.time_periods + md + md * md + md

    def modconv(cin, cout, k=3, noise=True):
        return sd * cin + cin + cout * cin * k * k + cout + (cout if noise else 0)

    body = (ch[0] * 16 + modconv(ch[0], ch[0]) + sum(modconv(a, b) for a, b in zip(ch, ch[1:]))
            + modconv(ch[-1], 3, 1, noise=False))
    return text + mapping + motion + body


# default widths -> learned parameters (59 token ids: the default vocabulary + padding)
EXPECTED_PARAMS = {"mocogan": (4_168_579, 12_963), "stylegan-v": (11_623_235, 14_067)}


def test_stylegan_time_modulation_features_scales_each_time_feature():
    """time_modulation "features": w carries one gain per time feature after (gamma, beta),
    and synthesize scales the features by 1 + gain before the motion MLP; the default
    "hidden" has no such gains (old configs load unchanged)."""
    g = tiny("stylegan-v/features")
    cfg = g.config
    assert cfg.style_width == cfg.w_dim + 2 * cfg.motion_dim + cfg.feature_dim
    assert tiny("stylegan-v").config.style_width == cfg.w_dim + 2 * cfg.motion_dim
    tokens = prompts_tokens(g, random_prompts(g, 2, 4))
    with torch.no_grad():
        w = g.style(tokens, torch.randn(2, cfg.latent_dim))
        feats = torch.randn(2, cfg.feature_dim)
        gains = w[:, cfg.w_dim + 2 * cfg.motion_dim:]
        assert gains.shape == (2, cfg.feature_dim) and float(gains.abs().mean()) > 0.01
        # The same frames as the hidden-FiLM path fed with the scaled features.
        wd, md = cfg.w_dim, cfg.motion_dim
        m = g.motion(feats * (1 + gains), w[:, wd:wd + md], w[:, wd + md:wd + 2 * md])
        x = g.const.unsqueeze(0).expand(2, -1, -1, -1)
        style = torch.cat([w[:, :wd], m], dim=1)
        x = g.conv4(x, style)
        for block in g.blocks:
            x = block(x, style)
        want = torch.tanh(g.to_rgb(x, style))
        torch.testing.assert_close(g.synthesize(w, feats), want)
        # a gain of -1 silences its feature: the frames no longer depend on it
        w2 = w.clone()
        w2[:, wd + 2 * md] = -1.0
        f2 = feats.clone()
        f2[:, 0] += 5.0
        torch.testing.assert_close(g.synthesize(w2, feats), g.synthesize(w2, f2))
    with pytest.raises(ConfigError, match="time_modulation"):
        init_config("stylegan-v", "tiny", {"time_modulation": "bogus"})


def test_stylegan_block_convs_adds_modulated_convs_at_each_resolution():
    """block_convs 2: each ModulatedUpConv is followed by a ModulatedConv at its resolution,
    in that order; the default 1 adds no parameter (one-conv weights load unchanged)."""
    one, two = tiny("stylegan-v"), tiny("stylegan-v/deep")
    assert all(len(convs) == 0 for convs in one.refine)
    assert not any(k.startswith("refine") for k in one.state_dict())
    ch = two.config.channels
    assert [[(c.weight.shape, c.noise.shape[-1]) for c in convs] for convs in two.refine] == [
        [((ch[i], ch[i], 3, 3), 4 * 2**i)] for i in range(1, len(ch))]
    assert set(two.state_dict()) - set(one.state_dict()) == {
        k for k in two.state_dict() if k.startswith("refine.")}
    cfg = two.config
    tokens = prompts_tokens(two, random_prompts(two, 2, 5))
    with torch.no_grad():
        w = two.style(tokens, torch.randn(2, cfg.latent_dim))
        feats = torch.randn(2, cfg.feature_dim)
        wd, md = cfg.w_dim, cfg.motion_dim
        m = two.motion(feats, w[:, wd:wd + md], w[:, wd + md:wd + 2 * md])
        style = torch.cat([w[:, :wd], m], dim=1)
        x = two.conv4(two.const.unsqueeze(0).expand(2, -1, -1, -1), style)
        for block, (conv,) in zip(two.blocks, two.refine):
            x = conv(block(x, style), style)
        torch.testing.assert_close(two.synthesize(w, feats), torch.tanh(two.to_rgb(x, style)))
    with pytest.raises(ConfigError, match="block_convs"):
        init_config("stylegan-v", "tiny", {"block_convs": 5})


def test_stylegan_coordinates_add_a_conv_of_the_pixel_coordinates_to_every_3x3_conv():
    """coordinates absolute: each ModulatedConv and ModulatedUpConv adds coord(x, y, |x|, |y|,
    r) about the frame centre before its activation (checked against a hand-written layer);
    the only new parameters are those 1x1 convs ("none" weights load unchanged), and with them
    at zero the frames are those of the same weights without coordinates."""
    from t2v_rt.models.stylegan_v.generator import SQRT2

    xy, plain = tiny("stylegan-v/coords"), tiny("stylegan-v/deep")
    extra = set(xy.state_dict()) - set(plain.state_dict())
    assert extra and all(k.endswith(".coord.weight") for k in extra)
    assert not set(plain.state_dict()) - set(xy.state_dict())
    convs = [xy.conv4, *xy.blocks, *(c for cs in xy.refine for c in cs)]
    assert {f"{n}.coord.weight" for n, m in xy.named_modules() if m in convs} == extra
    block = xy.blocks[1]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, block.weight.shape[1], 8, 8, generator=g)
    style = torch.randn(2, block.affine.in_features, generator=g)
    with torch.no_grad():
        s = block.affine(style)
        y = F.conv2d(F.interpolate(x * s[:, :, None, None], scale_factor=2), block.weight, padding=1)
        y = y * block.demodulation(s)[:, :, None, None]
        y = y + block.noise * block.noise_strength[None, :, None, None] + block.bias[None, :, None, None]
        c = (torch.arange(16) + 0.5) / 16 * 2 - 1
        gx, gy = c.view(1, 16).expand(16, 16), c.view(16, 1).expand(16, 16)
        grid = torch.stack([gx, gy, gx.abs(), gy.abs(), (gx * gx + gy * gy + 1e-8).sqrt()])
        y = y + torch.einsum("kc,chw->khw", block.coord.weight[:, :, 0, 0], grid)
        torch.testing.assert_close(block(x, style), F.leaky_relu(y, 0.2) * SQRT2)
        for conv in convs:
            conv.coord.weight.zero_()
        plain.load_state_dict({k: v for k, v in xy.state_dict().items() if k not in extra})
        tokens = prompts_tokens(xy, random_prompts(xy, 2, 5))
        w = xy.style(tokens, torch.randn(2, xy.config.latent_dim, generator=g))
        feats = torch.randn(2, xy.config.feature_dim, generator=g)
        torch.testing.assert_close(xy.synthesize(w, feats), plain.synthesize(w, feats))
    with pytest.raises(ConfigError, match="coordinates"):
        init_config("stylegan-v", "tiny", {"coordinates": "relative"})


@pytest.mark.parametrize("name", ARCHS)
def test_default_shape_plan(name):
    cfg = init_config(name, "default")
    t0 = time.perf_counter()
    plan = shape_plan(cfg)
    assert time.perf_counter() - t0 < 2.0
    with torch.device("meta"):
        g = registry.get(name).generator_class(cfg)
    learned = sum(p.numel() for p in g.parameters())
    count = mocogan_params if name == "mocogan" else stylegan_params
    assert learned == count(cfg) == EXPECTED_PARAMS[name][0]
    assert set(plan) == set(g.state_dict())
    tiny_cfg = init_config(name, "tiny")
    assert count(tiny_cfg) == EXPECTED_PARAMS[name][1]
    if name == "mocogan":
        assert cfg.resolution == 64 and cfg.channels == [512, 256, 128, 64]
        assert plan["stem.conv.weight"] == (160, 512, 4, 4)
        assert plan["blocks.0.conv.weight"] == (512, 256, 4, 4)
        assert plan["blocks.2.conv.weight"] == (128, 64, 4, 4)
        assert plan["to_rgb.weight"] == (64, 3, 4, 4)
        assert (cfg.feature_dim, cfg.state_dim, g.style_dim) == (32, 64, 224)
    else:
        assert cfg.resolution == 256 and cfg.channels == [512, 512, 512, 256, 128, 64, 64]
        assert plan["const"] == (512, 4, 4) and plan["conv4.weight"] == (512, 512, 3, 3)
        assert plan["blocks.2.weight"] == (256, 512, 3, 3)
        assert plan["blocks.5.noise"] == (1, 1, 256, 256)
        assert plan["to_rgb.weight"] == (3, 64, 1, 1)
        assert len(g.mapping.layers) == 4
        assert (cfg.feature_dim, g.style_dim) == (16, 768)


# --- mocogan: the recurrent contract ------------------------------------------------------------

def test_mocogan_state_continues_across_batches():
    g = tiny("mocogan")
    b = 3
    tokens = prompts_tokens(g, random_prompts(g, b, 3))
    with torch.no_grad():
        w = g.style(tokens, torch.randn(b, g.config.latent_dim))
        s0 = g.initial_state(w)
        whole, end = run_steps(g, w, s0, 12)
        parts, state = [], s0
        for _ in range(3):
            f, state = run_steps(g, w, state, 4)
            parts.append(f)
        assert torch.equal(torch.cat(parts, dim=1), whole) and torch.equal(state, end)
        # the base class's video_features is the same stepping
        assert torch.equal(g.video_features(w, steps=12), whole)
        # a batch of 3 videos stepped together = one by one
        for i in range(b):
            fi, si = run_steps(g, w[i:i + 1], g.initial_state(w[i:i + 1]), 12)
            torch.testing.assert_close(fi, whole[i:i + 1], rtol=0, atol=1e-6)
            torch.testing.assert_close(si, end[i:i + 1], rtol=0, atol=1e-6)
        # frames: any batch of frames of any videos
        flat = whole.reshape(b * 12, -1)
        frames = g.synthesize(w.repeat_interleave(12, dim=0), flat)
        one = g.synthesize(w[1:2].expand(12, -1), whole[1])
        torch.testing.assert_close(one, frames[12:24], rtol=0, atol=1e-6)
    # the features are the motion code; the state is [h | cos p | sin p]
    assert torch.equal(whole[:, -1], end[:, :g.config.motion_dim])


def test_mocogan_state_bounded_over_10000_steps():
    g = tiny("mocogan")
    cfg = g.config
    h, k = cfg.motion_dim, cfg.oscillators
    tokens = prompts_tokens(g, random_prompts(g, 2, 4))
    with torch.no_grad():
        w = g.style(tokens, torch.randn(2, cfg.latent_dim))
        state = g.initial_state(w)
        prev = None
        for i in range(10_000):
            f, state = g.step(w, state)
            assert state.shape == (2, cfg.state_dim)          # constant size: constant cost
            if i % 1000 == 999:
                assert torch.isfinite(state).all()
                norms = state[:, h:h + k] ** 2 + state[:, h + k:] ** 2
                assert (norms - 1).abs().max() < 1e-5
                assert state[:, :h].abs().max() <= 1             # GRU hidden stays in [-1, 1]
        # still moving after 10,000 steps (the pseudo-noise neither stops nor blows up)
        f2, _ = g.step(w, state)
        assert (f2 - f).abs().max() > 1e-4
        frames = g.synthesize(w, f2)
    assert torch.isfinite(frames).all() and frames.std() > 0.05


def test_mocogan_pseudo_noise_is_unit_phasors():
    g = tiny("mocogan")
    cfg = g.config
    h, k = cfg.motion_dim, cfg.oscillators
    with torch.no_grad():
        w = g.style(prompts_tokens(g, ["a red ball"]), torch.randn(1, cfg.latent_dim))
        s0 = g.initial_state(w)
        _, s1 = g.step(w, s0)
    p0 = torch.complex(s0[:, h:h + k], s0[:, h + k:])
    p1 = torch.complex(s1[:, h:h + k], s1[:, h + k:])
    torch.testing.assert_close(p0.abs(), torch.ones_like(p0.abs()))
    c = w[:, -2 * k:]
    omega = torch.atan2(c[:, k:], c[:, :k])                   # per-step angle in (0, pi)
    assert (omega > 0).all() and (omega < math.pi).all()
    torch.testing.assert_close(p1, p0 * torch.polar(torch.ones_like(omega), omega))


# --- stylegan-v: time features and the modulated conv ----------------------------------------

def test_stylegan_time_features_exact_at_ten_hours():
    cfg = StyleganVConfig()
    assert cfg.periods == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    assert all((36000.0 / p).is_integer() for p in cfg.periods)
    t = torch.rand(64, dtype=torch.float64) * 100
    f = torch.as_tensor(cfg.time_features(t))
    assert f.shape == (64, 16) and f.dtype == torch.float32
    torch.testing.assert_close(torch.as_tensor(cfg.time_features(t + 36000.0)), f, rtol=0, atol=1e-6)
    # t = 600 s + x against the phase computed by hand in float64
    ts = [600.0 + x for x in np.random.default_rng(5).uniform(0, 1, 8)]
    hand = [[math.cos(2 * math.pi * math.fmod(s, p) / p) for p in cfg.periods]
            + [math.sin(2 * math.pi * math.fmod(s, p) / p) for p in cfg.periods] for s in ts]
    torch.testing.assert_close(torch.as_tensor(cfg.time_features(ts)), torch.tensor(hand, dtype=torch.float32),
                               rtol=0, atol=1e-6)
    # other period counts: geometric, from min to max
    p = StyleganVConfig(time_periods=5, min_period=0.5, max_period=40.0).periods
    assert p[0] == 0.5 and abs(p[-1] - 40.0) < 1e-12
    assert np.allclose(np.diff(np.log(p)), np.log(80) / 4)


def grouped_reference(block, x, style, upsample: bool, demodulate: bool = True,
                      noise: bool = True):
    """StyleGAN2's fused_modconv=True form: per-sample weights w' = w * s (demodulated), one
    grouped convolution over the batch."""
    n, cin = x.shape[:2]
    s = block.affine(style)
    wt = block.weight[None] * s[:, None, :, None, None]                  # [N, Cout, Cin, k, k]
    if demodulate:
        wt = wt * torch.rsqrt(wt.square().sum(dim=(2, 3, 4)) + 1e-8)[:, :, None, None, None]
    if upsample:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
    k = wt.shape[-1]
    y = F.conv2d(x.reshape(1, n * cin, *x.shape[2:]), wt.reshape(-1, cin, k, k),
                 padding=k // 2, groups=n)
    y = y.reshape(n, -1, *y.shape[2:])
    if noise:
        y = y + block.noise * block.noise_strength[None, :, None, None]
    y = y + block.bias[None, :, None, None]
    return F.leaky_relu(y, 0.2) * math.sqrt(2) if noise else y


def test_stylegan_modulated_conv_equals_grouped_reference():
    torch.manual_seed(11)
    n, cin, cout, sd = 3, 16, 8, 24
    cases = [(ModulatedUpConv(cin, cout, sd, 16), 8, True),
             (ModulatedConv(cin, cout, sd, 8), 8, False)]
    for block, side, up in cases:
        with torch.no_grad():
            block.noise_strength.normal_(0, 0.5)
            block.bias.normal_(0, 0.5)
            block.affine.bias.normal_(1, 0.5)
            x = torch.randn(n, cin, side, side)
            style = torch.randn(n, sd)
            torch.testing.assert_close(block(x, style), grouped_reference(block, x, style, up),
                                       rtol=1e-5, atol=1e-5)
    rgb = ToRGB(cin, sd)
    with torch.no_grad():
        rgb.bias.normal_(0, 0.5)
        x, style = torch.randn(n, cin, 8, 8), torch.randn(n, sd)
        torch.testing.assert_close(rgb(x, style),
                                   grouped_reference(rgb, x, style, False, demodulate=False,
                                                     noise=False), rtol=1e-5, atol=1e-5)


def test_stylegan_block_op_order():
    """The fusable block's forward, as a fusion pass sees it (torch.fx): the x path is
    modulate, nearest x2, conv2d, demodulate, + noise, + bias, leaky ReLU, x sqrt 2."""
    gm = torch.fx.symbolic_trace(ModulatedUpConv(4, 3, 5, 8))
    ops = [getattr(n.target, "__name__", str(n.target)) for n in gm.graph.nodes
           if n.op in ("call_function", "call_method")]
    ops = [o for o in ops if o != "getitem"]
    x_path = ops[ops.index("rsqrt") + 1:]
    assert x_path == ["mul", "interpolate", "conv2d", "mul", "mul", "add", "add", "leaky_relu",
                      "mul"]
    block = ModulatedUpConv(4, 3, 5, 8)
    assert {n for n, _ in block.named_parameters()} == {
        "affine.weight", "affine.bias", "weight", "bias", "noise_strength"}
    assert [n for n, _ in block.named_buffers()] == ["noise"]


# --- save / load ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip(name, tmp_path):
    g = tiny(name, seed=3)
    path = tmp_path / f"{name.replace('/', '-')}.safetensors"
    save_generator(g, path)
    assert json.loads(path.with_suffix(".json").read_text())["architecture"] == name.split("/")[0]
    h = load_generator(path)
    assert type(h) is type(g) and h.config == g.config
    tokens = prompts_tokens(g, random_prompts(g, 2, 9))
    z = torch.randn(2, g.config.latent_dim)
    t = times(g, 3)
    assert torch.equal(frames_of(g, tokens, z, t), frames_of(h, tokens, z, t))


# --- ONNX --------------------------------------------------------------------------------------

class _Graph(torch.nn.Module):
    def __init__(self, g):
        super().__init__()
        self.g = g


class StyleGraph(_Graph):
    def forward(self, tokens, z):
        return self.g.style(tokens, z)


class SynthesizeGraph(_Graph):
    def forward(self, w, features):
        return self.g.synthesize(w, features)


class StepGraph(_Graph):
    def forward(self, w, state):
        return self.g.step(w, state)


def _onnx_matches(module, names, example, feed, path):
    import onnxruntime as ort

    batch = torch.export.Dim("batch", min=1, max=4096)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, example, dynamo=True, opset_version=18,
                                    input_names=names,
                                    dynamic_shapes={k: {0: batch} for k in names},
                                    verbose=False)
    program.save(str(path))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    got = sess.run(None, {k: v.numpy() for k, v in zip(names, feed)})
    with torch.no_grad():
        want = module(*feed)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        b = b.numpy()
        assert a.shape == b.shape
        err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-6)
        assert err < 1e-4, f"{type(module).__name__}: relative error {err:.2e}"


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_onnx_export_matches_pytorch(name, tmp_path):
    g = tiny(name)
    cfg = g.config
    tokens = prompts_tokens(g, random_prompts(g, 5, 2))
    z = torch.randn(5, cfg.latent_dim)
    with torch.no_grad():
        w = g.style(tokens, z)
    # exported at batch 2, run at batch 5 (the batch axis is dynamic)
    _onnx_matches(StyleGraph(g), ["tokens", "z"], (tokens[:2], z[:2]), (tokens, z),
                  tmp_path / "style.onnx")
    if cfg.FORM == "recurrent":
        state = g.initial_state(w).detach()
        state = g.step(w, state)[1].detach()
        feats = g.step(w, state)[0].detach()
        _onnx_matches(StepGraph(g), ["w", "state"], (w[:2], state[:2]), (w, state),
                      tmp_path / "step.onnx")
    else:
        feats = torch.as_tensor(cfg.time_features(times(g, 5)))
    _onnx_matches(SynthesizeGraph(g), ["w", "features"], (w[:2], feats[:2]),
                  (w, feats), tmp_path / "synthesize.onnx")
