"""The fusion pass (``t2v_rt.backends.fusion``): each pattern of the issue fused and compared with
eager PyTorch on fresh inputs (another batch size than the one traced), the negative cases
left in PyTorch with their reason, the load-time check refusing a wrong kernel with the
numbers, and every registered architecture's tiny preset fused and matching the torch backend.

Without a GPU the kernels run under Triton's interpreter (conftest sets TRITON_INTERPRET=1), in
fp32: small shapes only.
"""

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from t2v_rt.backends.fusion import FusedGenerator, fuse, fuse_module, plan, sample_inputs, verify
from t2v_rt.backends.torch_backend import TorchBackend
from t2v_rt.backends.triton_backend import TritonBackend
from t2v_rt.errors import CompileError
from t2v_rt.generators.io import init_generator
from t2v_rt.generators.registry import entries

pytestmark = pytest.mark.usefixtures("one_thread")

GPU = torch.cuda.is_available()
DEV = "cuda" if GPU else "cpu"
ATOL = 1e-4


# --- synthetic blocks, one per pattern --------------------------------------------------------


class UpConvAct(nn.Module):
    """nearest x2 -> 3x3 conv (+bias) -> an activation, written in one of several forms."""

    def __init__(self, cin=4, cout=6, act="leaky_relu"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.act = act

    def forward(self, x):
        x = self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        if self.act == "leaky_relu":
            return F.leaky_relu(x, 0.2)
        if self.act == "tanh":
            return x.tanh()                  # the method form
        if self.act == "sigmoid":
            return torch.sigmoid(x)
        return F.relu(x)


def silu_block():
    """nn.Upsample -> nn.Conv2d -> nn.SiLU, as modules in a Sequential."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(4, 6, 3, padding=1),
                         nn.SiLU())


class FiLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)

    def forward(self, x, a, b):
        x = self.conv(F.interpolate(x, scale_factor=2.0))
        return F.relu(x * (1 + a)[:, :, None, None] + b[:, :, None, None])


class TransposeBN(nn.Module):
    """DCGAN / MoCoGAN's block: ConvTranspose2d(4, 2, 1, no bias) -> BatchNorm2d (eval) -> ReLU."""

    def __init__(self):
        super().__init__()
        self.conv = nn.ConvTranspose2d(4, 6, 4, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.act = nn.ReLU(inplace=True)
        with torch.no_grad():                # statistics and affine far from the identity
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.3, 3)
            self.bn.weight.uniform_(0.5, 2)
            self.bn.bias.uniform_(-1, 1)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class ModulatedUpConv(nn.Module):
    """StyleGAN2's non-fused modulated conv: modulate, upsample, conv, demodulate, noise, bias,
    leaky ReLU x sqrt 2 (and, with ``clamp``, its conv_clamp). ``drawn``: fresh noise per call."""

    def __init__(self, cin=4, cout=6, style=5, size=8, drawn=False, clamp=None):
        super().__init__()
        self.affine = nn.Linear(style, cin)
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) / 6)
        self.bias = nn.Parameter(torch.randn(cout))
        self.strength = nn.Parameter(torch.randn(cout))
        self.register_buffer("noise", torch.randn(1, 1, size, size))
        self.drawn, self.clamp = drawn, clamp

    def forward(self, x, style):
        s = self.affine(style) + 1
        d = torch.rsqrt(s.square() @ self.weight.square().sum(dim=(2, 3)).t() + 1e-8)
        # fresh noise per call, [N, 1, 2H, 2W], from the input's shape (fx cannot trace
        # torch.randn of traced sizes)
        drawn = torch.randn_like(x[:, :1]).repeat(1, 1, 2, 2) if self.drawn else None
        x = x * s[:, :, None, None]
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.conv2d(x, self.weight, padding=1)
        x = x * d[:, :, None, None]
        noise = drawn if self.drawn else self.noise
        x = x + noise * self.strength[None, :, None, None]
        x = x + self.bias[None, :, None, None]
        x = F.leaky_relu(x, 0.2) * math.sqrt(2)
        if self.clamp is not None:
            x = x.clamp(-self.clamp, self.clamp)
        return x


