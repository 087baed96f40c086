"""The fused up-convolution kernel as a fusion target for any generator: both kinds
(nearest x2 upsample -> 3x3 conv, ConvTranspose2d 4x4 s2 p1) and every epilogue term
(modulation, demodulation, noise, bias, coordinate term, scale/shift, activation, gain, clamp),
against PyTorch.

As in ``test_kernels.py``: under ``TRITON_INTERPRET=1`` on a CPU-only machine (conftest), small
shapes, fresh random inputs (never zeros), outputs poisoned with NaN so an element the kernel
never writes fails. The reference ``upsample_conv_act_ref`` is itself checked against
independent PyTorch formulations (``nn.ConvTranspose2d``, a StyleGAN2 modulated convolution,
``nn.BatchNorm2d``), so the kernel is not only compared with its own spec. Nothing from
``t2v_rt`` is imported except ``t2v_rt.kernels``.
"""

import ast
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from t2v_rt.kernels import (
    fold_batchnorm,
    pack_weights,
    subpixel_weights,
    subpixel_weights_transpose,
    upsample_conv_act,
    upsample_conv_act_ref,
)
from t2v_rt.kernels.upsample_conv_act import flops

pytestmark = pytest.mark.usefixtures("one_thread")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
KERNELS = Path(__file__).resolve().parents[1] / "kernels"
# (dtype, atol, rtol) of the fused result against the fp32 reference of the same inputs.
DTYPES = [(torch.float32, 1e-4, 1e-4), (torch.float16, 1e-2, 1e-2), (torch.bfloat16, 5e-2, 2e-2)]
DTYPE_IDS = ["fp32", "fp16", "bf16"]
KINDS = ["upsample3x3", "transpose4x4"]
# (N, C, H, W, K): odd and non-multiple-of-16 channels and sizes, batch 1 and several.
SHAPES = [(1, 3, 1, 2, 5), (3, 7, 3, 5, 19), (2, 33, 4, 3, 17)]


def shape_id(s):
    return "x".join(map(str, s))


def weight_of(kind, c, k, dtype=torch.float32, dev=DEVICE):
    """Random weights of ``kind`` (Conv2d [K, C, 3, 3] or ConvTranspose2d [C, K, 4, 4]),
    scaled so the outputs stay O(1)."""
    if kind == "upsample3x3":
        return (torch.randn(k, c, 3, 3, device=dev) / (3 * c**0.5)).to(dtype)
    return (torch.randn(c, k, 4, 4, device=dev) / (2 * c**0.5)).to(dtype)


def all_terms(n, c, h, w, k, kind, dtype):
    """Every input of the op, random and non-zero."""
    return {
        "x": torch.randn(n, c, h, w, device=DEVICE).to(dtype),
        "weight": weight_of(kind, c, k, dtype),
        "bias": torch.randn(k, device=DEVICE),
        "scale": 1 + 0.5 * torch.randn(n, k, device=DEVICE),
        "shift": 0.5 * torch.randn(n, k, device=DEVICE),
        "coord_weight": torch.randn(k, 5, device=DEVICE),
        "pose": torch.rand(n, 2, device=DEVICE) * 2 - 1,
        "in_scale": 0.25 + 1.5 * torch.rand(n, c, device=DEVICE),
        "out_scale": 0.5 + torch.rand(n, k, device=DEVICE),
        "noise": torch.randn(n, 1, 2 * h, 2 * w, device=DEVICE),
        "noise_weight": 0.5 * torch.randn(k, device=DEVICE),
        "gain": math.sqrt(2),
        "clamp": 1.5,
        "kind": kind,
    }


def poisoned(shape, dtype, memory_format=torch.contiguous_format):
    return torch.full(shape, float("nan"), dtype=dtype, device=DEVICE).contiguous(memory_format=memory_format)


def check(got, want, atol, rtol):
    assert not torch.isnan(got).any(), f"unwritten elements at {torch.isnan(got).nonzero()[:5].tolist()}"
    torch.testing.assert_close(got.float(), want, atol=atol, rtol=rtol)


