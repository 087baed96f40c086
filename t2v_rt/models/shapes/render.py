"""The contract renderer: scenes to frames at any size, anti-aliased by supersampling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from t2v_rt.models.shapes import spec
from t2v_rt.models.shapes.scene import Scene

_SHAPE_ID = {name: i for i, name in enumerate(spec.SHAPES)}


def _supersample(size: int) -> int:
    return 4 if size <= 128 else 2 if size <= 512 else 1


def coverage(
    shape_id: torch.Tensor,  # [N] long
    cx: torch.Tensor,        # [N] centre x in [0, 1]
    cy: torch.Tensor,        # [N]
    side: torch.Tensor,      # [N] bounding-box side in [0, 1]
    size: int,
) -> torch.Tensor:           # [N, 1, size, size] in [0, 1]
    """Fraction of each pixel covered by the shape."""
    ss = _supersample(size)
    n = size * ss
    coords = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    px = coords.view(1, 1, n)
    py = coords.view(1, n, 1)
    dx = px - cx.float().view(-1, 1, 1)
    dy = py - cy.float().view(-1, 1, 1)
    half = (side.float() / 2).view(-1, 1, 1)
    circle = dx * dx + dy * dy <= half * half
    square = (dx.abs() <= half) & (dy.abs() <= half)
    # Triangle: apex at the top centre of the box, base along its bottom, as wide as tall.
    from_top = dy + half
    triangle = (from_top >= 0) & (dy <= half) & (dx.abs() <= from_top / 2)
    sid = shape_id.view(-1, 1, 1)
    inside = torch.where(sid == 0, circle, torch.where(sid == 1, square, triangle))
    cov = inside.float().unsqueeze(1)
    return F.avg_pool2d(cov, ss) if ss > 1 else cov


def render_frames(
    shape: Sequence[str],
    colour: Sequence[str],
    size_name: Sequence[str],
    background: Sequence[str],
    cx: torch.Tensor,  # [N]
    cy: torch.Tensor,  # [N]
    size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``[N, 3, size, size]`` float in [0, 1] and shape coverage ``[N, 1, size, size]``."""
    shape_id = torch.tensor([_SHAPE_ID[s] for s in shape])
    side = torch.tensor([spec.SIZES[s] for s in size_name])
    fg = torch.tensor([spec.COLOURS[c] for c in colour], dtype=torch.float32) / 255
    bg = torch.tensor([spec.BACKGROUNDS[b] for b in background], dtype=torch.float32) / 255
    cov = coverage(shape_id, cx, cy, side, size)
    frames = bg.view(-1, 3, 1, 1) + (fg - bg).view(-1, 3, 1, 1) * cov
    return frames, cov


def render(scene: Scene, times: torch.Tensor, size: int = 64) -> torch.Tensor:
    """Frames of one scene at ``times`` (seconds, [T]): ``[T, 3, size, size]`` float in [0, 1]."""
    times = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    cx, cy = scene.centre(times)
    t = len(times)
    frames, _ = render_frames(
        [scene.shape] * t, [scene.colour] * t, [scene.size] * t, [scene.background] * t,
        cx, cy, size,
    )
    return frames


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] float in [0, 1] -> [N, H, W, 3] uint8."""
    return (frames.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
