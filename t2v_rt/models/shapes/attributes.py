"""Recover a video's shapes-world attributes from its pixels (contract, "Measuring a model").

Every attribute is read analytically, with medians over pixels and frames so that
compression noise (H.264 4:2:0, JPEG) and resampling (a 64 x 64 video upscaled to 256 x 256)
do not move the answer:

- background: nearest contract background to the median of the frame-border pixels;
- shape pixels: those whose colour differs from that median by more than ``MASK_THRESHOLD``
  in some channel, with isolated specks removed;
- colour: nearest contract colour to the median of the interior shape pixels (the mask
  eroded by one pixel, so anti-aliased or chroma-blurred edges do not pull it);
- geometry: each pixel's coverage ``alpha`` in [0, 1], its projection on the line from the
  background to the shape colour; near the shape, the bounding box's width and height are the
  sums of the per-column and per-row maxima of ``alpha`` (sub-pixel exact for flat fills) and
  the area is the sum of ``alpha``;
- size: median bounding-box side ``sqrt(width * height)``, nearest of the contract sides in
  log scale (the boundary between 0.16 and 0.32 is 0.226);
- shape: median fill ``area / (width * height)``, nearest of square 1.0, circle pi/4,
  triangle 0.5; but a triangle whenever the coverage is clearly bottom-heavy (vertical
  skewness), because blur (H.264 chroma at 64 x 64) rounds its sharp corners off and makes a
  small triangle fill up to 0.74 of the box that remains;
- motion: from the centre track (centroids of the column and row profiles, which is the
  bounding-box centre for these shapes up to a constant offset): still when neither x nor y
  moves, along one axis when one spread is much smaller than the other, diagonal when x and
  y move together, circle otherwise;
- speed: the period, 1 s or 2 s, whose sinusoid ``[1, sin 2 pi t / P, cos 2 pi t / P]``
  fits the centre track with the lower least-squares residual.

Requirements on the video: square frames of at least 32 x 32, RGB in [0, 1], shape and
background in contract colours, and, for motion and speed, frames spanning about 2 s (one
slow cycle) at 8 fps or more; shorter clips still get an answer, less reliably. Frames in
which no shape is found are skipped; if there is no shape in any frame, every attribute
except the background is ``None``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from t2v_rt.models.shapes import spec

# A pixel belongs to the shape when one of its channels differs from the background by more
# than this. The least contrast in the contract is magenta on gray, 88/255 = 0.345 (green
# channel), so pixels at least ~70% covered pass and compression noise (a few /255) does not.
MASK_THRESHOLD = 0.25
# Border ring read for the background, as a fraction of the frame side (at least 1 pixel).
BORDER_FRAC = 1 / 32
# Margin kept around the shape's mask when measuring its soft extent, as a fraction of the
# frame side (at least 1 pixel): holds the anti-aliased edge, chroma blur and resampling.
MARGIN_FRAC = 1 / 32
# Still: neither centre coordinate has a standard deviation above this (frame sides). A
# moving contract shape has about 0.18 to 0.21 over whole cycles.
STILL_STD = 0.02
# Motion along one axis: the smaller of the x and y spreads is below this share of the larger.
AXIS_RATIO = 0.5
# Diagonal: x and y correlate above this (the contract's diagonal has +1, its circle 0).
DIAGONAL_CORR = 0.9
# Fill of the bounding box by each shape (contract, "Measuring a model").
FILL: dict[str, float] = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5}

# Triangle whenever the coverage is skewed this much towards the bottom of the box. An apex-up
# triangle has skewness -0.57 and a square or circle 0; a symmetric blur leaves the third
# cumulant unchanged, so the skewness barely moves where the fill does (measured over small
# shapes at 64 x 64 through H.264 crf 23: triangles -0.36 at most, circles and squares within
# +-0.05; triangle fills up to 0.74).
TRIANGLE_SKEW = -0.25

_KEYS = tuple(spec.ATTRIBUTES)


def _nearest(table: dict[str, tuple[int, int, int]], rgb: torch.Tensor) -> str:
    names = list(table)
    ref = torch.tensor([table[n] for n in names], dtype=torch.float64) / 255
    return names[int(((ref - rgb.double().view(1, 3)) ** 2).sum(1).argmin())]


def _check(video: torch.Tensor, times: torch.Tensor) -> None:
    if not isinstance(video, torch.Tensor) or video.ndim != 4 or video.shape[1] != 3:
        got = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"video: expected a tensor [T, 3, H, W], got {got}")
    t, _, h, w = video.shape
    if h != w or h < 32:
        raise ValueError(f"video: expected square frames of at least 32 x 32, got {h} x {w}")
    if not video.is_floating_point():
        raise ValueError(f"video: expected float RGB in [0, 1], got {video.dtype}")
    if t < 1:
        raise ValueError("video: expected at least one frame, got 0")
    if not isinstance(times, torch.Tensor) or tuple(times.shape) != (t,):
        got = tuple(times.shape) if isinstance(times, torch.Tensor) else type(times).__name__
        raise ValueError(f"times: expected a tensor [{t}] (one time per frame), got {got}")


def _span(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last True index along the last dim of ``mask`` [..., N] (any True assumed)."""
    n = mask.shape[-1]
    idx = torch.arange(n, device=mask.device)
    lo = torch.where(mask, idx, n).amin(-1)
    hi = torch.where(mask, idx, -1).amax(-1)
    return lo, hi