def run(args, activation="leaky_relu", slope=0.2, dtype=torch.float32, **kw):
    """The kernel into a poisoned output, and the reference of the same arguments."""
    n, _c, h, w = args["x"].shape
    k = args["weight"].shape[0 if args.get("kind", "upsample3x3") == "upsample3x3" else 1]
    out = poisoned((n, k, 2 * h, 2 * w), dtype)
    got = upsample_conv_act(**args, activation=activation, slope=slope, out=out, **kw)
    assert got.data_ptr() == out.data_ptr()
    return got, upsample_conv_act_ref(**args, activation=activation, slope=slope)


# ---------------------------------------------------------------------------------------------
# The transposed convolution through the sub-pixel kernel


@pytest.mark.parametrize("c,k,h,w", [(4, 3, 5, 6), (1, 2, 1, 1), (3, 5, 2, 7)])
def test_transpose_split_is_the_transposed_convolution(c, k, h, w):
    """The packing's identity, in float64 and plain PyTorch: the four 2x2 kernels of
    ``subpixel_weights_transpose`` on the low-resolution input (rows i - 1 + py, i + py) are
    exactly ConvTranspose2d(4, stride 2, padding 1)."""
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    weight_t = torch.randn(c, k, 4, 4, dtype=torch.float64)
    want = F.conv_transpose2d(x, weight_t, stride=2, padding=1)
    assert want.shape == (2, k, 2 * h, 2 * w)
    packed = subpixel_weights_transpose(weight_t)              # [4 parities, 4 taps, C, K]
    assert packed.shape == (4, 4, c, k) and packed.dtype == torch.float64
    got = torch.full_like(want, float("nan"))
    xp = F.pad(x, (1, 1, 1, 1))
    for parity in range(4):
        py, px = divmod(parity, 2)
        kernel = packed[parity].reshape(2, 2, c, k).permute(3, 2, 0, 1)        # [K, C, 2, 2]
        got[:, :, py::2, px::2] = F.conv2d(xp[:, :, py : py + h + 1, px : px + w + 1], kernel)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_transpose_packing_selects_each_tap_once():
    """Every one of the 16 taps lands in exactly one (parity, tap) slot, unchanged (no sums, so
    exact in any dtype), and the packing of ``kind`` dispatches to the right function."""
    weight_t = torch.randn(3, 2, 4, 4)
    packed = subpixel_weights_transpose(weight_t, torch.float16)
    assert packed.dtype == torch.float16
    assert torch.equal(packed.float(), subpixel_weights_transpose(weight_t).half().float())
    flat = packed.float().permute(2, 3, 0, 1).reshape(3, 2, 16)
    assert torch.equal(flat.sort(dim=-1).values, weight_t.half().float().reshape(3, 2, 16).sort(dim=-1).values)
    assert torch.equal(pack_weights(weight_t, None, "transpose4x4"), subpixel_weights_transpose(weight_t))
    w3 = torch.randn(2, 3, 3, 3)
    assert torch.equal(pack_weights(w3, torch.float32), subpixel_weights(w3, torch.float32))


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype,atol,rtol", DTYPES, ids=DTYPE_IDS)
def test_transpose_kind_matches_conv_transpose2d(shape, dtype, atol, rtol):
    n, c, h, w, k = shape
    conv = torch.nn.ConvTranspose2d(c, k, 4, stride=2, padding=1).to(DEVICE)
    x = torch.randn(n, c, h, w, device=DEVICE).to(dtype)
    weight = conv.weight.detach().to(dtype)
    with torch.no_grad():
        conv.weight.copy_(weight.float())          # the module on the same (rounded) weights
        want = F.leaky_relu(conv(x.float()), 0.2)
    out = poisoned((n, k, 2 * h, 2 * w), dtype)
    got = upsample_conv_act(x, weight, conv.bias.detach(), "leaky_relu", 0.2, out=out,
                            kind="transpose4x4", packed=subpixel_weights_transpose(weight, dtype))
    check(got, want, atol, rtol)
    check(upsample_conv_act_ref(x, weight, conv.bias.detach(), kind="transpose4x4"), want, 1e-5, 1e-5)