def coord_block():
    from t2v_rt.models.shapes.generator import UpConvAct as ShapesBlock

    block = ShapesBlock(4, 6, 0.2)
    nn.init.normal_(block.coord.weight)
    return block


def x_in(n):
    return torch.randn(n, 4, 4, 4, device=DEV)


CASES = {
    # name: (module factory, inputs for a batch of n, the pattern)
    "leaky_relu": (lambda: UpConvAct(act="leaky_relu"), lambda n: (x_in(n),),
                   "upsample3x3+bias+leaky_relu"),
    "relu": (lambda: UpConvAct(act="relu"), lambda n: (x_in(n),), "upsample3x3+bias+relu"),
    "tanh": (lambda: UpConvAct(act="tanh"), lambda n: (x_in(n),), "upsample3x3+bias+tanh"),
    "sigmoid": (lambda: UpConvAct(act="sigmoid"), lambda n: (x_in(n),), "upsample3x3+bias+sigmoid"),
    "silu": (silu_block, lambda n: (x_in(n),), "upsample3x3+bias+silu"),
    "film": (FiLM, lambda n: (x_in(n), torch.randn(n, 6, device=DEV), torch.randn(n, 6, device=DEV)),
             "upsample3x3+bias+film+relu"),
    "coord": (coord_block, lambda n: (x_in(n), 1 + torch.randn(n, 6, device=DEV),
                                      torch.randn(n, 6, device=DEV), torch.rand(n, 2, device=DEV) - 0.5),
              "upsample3x3+bias+coord+film+leaky_relu"),
    "transpose_bn": (TransposeBN, lambda n: (x_in(n),), "transpose4x4+bn+relu"),
    "modulated": (ModulatedUpConv, lambda n: (x_in(n), torch.randn(n, 5, device=DEV)),
                  "mod+upsample3x3+demod+noise+bias+leaky_relu+gain"),
    "modulated_drawn_noise_clamp": (
        lambda: ModulatedUpConv(drawn=True, clamp=1.5), lambda n: (x_in(n), torch.randn(n, 5, device=DEV)),
        "mod+upsample3x3+demod+noise+bias+leaky_relu+gain+clamp"),
}


def _fused_and_eager(name, n_trace=2, n_run=3, pack=True):
    make, inputs, _ = CASES[name]
    module = make().to(DEV).eval()
    fused, report = fuse_module(module, *inputs(n_trace), pack=pack)
    args = inputs(n_run)                  # fresh inputs, another batch size than the traced one
    with torch.no_grad():
        torch.manual_seed(5)
        want = module(*args)
        torch.manual_seed(5)
        got = fused(*args)
    return report, got, want


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("pack", [True, False], ids=["kernel", "plan"])
def test_each_pattern_is_fused_and_matches_eager(name, pack):
    """On the kernel, and (``pack=False``, what ``plan`` builds) on the fused node's PyTorch
    formulation of the kernel's order: the mapping onto the epilogue is right either way."""
    report, got, want = _fused_and_eager(name, pack=pack)
    assert (report.found, report.fused) == (1, 1), report.lines()
    assert report.blocks[0].pattern == CASES[name][2]
    assert got.shape == want.shape
    torch.testing.assert_close(got.float(), want, atol=ATOL, rtol=0)


def test_a_pattern_needing_a_missing_kernel_feature_is_left_and_logged(monkeypatch):
    import t2v_rt.backends.fusion as fusion

    real = fusion._kernel_features
    monkeypatch.setattr(fusion, "_kernel_features", lambda: real() - {"noise"})
    logged = []
    fused = fuse(_randomised("stylegan-v"), log=logged.append)
    assert fused.report.fused == 0
    assert any("not fused" in line and "needs kernel feature(s) noise" in line for line in logged)


# --- what is not fused, and why ----------------------------------------------------------


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv(x))


class Bilinear(UpConvAct):
    def forward(self, x):
        return F.relu(self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)))


