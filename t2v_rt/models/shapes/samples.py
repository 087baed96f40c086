"""Sample videos during training: a grid of fixed prompts and seeds, 2 s at 15 fps."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import torch

from t2v_rt.encode.sink import VideoSink
from t2v_rt.models.shapes.grammar import encode_tokens, parse_prompt
from t2v_rt.models.shapes.scene import latent_from_seed

SAMPLE_PROMPTS = (
    "a large red circle moving left and right slowly on a black background",
    "a small blue square moving up and down quickly on a white background",
    "a large green triangle moving in a circle slowly on a gray background",
    "a small yellow circle moving diagonally quickly on a black background",
    "a large orange triangle standing still on a white background",   # held out
    "a small cyan square moving left and right quickly on a gray background",  # held out
    "a large magenta circle moving up and down slowly on a black background",  # held out
    "a ball",
)


@torch.no_grad()
def write_samples(g, path: Path, device: torch.device, seconds: float = 2.0, fps: int = 15) -> None:
    n = len(SAMPLE_PROMPTS)
    tokens = encode_tokens([parse_prompt(p) for p in SAMPLE_PROMPTS]).to(device)
    z = torch.stack([latent_from_seed(i) for i in range(n)]).to(device)
    times = torch.arange(int(seconds * fps), dtype=torch.float64, device=device) / fps
    frames = g(tokens, z, times.expand(n, -1).contiguous()).float()   # [n, T, 3, R, R]
    grid = torch.cat([frames[: n // 2].unbind(0)[i] for i in range(n // 2)], dim=-1)
    grid2 = torch.cat([frames[n // 2 :].unbind(0)[i] for i in range(n - n // 2)], dim=-1)
    video = torch.cat([grid, grid2], dim=-2)                             # [T, 3, 2R, 4R]
    video = ((video.clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu()
    sink = VideoSink(path, "mp4", Fraction(fps), (video.shape[2], video.shape[1]))
    try:
        sink.write(video.numpy())
    finally:
        sink.close()