# ---------------------------------------------------------------------------------------------
# The epilogue terms


def test_reference_is_the_documented_order():
    """``upsample_conv_act_ref`` with every term is the documented expression written out by
    hand, for both kinds: clamp(act((conv(x * s_in) * s_out + noise * nw + bias + coord) *
    scale + shift) * gain)."""
    n, c, h, w, k = 2, 3, 3, 4, 5
    for kind in KINDS:
        a = all_terms(n, c, h, w, k, kind, torch.float32)
        xs = a["x"] * a["in_scale"][:, :, None, None]
        if kind == "upsample3x3":
            y = F.conv2d(F.interpolate(xs, scale_factor=2.0), a["weight"], padding=1)
        else:
            y = F.conv_transpose2d(xs, a["weight"], stride=2, padding=1)
        y = y * a["out_scale"][:, :, None, None] + a["noise"] * a["noise_weight"][None, :, None, None]
        y = y + a["bias"][None, :, None, None]
        cy = (torch.arange(2 * h) + 0.5) / (2 * h) * 2 - 1
        cx = (torch.arange(2 * w) + 0.5) / (2 * w) * 2 - 1
        dy = cy[None, :, None] - a["pose"][:, 1, None, None]
        dx = cx[None, None, :] - a["pose"][:, 0, None, None]
        dx, dy = torch.broadcast_tensors(dx, dy)
        feats = [dx, dy, dx.abs(), dy.abs(), torch.sqrt(dx * dx + dy * dy + 1e-8)]
        y = y + sum(f[:, None] * a["coord_weight"][None, :, i, None, None] for i, f in enumerate(feats))
        y = y * a["scale"][:, :, None, None] + a["shift"][:, :, None, None]
        y = (F.silu(y) * a["gain"]).clamp(-a["clamp"], a["clamp"])
        torch.testing.assert_close(upsample_conv_act_ref(**a, activation="silu"), y, atol=1e-5, rtol=1e-5)