class Rolled(UpConvAct):
    def forward(self, x):
        y = self.conv(F.interpolate(x, scale_factor=2))
        return F.relu(torch.roll(y, 1, dims=-1))


class UsedTwice(UpConvAct):
    def forward(self, x):
        y = self.conv(F.interpolate(x, scale_factor=2))
        return F.relu(y) + y


class ShiftThenScale(nn.Module):
    """(conv + b) * a: a per-sample shift before a per-sample scale is not the kernel's order."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)

    def forward(self, x, a, b):
        y = self.conv(F.interpolate(x, scale_factor=2)) + b[:, :, None, None]
        return F.relu(y * a[:, :, None, None])


class Stride1Transpose(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.ConvTranspose2d(4, 6, 4, 1, 0)

    def forward(self, x):
        return F.relu(self.conv(x))


class TrainingBN(TransposeBN):
    def __init__(self):
        super().__init__()
        self.bn.train()


class DataDependent(UpConvAct):
    def forward(self, x):
        if x.sum() > 0:          # torch.fx cannot trace this
            x = -x
        return super().forward(x)


def _check(module, args, fused_count, *words):
    module = module.to(DEV)
    fused, report = fuse_module(module, *args)
    text = " ".join(report.lines())
    assert report.fused == fused_count, text
    for word in words:
        assert word in text, text
    with torch.no_grad():
        torch.testing.assert_close(fused(*args).float(), module(*args), atol=ATOL, rtol=0)
    return report


def test_a_conv_without_upsample_is_left_with_its_reason():
    _check(Plain(), (x_in(2),), 0, "no x2 upsample before it")


def test_a_bilinear_upsample_is_left_with_its_reason():
    _check(Bilinear(), (x_in(2),), 0, "bilinear")


def test_a_stride_1_transposed_conv_is_left_with_its_reason():
    _check(Stride1Transpose(), (torch.randn(2, 4, 1, 1, device=DEV),), 0, "stride 1, padding 0")


def test_a_spatial_op_ends_the_fused_run_and_stays_in_pytorch():
    """The up-convolution before the roll is fused; the roll and the ReLU after it are not."""
    report = _check(Rolled().train(False), (x_in(2),), 1, "roll")
    assert report.blocks[0].pattern == "upsample3x3+bias"


def test_an_output_used_twice_ends_the_fused_run():
    report = _check(UsedTwice(), (x_in(2),), 1, "used 2 times")
    assert report.blocks[0].pattern == "upsample3x3+bias"


def test_an_order_the_kernel_cannot_express_stays_in_pytorch():
    args = (x_in(2), torch.randn(2, 6, device=DEV), torch.randn(2, 6, device=DEV))
    report = _check(ShiftThenScale(), args, 1, "after the shift")
    assert "relu" not in report.blocks[0].pattern


def test_a_training_mode_batchnorm_is_not_folded():
    report = _check(TrainingBN(), (x_in(2),), 1, "training mode")
    assert report.blocks[0].pattern == "transpose4x4"


def test_a_module_fx_cannot_trace_is_left_whole():
    module = DataDependent().to(DEV)
    fused, report = fuse_module(module, x_in(2))
    assert report.fused == 0 and report.untraced, report.lines()
    assert type(fused) is DataDependent


# --- the load-time check ------------------------------------------------------------------------


def _randomised(name, overrides=None):
    """The tiny preset with every all-zero parameter (noise strengths, zero-initialised heads)
    and every BatchNorm's statistics drawn at random, so that each fused term matters."""
    g = init_generator(name, "tiny", overrides, seed=3)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in g.parameters():
            if p.is_floating_point() and not p.any():
                p.normal_(0, 0.3)
        for m in g.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
    return g.eval()


def test_verify_refuses_a_wrong_kernel_with_the_numbers(monkeypatch):
    import t2v_rt.kernels as kernels

    g = _randomised("mocogan").to(DEV)
    fused = fuse(g)
    real = kernels.upsample_conv_act

    @functools.wraps(real)
    def off_by_a_tenth(*args, **kwargs):
        return real(*args, **kwargs) + 0.1

    monkeypatch.setattr(kernels, "upsample_conv_act", off_by_a_tenth)
    with pytest.raises(CompileError, match=r"max \|error\| 0\.\d+ > tolerance 0\.001 .*seed 11\)"):
        verify(g, fused, seed=11)
    with pytest.raises(CompileError, match="differs from eager PyTorch"):
        TritonBackend(generator=g)


