"""The renderer and the data follow t2v_rt/models/shapes/CONTRACT.md exactly."""

import math
import random

import pytest
import torch

from t2v_rt.models.shapes.grammar import parse_prompt
from t2v_rt.models.shapes import spec
from t2v_rt.models.shapes.captions import caption, sample_attributes
from t2v_rt.models.shapes.dataset import ShapesClips
from t2v_rt.models.shapes.render import render
from t2v_rt.models.shapes.scene import Scene, latent_from_seed

FULL = dict(shape="square", colour="red", size="large", motion="left-right", speed="slow",
            background="black")


def scene(**kw) -> Scene:
    attrs = {**FULL, **kw}
    return Scene(phase=kw.pop("phase", 0.3), x0=0.4, y0=0.6,
                 **{k: attrs[k] for k in spec.ATTRIBUTES})


def mask_stats(frame: torch.Tensor, bg: tuple[int, int, int]):
    """Coverage-weighted centroid, area and bbox side of the non-background pixels."""
    bgt = torch.tensor(bg, dtype=torch.float32).view(3, 1, 1) / 255
    diff = (frame - bgt).abs().amax(0)
    size = frame.shape[-1]
    cov = diff / diff.max()
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    area = cov.sum()
    cx = ((xs + 0.5) * cov).sum() / area / size
    cy = ((ys + 0.5) * cov).sum() / area / size
    rows = torch.nonzero(cov.amax(1) > 0.5).flatten()
    cols = torch.nonzero(cov.amax(0) > 0.5).flatten()
    return float(cx), float(cy), float(area) / size**2, (int(cols[-1] - cols[0]) + 1) / size, (int(rows[-1] - rows[0]) + 1) / size


@pytest.mark.parametrize("motion", spec.MOTIONS)
@pytest.mark.parametrize("speed", list(spec.SPEEDS))
def test_centre_follows_the_motion_equations(motion, speed):
    sc = scene(motion=motion, speed=speed, shape="square")
    period = spec.SPEEDS[speed]
    for t in (0.0, 0.13, 0.5, 0.77, 1.9):
        w = 2 * math.pi * t / period + sc.phase
        expect = {
            "left-right": (0.5 + 0.30 * math.sin(w), sc.y0),
            "up-down": (sc.x0, 0.5 + 0.30 * math.sin(w)),
            "diagonal": (0.5 + 0.25 * math.sin(w), 0.5 + 0.25 * math.sin(w)),
            "circle": (0.5 + 0.25 * math.cos(w), 0.5 + 0.25 * math.sin(w)),
            "still": (sc.x0, sc.y0),
        }[motion]
        x, y = sc.centre(torch.tensor(t, dtype=torch.float64))
        assert float(x) == pytest.approx(expect[0], abs=1e-9)
        assert float(y) == pytest.approx(expect[1], abs=1e-9)
        # ... and the pixels agree (square: centroid = centre), to a fraction of a pixel.
        frame = render(sc, torch.tensor([t]), 256)[0]
        cx, cy, *_ = mask_stats(frame, spec.BACKGROUNDS[sc.background])
        assert (cx, cy) == pytest.approx(expect, abs=0.5 / 256)


@pytest.mark.parametrize("speed", list(spec.SPEEDS))
def test_period_repeats_frames_exactly(speed):
    sc = scene(motion="circle", speed=speed)
    p = spec.SPEEDS[speed]
    a = render(sc, torch.tensor([0.21, 0.21 + p, 0.21 + 300 * p]), 64)
    assert torch.equal(a[0], a[1]) and torch.equal(a[0], a[2])
    half = render(sc, torch.tensor([0.21 + p / 2]), 64)
    assert not torch.equal(a[0], half[0])


@pytest.mark.parametrize("shape,fill", [("square", 1.0), ("circle", math.pi / 4), ("triangle", 0.5)])
@pytest.mark.parametrize("size", list(spec.SIZES))
def test_sizes_and_fill_ratios(shape, fill, size):
    sc = scene(shape=shape, size=size, motion="still")
    frame = render(sc, torch.tensor([0.0]), 256)[0]
    _, _, area, w, h = mask_stats(frame, spec.BACKGROUNDS[sc.background])
    side = spec.SIZES[size]
    assert w == pytest.approx(side, abs=2 / 256) and h == pytest.approx(side, abs=2 / 256)
    assert area / side**2 == pytest.approx(fill, rel=0.03)


def test_triangle_points_up():
    frame = render(scene(shape="triangle", motion="still", size="large"), torch.tensor([0.0]), 128)[0]
    widths = (frame.amax(0) > 0.5).sum(1)  # per row, red channel is bright on black
    rows = torch.nonzero(widths).flatten()
    assert widths[rows[0]] < widths[rows[-1]] / 4   # narrow apex at the top, wide base at the bottom


