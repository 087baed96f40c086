"""Fused nearest x2 upsample -> 3x3 convolution -> epilogue -> activation, in one pass.

    y = act((conv3x3(up2(x)) + bias + coord(pose)) * scale + shift)       x [N, C, H, W] -> y [N, K, 2H, 2W]

Sub-pixel split: output pixel (2i + py, 2j + px) of a 3x3 convolution of the x2 nearest
upsample reads only the 2 x 2 input pixels rows {i - 1, i} (py = 0) or {i, i + 1} (py = 1),
columns likewise, with the 3x3 taps summed into 2 x 2 (rows 1 + 2 for py = 0, rows 0 + 1 for
py = 1). So the block is four 2x2 convolutions of the low-resolution input, one per output
parity: 16 multiply-adds per output quad and channel pair instead of 36, and the upsampled
tensor never exists. Zero padding carries over exactly: an upsampled row outside the frame is
an input row outside it.

Each parity is an implicit GEMM: [N*H*W low-res pixels] x [4 taps * C] @ [4 taps * C, K],
tiled BLOCK_M x BLOCK_N, reduced in BLOCK_K channel slices with ``tl.dot`` (tensor cores),
fp32 accumulation, fp16 / bf16 / fp32 inputs (fp32 as exact fp32 products, not TF32). The
epilogue runs on the fp32 accumulator in registers: bias, the coordinate term (a 1 x 1 conv of
each pixel's position relative to the per-sample pose: dx, dy, |dx|, |dy|, r; the generator's
CoordConv input, ``t2v_rt.model.generator.coordinate_features``), per-sample scale/shift
(FiLM; an eval-mode normalisation folds in here too), then the activation, then one store in
the output dtype. Any strides in and out (NCHW or channels-last).

``impl="ref"`` is the PyTorch formulation (upsample, conv2d, coordinates, affine, activation)
that the tests and benchmarks compare against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from t2v_rt.kernels._common import (
    activate,
    activation_code,
    autotune,
    check_device,
    interpreting,
    torch_activation,
)

COORD_FEATURES = 5

# Rows (or columns) of the 3x3 kernel summed into each of the two taps of a parity:
# parity 0 reads input rows (i - 1, i) with kernel rows (0), (1 + 2); parity 1 reads
# (i, i + 1) with (0 + 1), (2).
_FOLD = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]],
                      [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)


def subpixel_weights(weight: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """[K, C, 3, 3] -> [4 parities (py, px), 4 taps (ty, tx), C, K]: the 2x2 kernels of the
    four output parities, summed in float64 and rounded once to ``dtype``."""
    fold = _FOLD.to(weight.device)
    w = torch.einsum("pay,qbx,kcyx->pqabck", fold, fold, weight.to(torch.float64))
    k, c = weight.shape[:2]
    return w.reshape(4, 4, c, k).contiguous().to(dtype or weight.dtype)


def _configs() -> list[triton.Config]:
    """The search space of the autotuner: tile shapes x warps x pipeline stages."""
    out = []
    for bm, bn, bk, warps, stages in [
        (64, 16, 16, 2, 3), (64, 32, 32, 4, 3), (128, 16, 16, 4, 3), (128, 32, 32, 4, 3),
        (128, 64, 32, 4, 3), (128, 64, 64, 8, 3), (128, 128, 32, 8, 3), (256, 32, 32, 8, 3),
        (256, 64, 32, 8, 3), (64, 64, 64, 4, 4), (128, 128, 64, 8, 4), (256, 128, 32, 8, 3),
    ]:
        out.append(triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk},
                                 num_warps=warps, num_stages=stages))
    return out


def interpret_config(m: int, c: int, k: int) -> dict:
    """Under the interpreter, where each program costs milliseconds of Python: the largest
    tiles that fit the problem (tests pass small ones explicitly to cover the masks)."""
    def p2(v: int, lo: int, hi: int) -> int:
        return max(lo, min(hi, triton.next_power_of_2(v)))

    return {"BLOCK_M": p2(m, 16, 512), "BLOCK_N": p2(k, 16, 128), "BLOCK_K": p2(c, 16, 128)}


@triton.jit
def _upsample_conv_act_kernel(
    x_ptr, w_ptr, bias_ptr, cw_ptr, pose_ptr, scale_ptr, shift_ptr, y_ptr,
    N, H, W, K, C: tl.constexpr,
    sxn, sxc, sxh, sxw,
    syn, syk, syh, syw,
    ssn, ssk, stn, stk,
    slope,
    HAS_BIAS: tl.constexpr, HAS_COORD: tl.constexpr, HAS_SCALE: tl.constexpr,
    HAS_SHIFT: tl.constexpr, ACT: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    parity = tl.program_id(2)
    py = parity // 2
    px = parity % 2

    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)          # low-res pixel (n, i, j), flattened
    m_ok = m < N * H * W
    n = (m // (H * W)).to(tl.int64)
    rem = m % (H * W)
    i = rem // W
    j = rem % W
    k = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)          # output channel
    k_ok = k < K
    ck = tl.arange(0, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for tap in tl.static_range(4):
        si = i + py + (tap // 2) - 1                     # parity 0: rows i-1, i; parity 1: i, i+1
        sj = j + px + (tap % 2) - 1
        ok = m_ok & (si >= 0) & (si < H) & (sj >= 0) & (sj < W)
        a_row = x_ptr + n * sxn + si * sxh + sj * sxw    # [BLOCK_M] pointers
        b_tap = w_ptr + (parity * 4 + tap) * C * K
        for c0 in range(0, C, BLOCK_K):
            c = c0 + ck
            c_ok = c < C
            a = tl.load(a_row[:, None] + c[None, :] * sxc, mask=ok[:, None] & c_ok[None, :], other=0.0)
            b = tl.load(b_tap + c[:, None] * K + k[None, :], mask=c_ok[:, None] & k_ok[None, :], other=0.0)
            if UPCAST:     # the interpreter's tl.dot misreads bf16 operands (Triton 3.6)
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)

    # Epilogue, on the fp32 accumulator.
    if HAS_BIAS:
        acc += tl.load(bias_ptr + k, mask=k_ok, other=0.0).to(tl.float32)[None, :]
    oy = 2 * i + py
    ox = 2 * j + px
    if HAS_COORD:
        pose_x = tl.load(pose_ptr + n * 2, mask=m_ok, other=0.0).to(tl.float32)
        pose_y = tl.load(pose_ptr + n * 2 + 1, mask=m_ok, other=0.0).to(tl.float32)
        dx = (ox.to(tl.float32) + 0.5) / (2 * W) * 2.0 - 1.0 - pose_x
        dy = (oy.to(tl.float32) + 0.5) / (2 * H) * 2.0 - 1.0 - pose_y
        r = tl.sqrt(dx * dx + dy * dy + 1e-8)
        cw = cw_ptr + k * 5
        acc += dx[:, None] * tl.load(cw, mask=k_ok, other=0.0).to(tl.float32)[None, :]
        acc += dy[:, None] * tl.load(cw + 1, mask=k_ok, other=0.0).to(tl.float32)[None, :]
        acc += tl.abs(dx)[:, None] * tl.load(cw + 2, mask=k_ok, other=0.0).to(tl.float32)[None, :]
        acc += tl.abs(dy)[:, None] * tl.load(cw + 3, mask=k_ok, other=0.0).to(tl.float32)[None, :]
        acc += r[:, None] * tl.load(cw + 4, mask=k_ok, other=0.0).to(tl.float32)[None, :]
    mk_ok = m_ok[:, None] & k_ok[None, :]
    if HAS_SCALE:
        acc *= tl.load(scale_ptr + n[:, None] * ssn + k[None, :] * ssk, mask=mk_ok, other=1.0).to(tl.float32)
    if HAS_SHIFT:
        acc += tl.load(shift_ptr + n[:, None] * stn + k[None, :] * stk, mask=mk_ok, other=0.0).to(tl.float32)
    acc = activate(acc, ACT, slope)

    y = y_ptr + n[:, None] * syn + k[None, :] * syk + (oy * syh + ox * syw)[:, None]
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=mk_ok)


_tuned_kernel = autotune(_configs(), key=["N", "C", "H", "W", "K"])(_upsample_conv_act_kernel)


def _per_sample(t: torch.Tensor | None, n: int, k: int, name: str) -> tuple[torch.Tensor | None, int, int]:
    """A [N, K] or [K] scale/shift -> (tensor, stride over n, stride over k)."""
    if t is None:
        return None, 0, 0
    if t.shape == (k,):
        return t, 0, t.stride(0)
    if t.shape == (n, k):
        return t, t.stride(0), t.stride(1)
    raise ValueError(f"{name} must be [N, K] = [{n}, {k}] or [K], got {list(t.shape)}")


def upsample_conv_act(
    x: torch.Tensor,                          # [N, C, H, W]
    weight: torch.Tensor,                     # [K, C, 3, 3]
    bias: torch.Tensor | None = None,         # [K]
    activation: str = "leaky_relu",
    slope: float = 0.2,
    scale: torch.Tensor | None = None,        # [N, K] or [K]
    shift: torch.Tensor | None = None,        # [N, K] or [K]
    coord_weight: torch.Tensor | None = None,  # [K, 5]
    pose: torch.Tensor | None = None,         # [N, 2]
    *,
    packed: torch.Tensor | None = None,       # subpixel_weights(weight, x.dtype), if cached
    out: torch.Tensor | None = None,          # [N, K, 2H, 2W], any strides
    out_dtype: torch.dtype | None = None,
    impl: str = "triton",
    config: dict | None = None,               # fixed launch config instead of the autotuner
) -> torch.Tensor:                            # [N, K, 2H, 2W]
    """``act((conv3x3(upsample_nearest_x2(x)) + bias + coord) * scale + shift)``, fused."""
    if x.dim() != 4 or weight.dim() != 4 or weight.shape[2:] != (3, 3) or weight.shape[1] != x.shape[1]:
        raise ValueError(f"expected x [N, C, H, W] and weight [K, C, 3, 3], got {list(x.shape)} "
                         f"and {list(weight.shape)}")
    n, c, h, w = x.shape
    k = weight.shape[0]
    if (coord_weight is None) != (pose is None):
        raise ValueError("coord_weight and pose go together")
    if coord_weight is not None and (coord_weight.reshape(k, -1).shape != (k, COORD_FEATURES)
                                     or pose.shape != (n, 2)):
        raise ValueError(f"expected coord_weight [K, 5] and pose [N, 2], got "
                         f"{list(coord_weight.shape)} and {list(pose.shape)}")
    act = activation_code(activation)
    if impl == "ref":
        return upsample_conv_act_ref(x, weight, bias, activation, slope, scale, shift,
                                     coord_weight, pose).to(out_dtype or x.dtype)
    if impl != "triton":
        raise ValueError(f"impl must be 'triton' or 'ref', got '{impl}'")
    check_device(x, weight)
    scale, ssn, ssk = _per_sample(scale, n, k, "scale")
    shift, stn, stk = _per_sample(shift, n, k, "shift")
    if packed is None:
        packed = subpixel_weights(weight, x.dtype)
    if out is None:
        out = torch.empty(n, k, 2 * h, 2 * w, device=x.device, dtype=out_dtype or x.dtype)
    elif out.shape != (n, k, 2 * h, 2 * w):
        raise ValueError(f"out must be [{n}, {k}, {2 * h}, {2 * w}], got {list(out.shape)}")
    cw = coord_weight.reshape(k, COORD_FEATURES).contiguous() if coord_weight is not None else None
    pose = pose.contiguous() if pose is not None else None
    dummy = packed     # never read: its flag is off
    args = (x, packed, bias if bias is not None else dummy, cw if cw is not None else dummy,
            pose if pose is not None else dummy, scale if scale is not None else dummy,
            shift if shift is not None else dummy, out,
            n, h, w, k, c, *x.stride(), *out.stride(), ssn, ssk, stn, stk, float(slope))
    flags = {"HAS_BIAS": bias is not None, "HAS_COORD": cw is not None,
             "HAS_SCALE": scale is not None, "HAS_SHIFT": shift is not None, "ACT": act,
             "PRECISION": "ieee" if x.dtype == torch.float32 else "tf32",
             "UPCAST": interpreting() and x.dtype == torch.bfloat16}

    def grid(meta):
        return (triton.cdiv(n * h * w, meta["BLOCK_M"]), triton.cdiv(k, meta["BLOCK_N"]), 4)

    if config is None and interpreting():
        config = interpret_config(n * h * w, c, k)
    if config is None:
        _tuned_kernel[grid](*args, **flags)
    else:
        config = dict(config)
        launch = {key: config.pop(key) for key in ("num_warps", "num_stages") if key in config}
        _upsample_conv_act_kernel[grid](*args, **flags, **config, **launch)
    return out


def coordinate_grid(pose: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[N, 2] pose -> [N, 5, height, width] fp32: dx, dy, |dx|, |dy|, r of each pixel centre
    (coordinates in [-1, 1] across each axis) relative to the pose; the generator's
    ``coordinate_features``, the epilogue's reference."""
    from t2v_rt.model.generator import coordinate_features

    return coordinate_features(pose.float(), height, width)