TERMS = {
    "in_scale": lambda a: {"in_scale": a["in_scale"]},
    "in_scale_per_channel": lambda a: {"in_scale": a["in_scale"][0]},
    "out_scale": lambda a: {"out_scale": a["out_scale"]},
    "out_scale_per_channel": lambda a: {"out_scale": a["out_scale"][0]},
    "noise": lambda a: {"noise": a["noise"], "noise_weight": a["noise_weight"]},
    "gain": lambda a: {"gain": a["gain"], "activation": "tanh"},   # not homogeneous: order shows
    "clamp": lambda a: {"clamp": 0.3},
    "silu": lambda a: {"activation": "silu"},
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("term", list(TERMS))
def test_each_new_term_alone(term, kind):
    """Each new term on its own (with a bias, so the old path is there too), fp32."""
    n, c, h, w, k = 2, 5, 3, 4, 7
    a = all_terms(n, c, h, w, k, kind, torch.float32)
    args = {"x": a["x"], "weight": a["weight"], "bias": a["bias"], "kind": kind, **TERMS[term](a)}
    activation = args.pop("activation", "leaky_relu")
    got, want = run(args, activation)
    check(got, want, 1e-4, 1e-4)
    # The term does something: the result differs from the op without it.
    plain = upsample_conv_act_ref(a["x"], a["weight"], a["bias"], kind=kind)
    assert (want - plain).abs().max() > 1e-3
    if term == "clamp":
        assert want.abs().max() <= 0.3 and (want.abs() == 0.3).any()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype,atol,rtol", DTYPES, ids=DTYPE_IDS)
def test_every_term_together(shape, dtype, atol, rtol, kind):
    args = all_terms(*shape, kind, dtype)
    got, want = run(args, "leaky_relu", 0.2, dtype)
    assert (want.abs() == args["clamp"]).any()            # the clamp is reached somewhere
    check(got, want, atol, rtol)


@pytest.mark.parametrize("kind", KINDS)
def test_every_term_channels_last_and_small_tiles(kind):
    """Channels-last in and out, noise a strided slice of a bigger map, and tiles smaller
    than the problem in every dimension (M, N and K masks)."""
    n, c, h, w, k = 3, 20, 3, 5, 18
    args = all_terms(n, c, h, w, k, kind, torch.float16)
    args["x"] = args["x"].contiguous(memory_format=torch.channels_last)
    args["noise"] = torch.randn(n, 2, 2 * h + 3, 2 * w + 1, device=DEVICE)[:, 1:, 2:-1, :-1]
    assert not args["noise"].is_contiguous()
    out = poisoned((n, k, 2 * h, 2 * w), torch.float16, torch.channels_last)
    got = upsample_conv_act(**args, activation="silu", out=out,
                            config={"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16})
    assert got.data_ptr() == out.data_ptr() and got.is_contiguous(memory_format=torch.channels_last)
    check(got, upsample_conv_act_ref(**args, activation="silu"), 1e-2, 1e-2)


@pytest.mark.parametrize("kind", KINDS)
def test_noise_shapes_and_scalar_strength(kind):
    """Noise [N, 2H, 2W], or one map for the whole batch ([1, 1, 2H, 2W], [2H, 2W]); the
    strength a scalar (StyleGAN2's noise_strength) or [1]; scale a shared [1, K] row."""
    n, c, h, w, k = 3, 4, 2, 3, 6
    a = all_terms(n, c, h, w, k, kind, torch.float32)
    base = {"x": a["x"], "weight": a["weight"], "bias": a["bias"], "kind": kind}
    maps = [a["noise"][:, 0], a["noise"][:1], a["noise"][0, 0]]
    strengths = [torch.tensor(0.7, device=DEVICE), torch.tensor([-0.4], device=DEVICE), a["noise_weight"]]
    for noise, strength in zip(maps, strengths):
        got, want = run({**base, "noise": noise, "noise_weight": strength, "scale": a["scale"][:1]})
        check(got, want, 1e-4, 1e-4)
    # The broadcast map really is one map: samples differ only through x.
    same_x = {**base, "x": a["x"][:1].expand(n, -1, -1, -1).contiguous()}
    got, _ = run({**same_x, "noise": a["noise"][:1], "noise_weight": a["noise_weight"]})
    torch.testing.assert_close(got[1:], got[:1].expand(n - 1, -1, -1, -1), atol=0, rtol=0)


def test_modulated_convolution_is_stylegan2():
    """in_scale and out_scale are StyleGAN2's modulation and demodulation: the kernel equals
    the per-sample modulated, demodulated weights applied as a grouped convolution (the
    ``fused_modconv`` form), then noise, bias, lrelu and the sqrt(2) gain (``bias_act``)."""
    n, c, h, w, k = 3, 6, 4, 3, 5
    for kind in KINDS:
        a = all_terms(n, c, h, w, k, kind, torch.float32)
        styles, weight = a["in_scale"], a["weight"]
        if kind == "upsample3x3":
            wk = weight[None] * styles[:, None, :, None, None]                      # [N, K, C, 3, 3]
            dcoefs = (wk.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()               # [N, K]
            wk = wk * dcoefs[:, :, None, None, None]
            up = F.interpolate(a["x"], scale_factor=2.0).reshape(1, n * c, 2 * h, 2 * w)
            y = F.conv2d(up, wk.reshape(n * k, c, 3, 3), padding=1, groups=n)
        else:
            wk = weight[None] * styles[:, :, None, None, None]                      # [N, C, K, 4, 4]
            dcoefs = (wk.square().sum(dim=[1, 3, 4]) + 1e-8).rsqrt()               # [N, K]
            wk = wk * dcoefs[:, None, :, None, None]
            y = F.conv_transpose2d(a["x"].reshape(1, n * c, h, w), wk.reshape(n * c, k, 4, 4),
                                   stride=2, padding=1, groups=n)
        y = y.reshape(n, k, 2 * h, 2 * w) + a["noise"] * a["noise_weight"][None, :, None, None]
        want = F.leaky_relu(y + a["bias"][None, :, None, None], 0.2) * math.sqrt(2)
        out = poisoned((n, k, 2 * h, 2 * w), torch.float32)
        got = upsample_conv_act(a["x"], weight, a["bias"], "leaky_relu", 0.2, kind=kind, out=out,
                                in_scale=styles, out_scale=dcoefs, noise=a["noise"],
                                noise_weight=a["noise_weight"], gain=math.sqrt(2))
        check(got, want, 1e-4, 1e-4)


@pytest.mark.parametrize("affine", [True, False])
def test_fold_batchnorm_is_eval_batchnorm(affine):
    """conv (with bias) -> BatchNorm2d.eval() -> ReLU, as the kernel with the folded scale and
    shift and no bias; for both kinds."""
    n, c, h, w, k = 2, 5, 3, 4, 6
    bn = torch.nn.BatchNorm2d(k, eps=1e-3, affine=affine).to(DEVICE)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(k))
        bn.running_var.copy_(0.2 + torch.rand(k))
        if affine:
            bn.weight.copy_(1 + 0.5 * torch.randn(k))
            bn.bias.copy_(torch.randn(k))
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(bn, None)                      # still in training mode
    bn.eval()
    for kind in KINDS:
        conv = (torch.nn.Conv2d(c, k, 3, padding=1) if kind == "upsample3x3"
                else torch.nn.ConvTranspose2d(c, k, 4, stride=2, padding=1)).to(DEVICE)
        x = torch.randn(n, c, h, w, device=DEVICE)
        with torch.no_grad():
            z = conv(F.interpolate(x, scale_factor=2.0)) if kind == "upsample3x3" else conv(x)
            want = torch.relu(bn(z))
        scale, shift = fold_batchnorm(bn, conv.bias)
        assert scale.shape == shift.shape == (k,) and scale.dtype == torch.float32
        out = poisoned((n, k, 2 * h, 2 * w), torch.float32)
        got = upsample_conv_act(x, conv.weight.detach(), None, "relu", scale=scale, shift=shift,
                                kind=kind, out=out)
        check(got, want, 1e-4, 1e-4)
    no_stats = torch.nn.BatchNorm2d(k, track_running_stats=False).eval()
    with pytest.raises(ValueError, match="running statistics"):
        fold_batchnorm(no_stats, None)


def test_large_inputs_silu_without_overflow_in_both_kinds():
    """Pre-activations of +-1e4 (exp(1e4) overflows fp32): SiLU gives x or -0, never inf/NaN."""
    for kind in KINDS:
        a = all_terms(1, 4, 2, 3, 5, kind, torch.float32)
        shift = 1e4 * torch.randn(5, device=DEVICE).sign()
        got, want = run({"x": a["x"], "weight": a["weight"], "shift": shift, "kind": kind}, "silu")
        assert torch.isfinite(got).all()
        check(got, want, 1e-6, 1e-5)


def test_backend_call_is_unchanged():
    """The ``triton`` backend's positional call (bias, activation, slope, scale, shift,
    coord_weight, pose, packed=...) gives what it gave before: the default kind, no new term."""
    n, c, h, w, k = 2, 6, 3, 3, 8
    a = all_terms(n, c, h, w, k, "upsample3x3", torch.float16)
    packed = subpixel_weights(a["weight"], torch.float16)
    got = upsample_conv_act(a["x"], a["weight"], a["bias"], "leaky_relu", 0.2, a["scale"], a["shift"],
                            a["coord_weight"], a["pose"], packed=packed)
    want = upsample_conv_act_ref(a["x"], a["weight"], a["bias"], "leaky_relu", 0.2, a["scale"],
                                 a["shift"], a["coord_weight"], a["pose"])
    check(got, want, 1e-2, 1e-2)


def test_impl_ref_takes_every_term():
    a = all_terms(2, 3, 2, 2, 4, "transpose4x4", torch.float16)
    got = upsample_conv_act(**a, activation="tanh", impl="ref")
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), upsample_conv_act_ref(**a, activation="tanh"), atol=1e-3, rtol=1e-3)


def test_bad_arguments_say_what_was_expected():
    x = torch.randn(2, 4, 3, 3, device=DEVICE)
    wt = torch.randn(4, 5, 4, 4, device=DEVICE)
    with pytest.raises(ValueError, match=r"weight \[C, K, 4, 4\]"):
        upsample_conv_act(x, torch.randn(5, 4, 3, 3, device=DEVICE), kind="transpose4x4")
    with pytest.raises(ValueError, match=r"weight \[K, C, 3, 3\]"):
        upsample_conv_act(x, wt)
    with pytest.raises(ValueError, match="kind must be one of"):
        upsample_conv_act(x, wt, kind="transpose3x3")
    with pytest.raises(ValueError, match=r"in_scale must be \[N, C\]"):
        upsample_conv_act(x, wt, kind="transpose4x4", in_scale=torch.rand(2, 5, device=DEVICE))
    with pytest.raises(ValueError, match="out_scale must be"):
        upsample_conv_act(x, wt, kind="transpose4x4", out_scale=torch.rand(2, 4, device=DEVICE))
    with pytest.raises(ValueError, match="noise and noise_weight go together"):
        upsample_conv_act(x, wt, kind="transpose4x4", noise=torch.randn(2, 1, 6, 6, device=DEVICE))
    with pytest.raises(ValueError, match=r"noise must be \[N, 1, 2H, 2W\]"):
        upsample_conv_act(x, wt, kind="transpose4x4", noise=torch.randn(2, 1, 3, 3, device=DEVICE),
                          noise_weight=torch.rand(5, device=DEVICE))
    with pytest.raises(ValueError, match="noise_weight must be"):
        upsample_conv_act(x, wt, kind="transpose4x4", noise=torch.randn(2, 1, 6, 6, device=DEVICE),
                          noise_weight=torch.rand(4, device=DEVICE))
    with pytest.raises(ValueError, match="packed must be"):     # the 3x3 packing for a transpose
        upsample_conv_act(x, wt, kind="transpose4x4", packed=torch.randn(4, 4, 5, 4, device=DEVICE))
    with pytest.raises(ValueError, match="clamp must be"):
        upsample_conv_act(x, wt, kind="transpose4x4", clamp=-1.0)


def test_flops_count_both_kinds():
    assert flops(2, 3, 4, 5, 6) == {"useful": 2 * 2 * 6 * 3 * 9 * 8 * 10, "executed": 2 * 2 * 6 * 3 * 4 * 8 * 10}
    t = flops(2, 3, 4, 5, 6, "transpose4x4")
    assert t["useful"] == t["executed"] == 2 * 2 * 6 * 3 * 4 * 8 * 10
    # Counting directly, padding taps included as in the 3x3 count (9 per output pixel): each
    # output row oy is reached by the kernel rows ky with oy + 1 - ky even (iy = (oy + 1 - ky) / 2),
    # 2 of the 4; and the scatter form (each input pixel times 16 taps) gives the same total.
    h, w = 4, 5
    rows = sum(1 for oy in range(2 * h) for ky in range(4) if (oy + 1 - ky) % 2 == 0)
    cols = sum(1 for ox in range(2 * w) for kx in range(4) if (ox + 1 - kx) % 2 == 0)
    assert t["useful"] == 2 * 2 * 6 * 3 * rows * cols == 2 * 2 * 6 * 3 * 16 * h * w


def test_kernels_import_no_model_code():
    """``kernels/*.py`` import nothing from ``t2v_rt`` except ``t2v_rt.kernels`` (statically,
    every import statement anywhere in the file, and importlib / __import__ calls with a
    literal name): the kernels carry their own references."""
    files = sorted(KERNELS.glob("*.py"))
    assert any(f.name == "upsample_conv_act.py" for f in files)

    def allowed(name):
        return not (name == "t2v_rt" or name.startswith("t2v_rt.")) or name == "t2v_rt.kernels" \
            or name.startswith("t2v_rt.kernels.")

    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{path.name}:{node.lineno}: relative import above the package"
                names = [node.module or ""] if node.level == 0 else []
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                func = node.func
                fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if fname in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                    names = [node.args[0].value]
            for name in names:
                assert allowed(name), f"{path.name}:{node.lineno} imports {name}"
