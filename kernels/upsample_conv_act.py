"""Fused x2 up-convolution -> per-channel epilogue -> activation, in one pass.

Two convolutions that double the resolution, ``kind``:

* ``"upsample3x3"`` (default): nearest x2 upsample, then a 3x3 convolution with padding 1,
  weight [K, C, 3, 3] (``nn.Conv2d`` layout);
* ``"transpose4x4"``: ``ConvTranspose2d(C, K, kernel_size=4, stride=2, padding=1)``, weight
  [C, K, 4, 4] (``nn.ConvTranspose2d`` layout).

Both map x [N, C, H, W] to y [N, K, 2H, 2W], and the whole op is, in this order (every term
optional; each is a constexpr flag of the kernel, so a term that is off costs nothing)::

    acc = upconv(x * in_scale)              # in_scale [N, C] or [C]: StyleGAN2 modulation
    acc = acc * out_scale                   # [N, K] or [K]: StyleGAN2 demodulation
    acc = acc + noise * noise_weight        # noise [N|1, 1, 2H, 2W], noise_weight [K] or scalar
    acc = acc + bias                        # [K]
    acc = acc + coord(pose)                 # coord_weight [K, 5] . (dx, dy, |dx|, |dy|, r)
    acc = acc * scale                       # [N, K] or [K]: FiLM / AdaIN / folded BatchNorm
    acc = acc + shift                       # [N, K] or [K]
    acc = act(acc)                          # none, relu, leaky_relu(slope), tanh, sigmoid, silu
    acc = acc * gain                        # a number (StyleGAN2's activation gain, sqrt(2) ...)
    acc = clamp(acc, -clamp, clamp)         # a number (StyleGAN2's conv_clamp)
    y   = acc in the output dtype

The order of bias, coordinate term, scale and shift is the one the kernel always had, so
callers of those terms alone get the same results. An eval-mode ``BatchNorm2d`` after the
convolution is ``scale`` and ``shift`` (:func:`fold_batchnorm`). StyleGAN2's modulated
convolution (non-fused form: ``x * styles -> conv -> * dcoefs -> + noise * strength ->
bias_act(bias, act, gain, clamp)``) is in_scale, out_scale, noise, bias, act, gain, clamp.

Sub-pixel split. Output pixel (2i + py, 2j + px) of either convolution reads only the 2 x 2
input pixels rows {i - 1, i} (py = 0) or {i, i + 1} (py = 1), columns likewise, so the op is
four 2x2 convolutions of the low-resolution input, one per output parity, and the upsampled
tensor never exists. Only the 2x2 kernels differ between the kinds:

* upsample3x3 (:func:`subpixel_weights`): the 3x3 taps summed into 2 x 2 (kernel rows 0 | 1+2
  for py = 0, rows 0+1 | 2 for py = 1; columns likewise): 16 multiply-adds per output quad and
  channel pair instead of the 36 of the 3x3 on the upsampled tensor.
* transpose4x4 (:func:`subpixel_weights_transpose`): output row oy = 2 iy - 1 + ky, so py = 0
  takes (iy = i - 1, ky = 3) and (iy = i, ky = 1), py = 1 takes (iy = i, ky = 2) and
  (iy = i + 1, ky = 0); columns likewise. Each 4x4 tap is used once: the useful work equals
  the executed work.

Zero padding carries over exactly in both: a tap on an input row outside the frame reads zero.

Each parity is an implicit GEMM: [N*H*W low-res pixels] x [4 taps * C] @ [4 taps * C, K],
tiled BLOCK_M x BLOCK_N, reduced in BLOCK_K channel slices with ``tl.dot`` (tensor cores),
fp32 accumulation, fp16 / bf16 / fp32 inputs (fp32 as exact fp32 products, not TF32).
``in_scale`` is applied to each input tile as it is loaded (nearest upsampling and the
convolution are linear per input channel, so scaling before or after the upsample is the same):
the product is taken in fp32 and rounded once to the input dtype before ``tl.dot``, as an
unfused ``x * styles`` in that dtype would be (in fp32 that is the exact fp32 product; in fp16
one rounding of at most 2^-11 relative, in bf16 2^-8; a product beyond fp16's range saturates
to inf, as it would unfused), so fp16 / bf16 keep the tensor cores. The [N, C] scales are
read per tile from a small, cache-resident tensor. The epilogue runs on the fp32 accumulator
in registers, then one store in the output dtype. Any strides in and out (NCHW or
channels-last).

``impl="ref"`` is the PyTorch formulation (upsample + conv2d or conv_transpose2d, then every
term in the order above, all in fp32) that the tests and benchmarks compare against.
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
KINDS = ("upsample3x3", "transpose4x4")

# Rows (or columns) of the 3x3 kernel summed into each of the two taps of a parity:
# parity 0 reads input rows (i - 1, i) with kernel rows (0), (1 + 2); parity 1 reads
# (i, i + 1) with (0 + 1), (2).
_FOLD = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]],
                      [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)

# The 4x4 transposed-conv kernel row (or column) of each (parity, tap): parity 0 reads input
# rows (i - 1, i) with kernel rows (3, 1); parity 1 reads (i, i + 1) with (2, 0).
_TRANSPOSE_TAPS = ((3, 1), (2, 0))


def subpixel_weights(weight: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Conv2d weight [K, C, 3, 3] -> [4 parities (py, px), 4 taps (ty, tx), C, K]: the 2x2
    kernels of nearest-x2-upsample -> 3x3 conv (padding 1) for the four output parities.

    ``packed[2 py + px, 2 ty + tx, c, k]`` multiplies input pixel (i + py + ty - 1,
    j + px + tx - 1) of channel c into output pixel (2i + py, 2j + px) of channel k. Summed in
    float64 and rounded once to ``dtype`` (default: the weight's)."""
    fold = _FOLD.to(weight.device)
    w = torch.einsum("pay,qbx,kcyx->pqabck", fold, fold, weight.to(torch.float64))
    k, c = weight.shape[:2]
    return w.reshape(4, 4, c, k).contiguous().to(dtype or weight.dtype)