def upsample_conv_act_ref(x, weight, bias=None, activation="leaky_relu", slope=0.2, scale=None,
                          shift=None, coord_weight=None, pose=None) -> torch.Tensor:
    """The unfused PyTorch formulation, computed in fp32 (inputs as given, upcast)."""
    up = F.interpolate(x.float(), scale_factor=2.0, mode="nearest")
    y = F.conv2d(up, weight.float(), None if bias is None else bias.float(), padding=1)
    if coord_weight is not None:
        k = weight.shape[0]
        grid = coordinate_grid(pose, *y.shape[-2:])
        y = y + F.conv2d(grid, coord_weight.float().reshape(k, COORD_FEATURES, 1, 1))
    if scale is not None:
        y = y * scale.float().reshape(-1, weight.shape[0], 1, 1)
    if shift is not None:
        y = y + shift.float().reshape(-1, weight.shape[0], 1, 1)
    return torch_activation(y, activation, slope)


def flops(n: int, c: int, h: int, w: int, k: int) -> dict[str, int]:
    """Multiply-adds x 2 of the block: the unfused formulation (3x3 on the upsampled
    tensor) and what the sub-pixel split executes (2x2 per parity)."""
    return {"useful": 2 * n * k * c * 9 * (2 * h) * (2 * w),
            "executed": 2 * n * k * c * 4 * (2 * h) * (2 * w)}
