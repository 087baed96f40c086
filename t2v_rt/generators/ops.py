"""Operations the runtime knows by name, for architectures to build on: a fusion pass
(``t2v_rt.backends.fusion``) recognises them in any generator's graph and the fused kernels
compute them in registers.

- :func:`coordinate_features`: CoordConv's input (Liu et al. 2018, with its radial channel),
  each pixel centre relative to a per-sample pose.
"""

from __future__ import annotations

import torch

COORD_FEATURES = 5


@torch.fx.wrap
def coordinate_features(pose: torch.Tensor, size: int, width: int | None = None) -> torch.Tensor:
    """[N, 2] pose -> [N, 5, size, size] (or [N, 5, size, width]): each pixel centre relative
    to the pose.

    Channels ``dx, dy, |dx|, |dy|, r`` (coordinates in [-1, 1] across the frame, pixel centres
    at (i + 0.5) / size * 2 - 1; ``r = sqrt(dx^2 + dy^2 + 1e-8)``). A torch.fx leaf: traced as
    one call, which the fusion pass maps onto the kernels' coordinate epilogue.
    """
    width = width or size
    cx = (torch.arange(width, device=pose.device, dtype=pose.dtype) + 0.5) / width * 2 - 1
    cy = (torch.arange(size, device=pose.device, dtype=pose.dtype) + 0.5) / size * 2 - 1
    dx = cx.view(1, 1, width) - pose[:, 0, None, None]
    dy = cy.view(1, size, 1) - pose[:, 1, None, None]
    dx, dy = torch.broadcast_tensors(dx, dy)
    r = torch.sqrt(dx * dx + dy * dy + 1e-8)
    return torch.stack([dx, dy, dx.abs(), dy.abs(), r], dim=1)