def subpixel_weights_transpose(weight_t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """ConvTranspose2d weight [C, K, 4, 4] (stride 2, padding 1) -> [4 parities (py, px),
    4 taps (ty, tx), C, K], the layout of :func:`subpixel_weights`.

    ``packed[2 py + px, 2 ty + tx, c, k] = weight_t[c, k, T[py][ty], T[px][tx]]`` with
    ``T = ((3, 1), (2, 0))``: input pixel (i + py + ty - 1, j + px + tx - 1) reaches output
    pixel (2i + py, 2j + px) through kernel tap (ky, kx), since oy = 2 iy - 1 + ky. A selection,
    no sums: exact in any ``dtype`` the weights fit (default: the weight's)."""
    taps = torch.tensor(_TRANSPOSE_TAPS, device=weight_t.device)
    w = weight_t[:, :, taps[:, :, None, None], taps[None, None, :, :]]     # [C, K, py, ty, px, tx]
    c, k = weight_t.shape[:2]
    return w.permute(2, 4, 3, 5, 0, 1).reshape(4, 4, c, k).contiguous().to(dtype or weight_t.dtype)


def pack_weights(weight: torch.Tensor, dtype: torch.dtype | None = None,
                 kind: str = "upsample3x3") -> torch.Tensor:
    """The packing of ``kind``: :func:`subpixel_weights` or :func:`subpixel_weights_transpose`."""
    if kind == "upsample3x3":
        return subpixel_weights(weight, dtype)
    if kind == "transpose4x4":
        return subpixel_weights_transpose(weight, dtype)
    raise ValueError(f"kind must be one of {', '.join(KINDS)}, got '{kind}'")


def fold_batchnorm(bn: torch.nn.BatchNorm2d, conv_bias: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode ``BatchNorm2d`` after a convolution with bias ``conv_bias`` [K] (or none),
    as the kernel's per-channel ``scale`` and ``shift`` [K] (fp32, computed in float64):

        bn(z + conv_bias) = z * scale + shift,   scale = gamma / sqrt(running_var + eps),
                                                 shift = beta + (conv_bias - running_mean) * scale

    so pass ``bias=None`` (the conv bias is inside ``shift``) and these as ``scale``/``shift``.
    Everything the kernel adds before ``scale`` (noise, the coordinate term) is then normalised
    too, as it would be if it were part of the BatchNorm's input. Without ``affine``, gamma = 1
    and beta = 0. A BatchNorm in training mode, or without running statistics, normalises
    with the batch's statistics and cannot be folded: ValueError."""
    if bn.training:
        raise ValueError("fold_batchnorm folds an eval-mode BatchNorm (running statistics); "
                         "call .eval() on the module first")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("a BatchNorm without running statistics (track_running_stats=False) "
                         "normalises with the batch's own and cannot be folded")
    mean = bn.running_mean.detach().to(torch.float64)
    inv = torch.rsqrt(bn.running_var.detach().to(torch.float64) + bn.eps)
    gamma = bn.weight.detach().to(torch.float64) if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().to(torch.float64) if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma * inv
    b = conv_bias.detach().to(torch.float64) if conv_bias is not None else torch.zeros_like(mean)
    if b.shape != mean.shape:
        raise ValueError(f"conv_bias must be [K] = [{mean.shape[0]}], got {list(b.shape)}")
    shift = beta + (b - mean) * scale
    return scale.float(), shift.float()


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
    x_ptr, w_ptr, bias_ptr, cw_ptr, pose_ptr, scale_ptr, shift_ptr,
    in_scale_ptr, out_scale_ptr, noise_ptr, noise_w_ptr, y_ptr,
    N, H, W, K, C: tl.constexpr,
    sxn, sxc, sxh, sxw,
    syn, syk, syh, syw,
    ssn, ssk, stn, stk,
    sin, sic, son, sok,
    snn, snh, snw, snk,
    slope, gain, clamp,
    HAS_BIAS: tl.constexpr, HAS_COORD: tl.constexpr, HAS_SCALE: tl.constexpr,
    HAS_SHIFT: tl.constexpr, HAS_IN_SCALE: tl.constexpr, HAS_OUT_SCALE: tl.constexpr,
    HAS_NOISE: tl.constexpr, HAS_GAIN: tl.constexpr, HAS_CLAMP: tl.constexpr,
    ACT: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
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
            if HAS_IN_SCALE:   # modulation: fp32 product, rounded once to the tile's dtype
                s_in = tl.load(in_scale_ptr + n[:, None] * sin + c[None, :] * sic,
                               mask=m_ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
                a = (a.to(tl.float32) * s_in).to(x_ptr.dtype.element_ty)
            b = tl.load(b_tap + c[:, None] * K + k[None, :], mask=c_ok[:, None] & k_ok[None, :], other=0.0)
            if UPCAST:     # the interpreter's tl.dot misreads bf16 operands (Triton 3.6)
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)

    # Epilogue, on the fp32 accumulator, in the order of the module docstring.
    oy = 2 * i + py
    ox = 2 * j + px
    mk_ok = m_ok[:, None] & k_ok[None, :]
    if HAS_OUT_SCALE:
        acc *= tl.load(out_scale_ptr + n[:, None] * son + k[None, :] * sok, mask=mk_ok, other=1.0).to(tl.float32)
    if HAS_NOISE:
        nz = tl.load(noise_ptr + n * snn + oy * snh + ox * snw, mask=m_ok, other=0.0).to(tl.float32)
        nw = tl.load(noise_w_ptr + k * snk, mask=k_ok, other=0.0).to(tl.float32)
        acc += nz[:, None] * nw[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + k, mask=k_ok, other=0.0).to(tl.float32)[None, :]
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
    if HAS_SCALE:
        acc *= tl.load(scale_ptr + n[:, None] * ssn + k[None, :] * ssk, mask=mk_ok, other=1.0).to(tl.float32)
    if HAS_SHIFT:
        acc += tl.load(shift_ptr + n[:, None] * stn + k[None, :] * stk, mask=mk_ok, other=0.0).to(tl.float32)
    acc = activate(acc, ACT, slope)
    if HAS_GAIN:
        acc *= gain
    if HAS_CLAMP:
        acc = tl.minimum(tl.maximum(acc, -clamp), clamp)

    y = y_ptr + n[:, None] * syn + k[None, :] * syk + (oy * syh + ox * syw)[:, None]
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=mk_ok)


# HAS_IN_SCALE changes the main loop (one more load per tile): tuned separately.
_tuned_kernel = autotune(_configs(), key=["N", "C", "H", "W", "K", "HAS_IN_SCALE"])(_upsample_conv_act_kernel)


def _per_sample(t: torch.Tensor | None, n: int, k: int, name: str, dims: str = "[N, K]"
                ) -> tuple[torch.Tensor | None, int, int]:
    """A [N, K], [1, K] or [K] per-sample (or shared) vector -> (tensor, stride over n,
    stride over k); ``dims`` names the shape in the error."""
    if t is None:
        return None, 0, 0
    if t.shape == (k,):
        return t, 0, t.stride(0)
    if t.shape == (1, k) and n != 1:
        return t, 0, t.stride(1)
    if t.shape == (n, k):
        return t, t.stride(0), t.stride(1)
    raise ValueError(f"{name} must be {dims} = [{n}, {k}] or [{k}], got {list(t.shape)}")


def _noise(noise: torch.Tensor | None, noise_weight: torch.Tensor | None, n: int, k: int,
           oh: int, ow: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """noise [N|1, 1, 2H, 2W], [N|1, 2H, 2W] or [2H, 2W] -> a [N, 2H, 2W] view (stride 0
    over a broadcast batch); noise_weight [K], [1] or [] -> a [K] view."""
    if (noise is None) != (noise_weight is None):
        raise ValueError("noise and noise_weight go together")
    if noise is None:
        return None, None
    shapes = {(n, 1, oh, ow), (1, 1, oh, ow), (n, oh, ow), (1, oh, ow), (oh, ow)}
    if tuple(noise.shape) not in shapes:
        raise ValueError(f"noise must be [N, 1, 2H, 2W] = [{n}, 1, {oh}, {ow}] (or [N, 2H, 2W], "
                         f"batch 1 broadcast), got {list(noise.shape)}")
    if noise.dim() == 4:
        noise = noise[:, 0]
    noise = noise.expand(n, oh, ow)
    if tuple(noise_weight.shape) not in {(k,), (1,), ()}:
        raise ValueError(f"noise_weight must be [K] = [{k}] or a scalar, got {list(noise_weight.shape)}")
    return noise, noise_weight.reshape(-1).expand(k)


def _check_weight(x: torch.Tensor, weight: torch.Tensor, kind: str) -> tuple[int, int, int, int, int]:
    """(N, C, H, W, K), or ValueError naming the shapes expected for ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got '{kind}'")
    if kind == "upsample3x3":
        ok = x.dim() == 4 and weight.dim() == 4 and weight.shape[2:] == (3, 3) and weight.shape[1] == x.shape[1]
        if not ok:
            raise ValueError(f"expected x [N, C, H, W] and weight [K, C, 3, 3], got {list(x.shape)} "
                             f"and {list(weight.shape)}")
        k = weight.shape[0]
    else:
        ok = x.dim() == 4 and weight.dim() == 4 and weight.shape[2:] == (4, 4) and weight.shape[0] == x.shape[1]
        if not ok:
            raise ValueError(f"expected x [N, C, H, W] and (ConvTranspose2d) weight [C, K, 4, 4], got "
                             f"{list(x.shape)} and {list(weight.shape)}")
        k = weight.shape[1]
    n, c, h, w = x.shape
    return n, c, h, w, k


def upsample_conv_act(
    x: torch.Tensor,                          # [N, C, H, W]
    weight: torch.Tensor,                     # [K, C, 3, 3] (upsample3x3) or [C, K, 4, 4] (transpose4x4)
    bias: torch.Tensor | None = None,         # [K]
    activation: str = "leaky_relu",
    slope: float = 0.2,
    scale: torch.Tensor | None = None,        # [N, K] or [K]
    shift: torch.Tensor | None = None,        # [N, K] or [K]
    coord_weight: torch.Tensor | None = None,  # [K, 5]
    pose: torch.Tensor | None = None,         # [N, 2]
    *,
    kind: str = "upsample3x3",                # or "transpose4x4"
    in_scale: torch.Tensor | None = None,     # [N, C] or [C]: modulation of the input
    out_scale: torch.Tensor | None = None,    # [N, K] or [K]: demodulation
    noise: torch.Tensor | None = None,        # [N|1, 1, 2H, 2W] (or [N|1, 2H, 2W]), any strides
    noise_weight: torch.Tensor | None = None,  # [K] or scalar
    gain: float = 1.0,                        # after the activation
    clamp: float | None = None,               # |y| <= clamp, after the gain
    packed: torch.Tensor | None = None,       # pack_weights(weight, x.dtype, kind), if cached
    out: torch.Tensor | None = None,          # [N, K, 2H, 2W], any strides
    out_dtype: torch.dtype | None = None,
    impl: str = "triton",
    config: dict | None = None,               # fixed launch config instead of the autotuner
) -> torch.Tensor:                            # [N, K, 2H, 2W]
    """The x2 up-convolution of ``kind`` and its epilogue, fused (the module docstring has the
    order of the terms)::

        y = clamp(act((((upconv(x * in_scale) * out_scale + noise * noise_weight + bias
                        + coord(pose)) * scale + shift)) * gain, -clamp, clamp)

    ``upconv`` is ``conv3x3(upsample_nearest_x2(x), padding=1)`` for ``kind="upsample3x3"``
    (weight [K, C, 3, 3]) or ``conv_transpose2d(x, stride=2, padding=1)`` for
    ``kind="transpose4x4"`` (weight [C, K, 4, 4]). ``packed`` must then be
    ``pack_weights(weight, x.dtype, kind)`` (:func:`subpixel_weights` or
    :func:`subpixel_weights_transpose`); it is packed on each call otherwise."""
    n, c, h, w, k = _check_weight(x, weight, kind)
    if (coord_weight is None) != (pose is None):
        raise ValueError("coord_weight and pose go together")
    if coord_weight is not None and (coord_weight.reshape(k, -1).shape != (k, COORD_FEATURES)
                                     or pose.shape != (n, 2)):
        raise ValueError(f"expected coord_weight [K, 5] and pose [N, 2], got "
                         f"{list(coord_weight.shape)} and {list(pose.shape)}")
    if bias is not None and bias.shape != (k,):
        raise ValueError(f"bias must be [K] = [{k}], got {list(bias.shape)}")
    act = activation_code(activation)
    scale, ssn, ssk = _per_sample(scale, n, k, "scale")
    shift, stn, stk = _per_sample(shift, n, k, "shift")
    in_scale, sin, sic = _per_sample(in_scale, n, c, "in_scale", "[N, C]")
    out_scale, son, sok = _per_sample(out_scale, n, k, "out_scale")
    noise, noise_weight = _noise(noise, noise_weight, n, k, 2 * h, 2 * w)
    if clamp is not None and not clamp >= 0:
        raise ValueError(f"clamp must be a number >= 0, got {clamp}")
    if impl == "ref":
        return upsample_conv_act_ref(x, weight, bias, activation, slope, scale, shift, coord_weight,
                                     pose, kind=kind, in_scale=in_scale, out_scale=out_scale,
                                     noise=noise, noise_weight=noise_weight, gain=gain,
                                     clamp=clamp).to(out_dtype or x.dtype)
    if impl != "triton":
        raise ValueError(f"impl must be 'triton' or 'ref', got '{impl}'")
    check_device(x, weight)
    if packed is None:
        packed = pack_weights(weight, x.dtype, kind)
    elif packed.shape != (4, 4, c, k) or packed.dtype != x.dtype or not packed.is_contiguous():
        raise ValueError(f"packed must be contiguous [4, 4, C, K] = [4, 4, {c}, {k}] in x's dtype "
                         f"{x.dtype}, got {list(packed.shape)} {packed.dtype}")
    if out is None:
        out = torch.empty(n, k, 2 * h, 2 * w, device=x.device, dtype=out_dtype or x.dtype)
    elif out.shape != (n, k, 2 * h, 2 * w):
        raise ValueError(f"out must be [{n}, {k}, {2 * h}, {2 * w}], got {list(out.shape)}")
    cw = coord_weight.reshape(k, COORD_FEATURES).contiguous() if coord_weight is not None else None
    pose = pose.contiguous() if pose is not None else None
    bias = bias.contiguous() if bias is not None else None
    snn, snh, snw = noise.stride() if noise is not None else (0, 0, 0)
    snk = noise_weight.stride(0) if noise_weight is not None else 0

    def given(t):
        return t if t is not None else packed     # never read: its flag is off

    args = (x, packed, given(bias), given(cw), given(pose), given(scale), given(shift),
            given(in_scale), given(out_scale), given(noise), given(noise_weight), out,
            n, h, w, k, c, *x.stride(), *out.stride(), ssn, ssk, stn, stk, sin, sic, son, sok,
            snn, snh, snw, snk, float(slope), float(gain), float(clamp if clamp is not None else 0.0))
    flags = {"HAS_BIAS": bias is not None, "HAS_COORD": cw is not None,
             "HAS_SCALE": scale is not None, "HAS_SHIFT": shift is not None,
             "HAS_IN_SCALE": in_scale is not None, "HAS_OUT_SCALE": out_scale is not None,
             "HAS_NOISE": noise is not None, "HAS_GAIN": float(gain) != 1.0,
             "HAS_CLAMP": clamp is not None, "ACT": act,
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
    relative to the pose, the epilogue's coordinate features (the reference of its math).

    Pixel centres are ``(i + 0.5) / size * 2 - 1`` along each axis (so in (-1, 1)),
    ``dx = cx - pose[:, 0]``, ``dy = cy - pose[:, 1]``, ``r = sqrt(dx^2 + dy^2 + 1e-8)``."""
    pose = pose.float()
    cx = (torch.arange(width, device=pose.device, dtype=pose.dtype) + 0.5) / width * 2 - 1
    cy = (torch.arange(height, device=pose.device, dtype=pose.dtype) + 0.5) / height * 2 - 1
    dx = cx.view(1, 1, width) - pose[:, 0, None, None]
    dy = cy.view(1, height, 1) - pose[:, 1, None, None]
    dx, dy = torch.broadcast_tensors(dx, dy)
    r = torch.sqrt(dx * dx + dy * dy + 1e-8)
    return torch.stack([dx, dy, dx.abs(), dy.abs(), r], dim=1)


def _rows(t: torch.Tensor, width: int) -> torch.Tensor:
    """A [N, X] or [X] vector (or [1, X]) as fp32 [N|1, X, 1, 1], for broadcasting."""
    return t.float().reshape(-1, width, 1, 1)


def upsample_conv_act_ref(x, weight, bias=None, activation="leaky_relu", slope=0.2, scale=None,
                          shift=None, coord_weight=None, pose=None, *, kind="upsample3x3",
                          in_scale=None, out_scale=None, noise=None, noise_weight=None,
                          gain=1.0, clamp=None) -> torch.Tensor:
    """The unfused PyTorch formulation, every term in fp32 (inputs as given, upcast), in the
    order of the module docstring; noise may be any shape that broadcasts to [N, 1, 2H, 2W]
    and noise_weight any that broadcasts to [K]."""
    n, c, h, w, k = _check_weight(x, weight, kind)
    xf = x.float()
    if in_scale is not None:
        xf = xf * _rows(in_scale, c)
    if kind == "upsample3x3":
        y = F.conv2d(F.interpolate(xf, scale_factor=2.0, mode="nearest"), weight.float(), padding=1)
    else:
        y = F.conv_transpose2d(xf, weight.float(), stride=2, padding=1)
    if out_scale is not None:
        y = y * _rows(out_scale, k)
    if noise is not None:
        nz = noise.float().reshape(-1, 1, 2 * h, 2 * w)
        y = y + nz * noise_weight.float().reshape(-1).expand(k).reshape(1, k, 1, 1)
    if bias is not None:
        y = y + _rows(bias, k)
    if coord_weight is not None:
        grid = coordinate_grid(pose, *y.shape[-2:])
        y = y + F.conv2d(grid, coord_weight.float().reshape(k, COORD_FEATURES, 1, 1))
    if scale is not None:
        y = y * _rows(scale, k)
    if shift is not None:
        y = y + _rows(shift, k)
    y = torch_activation(y, activation, slope)
    if gain != 1.0:
        y = y * float(gain)
    if clamp is not None:
        y = y.clamp(-float(clamp), float(clamp))
    return y


def flops(n: int, c: int, h: int, w: int, k: int, kind: str = "upsample3x3") -> dict[str, int]:
    """Multiply-adds x 2 of the op on x [n, c, h, w] -> [n, k, 2h, 2w]: the unfused
    formulation ("useful") and what the sub-pixel split executes (2x2 per parity).

    upsample3x3: 9 taps per output pixel and channel pair on the upsampled tensor, 4 executed.
    transpose4x4: every output pixel of a k4 s2 p1 transposed conv receives exactly 4 taps per
    input channel (2 of the 4 kernel rows times 2 of the 4 columns; the same 16 H W per channel
    pair as the scatter form, 16 taps per input pixel), so useful = executed. Both count the
    taps that land on the zero padding at the border, as a dense convolution computes them; the
    epilogue's few ops per output are not counted."""
    executed = 2 * n * k * c * 4 * (2 * h) * (2 * w)
    if kind == "upsample3x3":
        return {"useful": 2 * n * k * c * 9 * (2 * h) * (2 * w), "executed": executed}
    if kind == "transpose4x4":
        return {"useful": executed, "executed": executed}
    raise ValueError(f"kind must be one of {', '.join(KINDS)}, got '{kind}'")