# --- every registered architecture ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(entries()))
def test_every_architecture_fuses_and_matches_the_torch_backend(name):
    g = _randomised(name)
    logged = []
    triton_be = TritonBackend(generator=copy.deepcopy(g), log=logged.append)
    torch_be = TorchBackend(generator=copy.deepcopy(g), device=triton_be.device)
    report = triton_be.report
    assert report.fused > 0, report.lines()
    assert any(f"fused {report.fused} of {report.found}" in line for line in logged)
    assert isinstance(triton_be.generator, FusedGenerator)
    w, features = sample_inputs(g.to(triton_be.device), 2, seed=21)
    got, want = triton_be.frames(w, features), torch_be.frames(w, features)
    assert got.shape == want.shape == (2, 3, g.config.resolution, g.config.resolution)
    torch.testing.assert_close(got.cpu(), want.cpu(), atol=2e-2 if GPU else ATOL, rtol=0)
    if g.config.FORM == "recurrent":
        s1, s2 = triton_be.initial_state(w), torch_be.initial_state(w)
        torch.testing.assert_close(triton_be.step(w, s1)[1], torch_be.step(w, s2)[1])


def _assert_triton_matches_torch(g, seed: int) -> None:
    """The triton backend's frames against the torch backend's, on fresh random inputs."""
    triton_be = TritonBackend(generator=copy.deepcopy(g))
    torch_be = TorchBackend(generator=copy.deepcopy(g), device=triton_be.device)
    w, features = sample_inputs(g.to(triton_be.device), 2, seed=seed)
    torch.testing.assert_close(triton_be.frames(w, features).cpu(),
                               torch_be.frames(w, features).cpu(),
                               atol=2e-2 if GPU else ATOL, rtol=0)


def test_stylegan_with_more_convs_per_block_fuses_the_upsampling_ones_and_matches_torch():
    """``block_convs`` 2: the ModulatedConvs after each upsampling block are left to eager
    PyTorch (no x2 upsample to fuse), the blocks still fuse, and the frames match."""
    g = _randomised("stylegan-v", {"block_convs": 2})
    report = plan(g)
    blocks = len(g.config.channels) - 1
    assert report.fused == blocks and report.found == 1 + 2 * blocks, report.lines()
    left = [b for b in report.blocks if not b.fused]
    assert {b.name.split(":")[0].split(".")[0] for b in left} == {"conv4", "refine"}, report.lines()
    assert all("no x2 upsample" in b.reason for b in left)
    _assert_triton_matches_torch(g, seed=23)


def test_stylegan_with_coordinates_fuses_the_coordinate_term_and_matches_torch():
    """``coordinates`` absolute: every upsampling block's 1x1 conv of the pixel coordinates
    (about the frame centre, a constant pose) joins the kernel's epilogue, and the frames match
    the torch backend's (the 4x4 and extra convs, with their coordinate terms, stay in PyTorch)."""
    g = _randomised("stylegan-v", {"coordinates": "absolute", "block_convs": 2})
    report = plan(g)
    blocks = len(g.config.channels) - 1
    assert report.fused == blocks and report.found == 1 + 2 * blocks, report.lines()
    assert all(b.pattern == "mod+upsample3x3+demod+noise+bias+coord+leaky_relu+gain"
               for b in report.blocks if b.fused), report.lines()
    _assert_triton_matches_torch(g, seed=29)


def test_plan_reports_without_running_the_kernels():
    report = plan(_randomised("stylegan-v"))
    assert report.fused == report.found - 1
    assert all("mod+upsample3x3+demod+noise+bias+leaky_relu+gain" == b.pattern
               for b in report.blocks if b.fused)
    (left,) = [b for b in report.blocks if not b.fused]
    assert "no x2 upsample" in left.reason