def _motion(cx: torch.Tensor, cy: torch.Tensor) -> str | None:
    """Motion name from the centre track [N] (frame sides), or None with under two frames."""
    if len(cx) < 2:
        return None
    sx, sy = float(cx.std()), float(cy.std())
    if max(sx, sy) < STILL_STD:
        return "still"
    if min(sx, sy) < AXIS_RATIO * max(sx, sy):
        return "left-right" if sx > sy else "up-down"
    corr = float(((cx - cx.mean()) * (cy - cy.mean())).mean()) / (
        float(cx.std(correction=0)) * float(cy.std(correction=0))
    )
    return "diagonal" if corr > DIAGONAL_CORR else "circle"


def _period_residuals(t: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor) -> dict[str, float]:
    """Per contract speed: least-squares residual of the sinusoid ``[1, sin 2 pi t / P,
    cos 2 pi t / P]`` of its period fitted to the centre track."""
    t, target = t.double(), torch.stack([cx, cy], 1).double()       # [N], [N, 2]
    out = {}
    for name, period in spec.SPEEDS.items():
        w = 2 * math.pi * t / period
        basis = torch.stack([torch.ones_like(w), torch.sin(w), torch.cos(w)], 1)  # [N, 3]
        coef = torch.linalg.lstsq(basis, target).solution
        out[name] = float(((basis @ coef - target) ** 2).sum())
    return out


def _speed(t: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor) -> str | None:
    """The contract speed whose period best fits the centre track, by least squares."""
    if len(t) < 4:
        return None
    res = _period_residuals(t, cx, cy)
    return min(res, key=res.get)


def _background(video: torch.Tensor) -> torch.Tensor:
    """Median RGB [3] of the border ring of every frame of ``video`` [T, 3, S, S]."""
    side = video.shape[-1]
    b = max(1, round(side * BORDER_FRAC))
    ring = torch.ones(side, side, dtype=torch.bool)
    ring[b:-b, b:-b] = False
    return video.permute(1, 0, 2, 3)[:, :, ring].reshape(3, -1).median(1).values


