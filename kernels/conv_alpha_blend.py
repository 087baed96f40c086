"""The generator's last op, fused: 3x3 conv to one channel -> sigmoid (the shape's coverage,
alpha) -> blend of the two per-sample palette colours -> the output's dtype and layout.

    alpha = sigmoid(conv3x3(x) + bias)            x [N, C, H, W]
    frame = bg + alpha * (fg - bg)                fg, bg [N, 3] in [-1, 1]

This is the renderer's compositing (``t2v_rt.models.shapes.generator``: frame = bg + alpha (fg - bg)).
Output: float frames [N, 3, H, W] in [-1, 1] (any strides), or, with ``display=True``, the
uint8 RGB frames [N, H, W, 3] the encoder takes (``t2v_rt.pipeline.to_display``: (f + 1) *
127.5, rounded, clamped), so the float frames never reach memory. With one output channel a
tensor-core GEMM would waste 15/16 of its columns; each program instead reduces 9 * C products
per pixel on the FMA units, and the op is bound by reading x once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from t2v_rt.kernels._common import activate, autotune, check_device, interpreting


def interpret_config(m: int, c: int) -> dict:
    """Under the interpreter: the largest tiles that fit (see ``upsample_conv_act``)."""
    return {"BLOCK_M": max(16, min(4096, triton.next_power_of_2(m))),
            "BLOCK_C": max(16, min(64, triton.next_power_of_2(c)))}


def _configs() -> list[triton.Config]:
    return [triton.Config({"BLOCK_M": bm, "BLOCK_C": bc}, num_warps=warps, num_stages=stages)
            for bm, bc, warps, stages in [(64, 16, 2, 2), (128, 16, 4, 2), (128, 32, 4, 2),
                                          (256, 16, 4, 2), (256, 32, 8, 2), (512, 16, 8, 2),
                                          (512, 32, 8, 3), (1024, 16, 8, 2)]]


@triton.jit
def _conv_alpha_blend_kernel(
    x_ptr, w_ptr, bias, fg_ptr, bg_ptr, y_ptr,
    N, H, W, C: tl.constexpr,
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    DISPLAY: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)       # pixel (n, y, x), flattened
    m_ok = m < N * H * W
    n = (m // (H * W)).to(tl.int64)
    rem = m % (H * W)
    py = rem // W
    px = rem % W
    cc = tl.arange(0, BLOCK_C)
    acc = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for tap in tl.static_range(9):
        sy = py + tap // 3 - 1
        sx = px + tap % 3 - 1
        ok = m_ok & (sy >= 0) & (sy < H) & (sx >= 0) & (sx < W)
        row = x_ptr + n * sxn + sy * sxh + sx * sxw
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cc
            c_ok = c < C
            a = tl.load(row[:, None] + c[None, :] * sxc, mask=ok[:, None] & c_ok[None, :], other=0.0)
            wt = tl.load(w_ptr + c * 9 + tap, mask=c_ok, other=0.0)
            acc += tl.sum(a.to(tl.float32) * wt.to(tl.float32)[None, :], axis=1)
    alpha = activate(acc + bias, 4, 0.0)
    for ch in tl.static_range(3):
        fg = tl.load(fg_ptr + n * 3 + ch, mask=m_ok, other=0.0).to(tl.float32)
        bg = tl.load(bg_ptr + n * 3 + ch, mask=m_ok, other=0.0).to(tl.float32)
        v = bg + alpha * (fg - bg)
        if DISPLAY:
            v = tl.minimum(tl.maximum(tl.floor((v + 1.0) * 127.5 + 0.5), 0.0), 255.0)
        tl.store(y_ptr + n * syn + ch * syc + py * syh + px * syw,
                 v.to(y_ptr.dtype.element_ty), mask=m_ok)


_tuned_kernel = autotune(_configs(), key=["N", "C", "H", "W", "DISPLAY"])(_conv_alpha_blend_kernel)


def conv_alpha_blend(
    x: torch.Tensor,              # [N, C, H, W]
    weight: torch.Tensor,         # [1, C, 3, 3]
    bias: torch.Tensor | float,   # [1] or a number
    fg: torch.Tensor,             # [N, 3]
    bg: torch.Tensor,             # [N, 3]
    *,
    display: bool = False,
    out: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
    impl: str = "triton",
    config: dict | None = None,
) -> torch.Tensor:                # [N, 3, H, W] float, or [N, H, W, 3] uint8 with display
    """``bg + sigmoid(conv3x3(x) + bias) * (fg - bg)``, fused with the output conversion."""
    n, c, h, w = x.shape
    if weight.shape != (1, c, 3, 3) or fg.shape != (n, 3) or bg.shape != (n, 3):
        raise ValueError(f"expected weight [1, {c}, 3, 3], fg and bg [{n}, 3], got "
                         f"{list(weight.shape)}, {list(fg.shape)}, {list(bg.shape)}")
    b = float(bias) if not torch.is_tensor(bias) else float(bias.reshape(-1)[0])
    if impl == "ref":
        return conv_alpha_blend_ref(x, weight, b, fg, bg, display=display).to(
            torch.uint8 if display else out_dtype)
    if impl != "triton":
        raise ValueError(f"impl must be 'triton' or 'ref', got '{impl}'")
    check_device(x, weight, fg, bg)
    shape = (n, h, w, 3) if display else (n, 3, h, w)
    if out is None:
        out = torch.empty(shape, device=x.device, dtype=torch.uint8 if display else out_dtype)
    elif out.shape != shape:
        raise ValueError(f"out must be {list(shape)}, got {list(out.shape)}")
    view = out.permute(0, 3, 1, 2) if display else out                 # [N, 3, H, W] strides
    args = (x, weight.reshape(c, 9).contiguous(), b, fg.contiguous(), bg.contiguous(), out,
            n, h, w, c, *x.stride(), *view.stride())

    def grid(meta):
        return (triton.cdiv(n * h * w, meta["BLOCK_M"]),)

    if config is None and interpreting():
        config = interpret_config(n * h * w, c)
    if config is None:
        _tuned_kernel[grid](*args, DISPLAY=display)
    else:
        config = dict(config)
        launch = {key: config.pop(key) for key in ("num_warps", "num_stages") if key in config}
        _conv_alpha_blend_kernel[grid](*args, DISPLAY=display, **config, **launch)
    return out


def conv_alpha_blend_ref(x, weight, bias, fg, bg, display: bool = False) -> torch.Tensor:
    """The unfused PyTorch formulation in fp32; ``display`` as ``pipeline.to_display``."""
    b = torch.tensor([float(bias)], device=x.device) if not torch.is_tensor(bias) else bias.float().reshape(1)
    alpha = torch.sigmoid(F.conv2d(x.float(), weight.float(), b, padding=1))
    frames = bg.float()[:, :, None, None] + alpha * (fg.float() - bg.float())[:, :, None, None]
    if not display:
        return frames
    return ((frames + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
