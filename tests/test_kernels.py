"""The fused Triton kernels against their PyTorch references (``impl="ref"``).

On a CPU-only machine these run under ``TRITON_INTERPRET=1`` (set by conftest), on small
shapes; on a GPU the same tests run the compiled kernels. Inputs are fresh random numbers,
outputs start poisoned (NaN, or 77 for uint8) so an element the kernel never writes fails.
The generic terms (ConvTranspose2d 4x4 s2 p1, modulation, demodulation, noise, gain, clamp,
BatchNorm folding) are in ``test_kernels_generic.py``. Nothing from ``t2v_rt`` is imported
here except ``t2v_rt.kernels``: the generator block's math is written out below.
Known interpreter gap: its ``tl.dot`` misreads bf16 operands (Triton 3.6), so under the
interpreter bf16 tiles are upcast to fp32 before the product: the bf16 tensor-core path
itself is checked only on a GPU.
"""

import pytest
import torch
import torch.nn.functional as F
from t2v_rt.kernels import (
    subpixel_weights,
    upsample_conv_act,
    upsample_conv_act_ref,
)
from t2v_rt.kernels._common import interpreting

pytestmark = pytest.mark.usefixtures("one_thread")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# (dtype, atol, rtol) of the fused result against the fp32 reference of the same inputs.
DTYPES = [(torch.float32, 1e-4, 1e-4), (torch.float16, 1e-2, 1e-2), (torch.bfloat16, 5e-2, 2e-2)]
# (N, C, H, W, K): odd and non-multiple-of-16 channels and sizes, batch 1 and several.
SHAPES = [(1, 3, 1, 1, 5), (2, 5, 3, 7, 19), (3, 16, 4, 4, 16), (1, 33, 5, 2, 17)]


def block_inputs(n, c, h, w, k, dtype):
    """Random x, weight, bias, per-sample scale/shift, coordinate weights and pose."""
    return {
        "x": torch.randn(n, c, h, w, device=DEVICE).to(dtype),
        "weight": (torch.randn(k, c, 3, 3, device=DEVICE) / (3 * c**0.5)).to(dtype),
        "bias": torch.randn(k, device=DEVICE),
        "scale": 1 + 0.5 * torch.randn(n, k, device=DEVICE),
        "shift": 0.5 * torch.randn(n, k, device=DEVICE),
        "coord_weight": torch.randn(k, 5, device=DEVICE),
        "pose": torch.rand(n, 2, device=DEVICE) * 2 - 1,
    }


def poisoned(shape, dtype, memory_format=torch.contiguous_format):
    return torch.full(shape, float("nan"), dtype=dtype, device=DEVICE).contiguous(memory_format=memory_format)


def check(got, want, atol, rtol):
    assert not torch.isnan(got).any(), f"unwritten elements at {torch.isnan(got).nonzero()[:5].tolist()}"
    torch.testing.assert_close(got.float(), want, atol=atol, rtol=rtol)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype,atol,rtol", DTYPES, ids=lambda v: str(v).replace("torch.", "") if isinstance(v, torch.dtype) else None)
def test_upsample_conv_act_matches_reference(shape, dtype, atol, rtol):
    n, _c, h, w, k = shape
    args = block_inputs(*shape, dtype)
    out = poisoned((n, k, 2 * h, 2 * w), dtype)
    got = upsample_conv_act(**args, activation="leaky_relu", slope=0.2, out=out)
    assert got.data_ptr() == out.data_ptr()
    check(got, upsample_conv_act_ref(**args, activation="leaky_relu", slope=0.2), atol, rtol)


@pytest.mark.parametrize("activation", ["none", "relu", "leaky_relu", "tanh", "sigmoid", "silu"])
def test_every_activation(activation):
    args = block_inputs(2, 5, 3, 4, 7, torch.float32)
    got = upsample_conv_act(**args, activation=activation, slope=0.1)
    check(got, upsample_conv_act_ref(**args, activation=activation, slope=0.1), 1e-5, 1e-4)


def test_large_inputs_saturate_tanh_sigmoid_and_silu_without_overflow():
    args = block_inputs(1, 4, 3, 3, 5, torch.float32)
    args["shift"] = args["shift"] * 1e4           # pre-activations of +-1e4: exp would overflow
    for activation in ("tanh", "sigmoid", "silu"):
        got = upsample_conv_act(**args, activation=activation)
        check(got, upsample_conv_act_ref(**args, activation=activation), 1e-6, 1e-5)


def test_optional_epilogue_terms_and_per_channel_scale():
    n, c, h, w, k = 2, 6, 3, 5, 9
    a = block_inputs(n, c, h, w, k, torch.float32)
    plain = upsample_conv_act(a["x"], a["weight"], activation="none")
    check(plain, F.conv2d(F.interpolate(a["x"], scale_factor=2.0), a["weight"], padding=1), 1e-5, 1e-4)
    folded = upsample_conv_act(a["x"], a["weight"], a["bias"], "relu", scale=a["scale"][0], shift=a["shift"][0])
    want = upsample_conv_act_ref(a["x"], a["weight"], a["bias"], "relu", scale=a["scale"][0], shift=a["shift"][0])
    check(folded, want, 1e-5, 1e-4)