def _shape_mask(video: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """Shape pixels [T, S, S] bool: far from ``bg`` in some channel, isolated specks removed."""
    mask = (video - bg.view(1, 3, 1, 1)).abs().amax(1, keepdim=True) > MASK_THRESHOLD
    # Keep a pixel when at least 2 of its 8 neighbours are shape pixels too.
    neighbours = F.avg_pool2d(mask.float(), 3, stride=1, padding=1) * 9  # incl. itself
    return (mask & (neighbours >= 2.5))[:, 0]


def _shape_colour(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Median RGB [3] of the interior shape pixels (mask eroded by one pixel) or, when too
    few, of all of them."""
    core = -F.max_pool2d(-mask.float().unsqueeze(1), 3, stride=1, padding=1)[:, 0] > 0.5
    pick = core if int(core.sum()) >= 8 else mask
    return video.permute(1, 0, 2, 3)[:, pick].median(1).values


def _geometry(
    video: torch.Tensor,  # [T, 3, S, S]
    mask: torch.Tensor,   # [T, S, S] bool, a shape pixel in every frame
    bg: torch.Tensor,     # [3]
    fg: torch.Tensor,     # [3]
) -> dict[str, torch.Tensor]:
    """Per frame [T]: bounding-box width and height and area (pixels), vertical skewness of the
    coverage, and centre (frame sides)."""
    side = video.shape[-1]
    d = (fg - bg).view(1, 3, 1, 1)
    alpha = (((video - bg.view(1, 3, 1, 1)) * d).sum(1) / (d * d).sum().clamp_min(1e-6))
    alpha = alpha.clamp(0, 1)                                         # [T, S, S] coverage
    m = max(1, round(side * MARGIN_FRAC))
    idx = torch.arange(side)
    y_lo, y_hi = _span(mask.any(2))
    x_lo, x_hi = _span(mask.any(1))
    at = idx.view(1, -1)
    rows = (at >= (y_lo - m).view(-1, 1)) & (at <= (y_hi + m).view(-1, 1))    # [T, S]
    cols = (at >= (x_lo - m).view(-1, 1)) & (at <= (x_hi + m).view(-1, 1))    # [T, S]
    alpha = alpha * (rows.unsqueeze(2) & cols.unsqueeze(1))
    col_prof = alpha.amax(1).double()                                 # [T, S]
    row_prof = alpha.amax(2).double()                                 # [T, S]
    width, height = col_prof.sum(1), row_prof.sum(1)
    centre = (idx.double() + 0.5) / side
    # Vertical skewness of the coverage: blur-invariant third cumulant over the variance^1.5.
    mass = alpha.double().sum(2)                                      # [T, S] per row
    total = mass.sum(1, keepdim=True).clamp_min(1e-6)
    y = idx.double()
    mean_y = (mass * y).sum(1, keepdim=True) / total
    var_y = (mass * (y - mean_y) ** 2).sum(1) / total[:, 0]
    m3_y = (mass * (y - mean_y) ** 3).sum(1) / total[:, 0]
    return {
        "skew_y": m3_y / var_y.clamp_min(1e-6) ** 1.5,
        "width": width,
        "height": height,
        "area": alpha.double().sum((1, 2)),
        "cx": (col_prof * centre).sum(1) / width.clamp_min(1e-6),
        "cy": (row_prof * centre).sum(1) / height.clamp_min(1e-6),
    }


@dataclass
class Measurement:
    """What the evaluator reads from one video, before naming attributes.

    Per-frame entries cover only the frames in which a shape was found (``times`` says which).
    """

    frames: int                  # frames in the video
    side: int                    # frame side, pixels
    background: torch.Tensor     # [3] RGB in [0, 1]
    colour: torch.Tensor | None  # [3] the shape's colour over the whole video; None: no shape
    times: torch.Tensor          # [V] seconds of the frames with a shape
    frame_colour: torch.Tensor   # [V, 3] the shape's colour in each of them
    width: torch.Tensor          # [V] bounding box, pixels
    height: torch.Tensor         # [V]
    area: torch.Tensor           # [V] coverage, pixels
    skew_y: torch.Tensor         # [V] vertical skewness of the coverage
    cx: torch.Tensor             # [V] centre, frame sides
    cy: torch.Tensor             # [V]

    @property
    def box_side(self) -> torch.Tensor:
        """[V] bounding-box side sqrt(width * height), frame sides."""
        return (self.width * self.height).clamp_min(1e-6).sqrt() / self.side

    @property
    def fill(self) -> torch.Tensor:
        """[V] area / bounding-box area."""
        return self.area / (self.width * self.height).clamp_min(1e-6)


@torch.no_grad()
def measure(
    video: torch.Tensor,  # [T, 3, H, W] float RGB in [0, 1], H == W >= 32
    times: torch.Tensor,  # [T] seconds
) -> Measurement:
    """Read the background, the shape's colour and per-frame geometry from ``video``."""
    _check(video, times)
    video = video.detach().float().cpu().clamp(0, 1)
    times = times.detach().cpu().double()
    n, side = video.shape[0], video.shape[-1]
    bg = _background(video)
    mask = _shape_mask(video, bg)
    valid = mask.flatten(1).sum(1) >= 3
    if not bool(valid.any()):
        e = torch.zeros(0, dtype=torch.float64)
        return Measurement(n, side, bg, None, e, torch.zeros(0, 3), e, e, e, e, e, e)
    video, mask, times = video[valid], mask[valid], times[valid]
    fg = _shape_colour(video, mask)
    g = _geometry(video, mask, bg, fg)
    frame_colour = torch.stack([_shape_colour(v[None], m[None]) for v, m in zip(video, mask)])
    return Measurement(n, side, bg, fg, times, frame_colour, g["width"], g["height"], g["area"],
                       g["skew_y"], g["cx"], g["cy"])


def classify(m: Measurement) -> dict[str, str | None]:
    """Name each attribute from a :class:`Measurement` (see :func:`recover_attributes`)."""
    out: dict[str, str | None] = dict.fromkeys(_KEYS)
    out["background"] = _nearest(spec.BACKGROUNDS, m.background)
    if m.colour is None:
        return out
    out["colour"] = _nearest(spec.COLOURS, m.colour)
    fill = float(m.fill.median())
    if float(m.skew_y.median()) < TRIANGLE_SKEW:
        out["shape"] = "triangle"
    else:
        out["shape"] = min(FILL, key=lambda s: abs(FILL[s] - fill))
    box_side = float(m.box_side.median())
    out["size"] = min(spec.SIZES, key=lambda s: abs(math.log(box_side / spec.SIZES[s])))
    out["motion"] = _motion(m.cx, m.cy)
    if out["motion"] not in (None, "still"):
        out["speed"] = _speed(m.times, m.cx, m.cy)
    return out


@torch.no_grad()
def recover_attributes(
    video: torch.Tensor,  # [T, 3, H, W] float RGB in [0, 1], H == W >= 32
    times: torch.Tensor,  # [T] seconds
) -> dict[str, str | None]:
    """Each attribute of ``video`` as its name in :mod:`t2v_rt.models.shapes.spec`.

    Keys: shape, colour, size, motion, speed, background. ``speed`` is None for a still
    shape; everything but ``background`` is None when no frame shows a shape, and ``motion``
    and ``speed`` are None when too few frames do (under 2 and 4).
    """
    return classify(measure(video, times))


# The evaluator's feature space, for a Frechet distance between sets of videos: every number
# the attributes are read from, in units of order one (RGB in [0, 1], frame sides).
FEATURES = ("bg_r", "bg_g", "bg_b", "fg_r", "fg_g", "fg_b", "box_side", "fill", "skew_y",
            "cx_mean", "cy_mean", "cx_std", "cy_std", "xy_corr", "period_fit")


def features(m: Measurement) -> torch.Tensor:
    """[len(FEATURES)] float64 feature vector of one video. A video with no shape gets the
    background as its colour and zeros (centre 0.5) for the geometry."""
    bg = m.background.double()
    if m.colour is None:
        return torch.cat([bg, bg, torch.tensor([0.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0],
                                               dtype=torch.float64)])
    cx, cy = m.cx.double(), m.cy.double()
    sx, sy = float(cx.std(correction=0)), float(cy.std(correction=0))
    corr = 0.0
    if sx > STILL_STD / 4 and sy > STILL_STD / 4:
        corr = float(((cx - cx.mean()) * (cy - cy.mean())).mean()) / (sx * sy)
    geo = [float(m.box_side.median()), float(m.fill.median()), float(m.skew_y.median()),
           float(cx.mean()), float(cy.mean()), sx, sy, corr, _period_fit(m.times, cx, cy)]
    return torch.cat([bg, m.colour.double(), torch.tensor(geo, dtype=torch.float64)])


def _period_fit(t: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor) -> float:
    """(r_slow - r_fast) / (r_slow + r_fast) of :func:`_period_residuals`: +1 fits the fast
    period only, -1 the slow one only, 0 neither better (a still shape)."""
    if len(t) < 4:
        return 0.0
    res = _period_residuals(t, cx, cy)
    return (res["slow"] - res["fast"]) / max(res["slow"] + res["fast"], 1e-9)


def flicker(m: Measurement) -> dict[str, float] | None:
    """Frame-to-frame change of the shape between consecutive frames where it is found.

    ``colour``: mean of the largest channel change of its colour, in 8-bit steps (0..255);
    ``size``: mean relative change of its bounding-box side. None with under two such frames.
    """
    if len(m.times) < 2:
        return None
    dc = (m.frame_colour[1:] - m.frame_colour[:-1]).abs().amax(1) * 255
    side = m.box_side
    ds = (side[1:] / side[:-1] - 1).abs()
    return {"colour": float(dc.mean()), "size": float(ds.mean())}


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to feature sets a [N, F] and b [M, F]:
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) (the FID formula, in any feature space).
    """
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    # tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), all >= 0.
    ea, va = torch.linalg.eigh(sa)
    root_a = (va * ea.clamp_min(0).sqrt()) @ va.T
    mid = torch.linalg.eigvalsh(root_a @ sb @ root_a).clamp_min(0)
    d = (mu_a - mu_b).square().sum() + sa.trace() + sb.trace() - 2 * mid.sqrt().sum()
    return max(0.0, float(d))  # rounding can take an exact 0 below it


def score(
    recovered: dict[str, str | None],
    target: dict[str, str | None],
) -> dict[str, bool]:
    """Per attribute named (not None) in ``target``: whether ``recovered`` has the same value.

    Speed is not scored when the target motion is still (a still shape has no speed).
    """
    unknown = sorted(set(target) - set(_KEYS))
    if unknown:
        raise ValueError(f"target: unknown attribute(s) {unknown}; expected some of {list(_KEYS)}")
    result: dict[str, bool] = {}
    for name in _KEYS:
        want = target.get(name)
        if want is None or (name == "speed" and target.get("motion") == "still"):
            continue
        result[name] = recovered.get(name) == want
    return result