@pytest.mark.parametrize("colour", list(spec.COLOURS))
@pytest.mark.parametrize("background", list(spec.BACKGROUNDS))
def test_flat_colours(colour, background):
    frame = render(scene(colour=colour, background=background, motion="still", shape="square"),
                   torch.tensor([0.0]), 64)[0]
    px = lambda x, y: tuple(round(float(v) * 255) for v in frame[:, y, x])  # noqa: E731
    sc = scene()
    assert px(int(sc.x0 * 64), int(sc.y0 * 64)) == spec.COLOURS[colour]
    assert px(0, 0) == spec.BACKGROUNDS[background]


def test_any_size_and_same_motion_at_any_fps():
    sc = scene(motion="diagonal", speed="fast")
    for size in (16, 64, 100, 320):
        assert render(sc, torch.tensor([0.0]), size).shape == (1, 3, size, size)
    at30 = render(sc, torch.arange(0, 30, dtype=torch.float64) / 30, 64)
    at10 = render(sc, torch.arange(0, 10, dtype=torch.float64) / 10, 64)
    assert torch.equal(at30[::3], at10)


def test_latent_gives_contract_distributions():
    phases, xs, ys = [], [], []
    for seed in range(400):
        s = Scene.complete({**FULL, "motion": "up-down"}, latent_from_seed(seed))
        phases.append(s.phase)
        xs.append(s.x0)
        st = Scene.complete({**FULL, "motion": "still"}, latent_from_seed(seed))
        ys.append(st.y0)
    assert min(xs) >= 0.3 and max(xs) <= 0.7 and max(xs) - min(xs) > 0.35
    assert min(ys) >= 0.25 and max(ys) <= 0.75 and max(ys) - min(ys) > 0.45
    assert min(phases) < -2.8 and max(phases) > 2.8
    assert latent_from_seed(7).equal(latent_from_seed(7))


def test_left_out_attributes_vary_with_seed_and_never_pick_held_out():
    for given in ({"shape": "triangle"}, {"colour": "magenta"}, {"colour": "cyan"}, {}):
        chosen = [Scene.complete(given, latent_from_seed(s)) for s in range(300)]
        assert not any(spec.is_held_out(c.colour, c.shape) for c in chosen)
        for name in spec.ATTRIBUTES:
            if name not in given:
                assert len({getattr(c, name) for c in chosen}) > 1, name
    moving = [Scene.complete({"speed": "fast"}, latent_from_seed(s)).motion for s in range(100)]
    assert "still" not in moving


def test_captions_cover_every_paraphrase_and_parse_back():
    rng = random.Random(0)
    seen_words = set()
    for _ in range(3000):
        attrs = sample_attributes(rng, p_omit=rng.choice([0.0, 0.5]))
        text = caption(attrs, rng)
        seen_words.update(text.split())
        assert parse_prompt(text).attributes == attrs, text
        assert parse_prompt(caption(attrs)).attributes == attrs
    for word in ("little", "tiny", "big", "ball", "disc", "box", "bouncing", "horizontally",
                 "vertically", "circling", "not", "staying", "slow", "fast", "over"):
        assert word in seen_words


def test_canonical_captions():
    assert caption(FULL) == "a large red square moving left and right slowly on a black background"
    assert caption({**FULL, "motion": "still", "speed": None}) == \
        "a large red square standing still on a black background"


def test_dataset_is_deterministic_and_never_yields_held_out_pairs():
    data = ShapesClips(seed=3, frames_per_clip=3)
    a, b = data.batch(5, 8), data.batch(5, 8)
    assert torch.equal(a.frames, b.frames) and a.captions == b.captions
    assert not torch.equal(a.frames, data.batch(6, 8).frames)
    assert a.frames.shape == (8, 3, 3, 64, 64) and a.frames.min() >= -1 and a.frames.max() <= 1
    for i in range(40):
        batch = data.batch(i, 32)
        for sc, text in zip(batch.scenes, batch.captions):
            assert not spec.is_held_out(sc.colour, sc.shape), text
            given = parse_prompt(text).attributes
            assert not spec.is_held_out(given["colour"], given["shape"])


def test_choice_captions_complete_as_the_world_does():
    from t2v_rt.models.shapes.grammar import VOCAB

    data = ShapesClips(seed=3)
    tokens, z, named, attrs = data.choices(7, 64)
    again = data.choices(7, 64)
    assert torch.equal(tokens, again[0]) and torch.equal(z, again[1])
    assert (named, attrs) == (again[2], again[3])
    assert tokens.shape[0] == z.shape[0] == len(named) == len(attrs) == 64
    omitted = 0
    for tok, zz, given_named, full in zip(tokens, z, named, attrs):
        words = [VOCAB[i] for i in tok.tolist() if i]
        given = parse_prompt(" ".join(words)).attributes
        assert given == given_named
        assert Scene.complete(given, zz).attributes() == full
        assert not spec.is_held_out(full["colour"], full["shape"])
        omitted += sum(v is None for v in given.values())
    assert omitted > 64          # about half of the attributes are left to the latent