@pytest.mark.parametrize("config", [{"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16},
                                    {"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 32, "num_warps": 4}],
                         ids=["16x16x16", "64x32x32"])
def test_tile_shapes_and_channels_last(config):
    """Tiles smaller and larger than the problem; channels-last in and out."""
    n, c, h, w, k = 3, 20, 5, 6, 18
    args = block_inputs(n, c, h, w, k, torch.float16)
    args["x"] = args["x"].contiguous(memory_format=torch.channels_last)
    out = poisoned((n, k, 2 * h, 2 * w), torch.float16, torch.channels_last)
    got = upsample_conv_act(**args, out=out, config=config)
    check(got, upsample_conv_act_ref(**args), 1e-2, 1e-2)


def test_subpixel_split_is_the_upsampled_convolution():
    """The identity the kernel rests on, in float64 and plain PyTorch: the four 2x2 kernels
    on the low-resolution input give exactly the 3x3 kernel on the x2 nearest upsample."""
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    weight = torch.randn(3, 4, 3, 3, dtype=torch.float64)
    want = F.conv2d(F.interpolate(x, scale_factor=2.0), weight, padding=1)
    packed = subpixel_weights(weight)                      # [4 parities, 4 taps, C, K]
    got = torch.empty_like(want)
    xp = F.pad(x, (1, 1, 1, 1))
    for parity in range(4):
        py, px = divmod(parity, 2)
        kernel = packed[parity].reshape(2, 2, 4, 3).permute(3, 2, 0, 1)    # [K, C, 2, 2]
        window = xp[:, :, py : py + 6, px : px + 7]                        # rows i-1+py .. i+py
        got[:, :, py::2, px::2] = F.conv2d(window, kernel)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def coordinate_features(pose, size, width=None):
    """The model's CoordConv input, written out here (the model is not imported): dx, dy,
    |dx|, |dy|, r of each pixel centre relative to the pose."""
    width = width or size
    cx = (torch.arange(width, device=pose.device, dtype=pose.dtype) + 0.5) / width * 2 - 1
    cy = (torch.arange(size, device=pose.device, dtype=pose.dtype) + 0.5) / size * 2 - 1
    dx = cx.view(1, 1, width) - pose[:, 0, None, None]
    dy = cy.view(1, size, 1) - pose[:, 1, None, None]
    dx, dy = torch.broadcast_tensors(dx, dy)
    r = torch.sqrt(dx * dx + dy * dy + 1e-8)
    return torch.stack([dx, dy, dx.abs(), dy.abs(), r], dim=1)


class UpConvAct(torch.nn.Module):
    """A generator block as plain PyTorch modules: leaky_relu((conv(up(x)) + coord(features))
    * a + b), the math of the model's ``UpConvAct``, independent of the kernel's reference."""

    def __init__(self, c_in, c_out, slope):
        super().__init__()
        self.conv = torch.nn.Conv2d(c_in, c_out, 3, padding=1)
        self.coord = torch.nn.Conv2d(5, c_out, 1, bias=False)
        self.slope = slope

    def forward(self, x, a, b, pose):
        y = self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        y = y + self.coord(coordinate_features(pose, y.shape[-2], y.shape[-1]))
        return F.leaky_relu(y * a[:, :, None, None] + b[:, :, None, None], self.slope)


def test_the_generator_block_is_the_kernel():
    """A generator block (``UpConvAct``'s math, as PyTorch modules) and the kernel with its
    weights agree."""
    block = UpConvAct(12, 10, 0.2).to(DEVICE)
    n = 3
    x = torch.randn(n, 12, 4, 6, device=DEVICE)
    a, b = 1 + 0.3 * torch.randn(n, 10, device=DEVICE), 0.3 * torch.randn(n, 10, device=DEVICE)
    pose = torch.rand(n, 2, device=DEVICE) * 2 - 1
    with torch.no_grad():
        want = block(x, a, b, pose)
    got = upsample_conv_act(x, block.conv.weight.detach(), block.conv.bias.detach(), "leaky_relu", 0.2,
                            a, b, block.coord.weight.detach().reshape(10, 5), pose)
    check(got, want, 1e-5, 1e-4)


def test_bad_shapes_say_what_was_expected():
    x = torch.randn(1, 4, 3, 3, device=DEVICE)
    with pytest.raises(ValueError, match=r"weight \[K, C, 3, 3\]"):
        upsample_conv_act(x, torch.randn(5, 3, 3, 3, device=DEVICE))
    with pytest.raises(ValueError, match="scale must be"):
        upsample_conv_act(x, torch.randn(5, 4, 3, 3, device=DEVICE), scale=torch.randn(2, 5, device=DEVICE))
    with pytest.raises(ValueError, match="activation must be one of"):
        upsample_conv_act(x, torch.randn(5, 4, 3, 3, device=DEVICE), activation="gelu")
    with pytest.raises(ValueError, match="coord_weight and pose go together"):
        upsample_conv_act(x, torch.randn(5, 4, 3, 3, device=DEVICE), coord_weight=torch.randn(5, 5))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal; this machine has a GPU")
def test_cpu_tensors_without_the_interpreter_are_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not interpreting()
    with pytest.raises(RuntimeError, match="need CUDA tensors"):
        upsample_conv_act(torch.randn(1, 2, 2, 2), torch.randn(3, 2, 3, 3))
