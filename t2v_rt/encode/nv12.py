"""RGB frames -> NV12 (BT.709, limited range), the input of the GPU encoders.

The CUDA kernel (``csrc/nvenc/nv12.cu``, in the ``t2v_rt._nvenc`` module) writes straight into
NVENC's input surfaces; :func:`rgb_to_nv12_reference` is the same arithmetic in PyTorch, the
tests' reference (and the kernel is checked against it on a GPU):

- bilinear resize of [-1, 1] frames to the output size (``F.interpolate``, align_corners=False);
- to [0, 1], clamped; Y = 16 + 219 (0.2126 R + 0.7152 G + 0.0722 B);
- chroma from the mean colour of each 2 x 2 block (centre-sited):
  Cb = 128 + 224 (B - Y') / 1.8556, Cr = 128 + 224 (R - Y') / 1.5748;
- rounded half up and clamped to [0, 255].

NV12 layout: the Y plane (H rows of ``pitch`` bytes), then H / 2 rows of interleaved Cb, Cr.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KR, KG, KB = 0.2126, 0.7152, 0.0722


def _u8(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5).clamp_(0, 255).to(torch.uint8)


def rgb_to_nv12_reference(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """frames [N, 3, h, w] in [-1, 1] -> NV12 [N, height * 3 / 2, width] uint8 (pitch = width)."""
    if height % 2 or width % 2:
        raise ValueError(f"NV12 needs an even size, got {width} x {height}")
    x = frames.float()
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    rgb = ((x + 1) * 0.5).clamp(0, 1)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    y = _u8(16 + 219 * (KR * r + KG * g + KB * b))
    mean = F.avg_pool2d(rgb, 2)
    r, g, b = mean[:, 0], mean[:, 1], mean[:, 2]
    luma = KR * r + KG * g + KB * b
    cb = _u8(128 + 224 * (b - luma) / 1.8556)
    cr = _u8(128 + 224 * (r - luma) / 1.5748)
    uv = torch.stack([cb, cr], dim=-1).reshape(len(frames), height // 2, width)
    return torch.cat([y, uv], dim=1)


def rgb_to_nv12_cuda(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The CUDA kernel (``t2v_rt._nvenc.rgb_to_nv12``) on CUDA frames [N, 3, h, w] (fp32, fp16
    or bf16), into a tensor of :func:`rgb_to_nv12_reference`'s layout; on torch's current
    stream."""
    from t2v_rt.encode.nvenc import native_dtype, native_module

    nv = native_module()
    frames = frames.contiguous()
    if not frames.is_cuda or frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected CUDA frames [N, 3, H, W], got {list(frames.shape)} on {frames.device}")
    out = torch.empty(len(frames), height * 3 // 2, width, dtype=torch.uint8, device=frames.device)
    stream = torch.cuda.current_stream(frames.device).cuda_stream
    for i in range(len(frames)):
        nv.rgb_to_nv12(frames[i].data_ptr(), native_dtype(frames.dtype), frames.shape[2], frames.shape[3],
                       out[i].data_ptr(), width, height, width, stream)
    return out
