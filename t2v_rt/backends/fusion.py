"""Automatic fusion for the ``triton`` backend: any generator's x2 up-convolutions, with what
follows them per channel, onto :func:`t2v_rt.kernels.upsample_conv_act`.

**What is found.** The pass reads the generator's code with ``torch.fx`` and looks, in the
traced graphs, for the two x2 up-convolutions the kernel computes:

* ``upsample3x3``: a nearest x2 upsample (``F.interpolate``/``nn.Upsample``, ``scale_factor=2``,
  mode ``nearest`` or ``nearest-exact``) feeding a 3x3 convolution (``nn.Conv2d`` or
  ``F.conv2d`` with a weight that is a constant of the model), stride 1, padding 1, no
  dilation, no groups, zero padding;
* ``transpose4x4``: ``ConvTranspose2d`` (module or ``F.conv_transpose2d``) kernel 4, stride 2,
  padding 1, no output padding, no dilation, no groups,

then the longest run of per-channel work that follows and that the kernel's fixed epilogue
order can express exactly (real-number math: additive terms between two multiplications are
a sum, so their order among themselves is free; nothing else is reordered)::

    [x * in_scale]            -> in_scale   (StyleGAN2 modulation, [N|1, C] or a number;
                                             before or after the upsample)
    conv                      -> the conv; its own bias -> bias
    * v                       -> out_scale  (the first multiplication, before any addition:
                                             demodulation), else scale (FiLM, AdaIN)
    + noise * strength        -> noise, noise_weight (noise [N|1, 1, 2H, 2W], strength [K] or a
                                             number; a noise buffer, or drawn per call)
    + b  /  - b               -> bias when [K] and still in order, else shift ([N|1, K])
    + conv1x1(coordinate_features(pose, 2H[, 2W]))  -> the coordinate term (CoordConv)
    BatchNorm2d (eval)        -> scale and shift (``fold_batchnorm``)
    relu | leaky_relu | silu | tanh | sigmoid (function, method or module) -> the activation
    * number (after the activation, or after the shift) -> gain
    clamp(-c, c)              -> clamp

``v``/``b`` are per-channel: they broadcast as ``[1|N, 1|K, 1, 1]`` (or are numbers) and do
not depend on the conv's output; they may be constants of the model (folded once here) or
computed per call in PyTorch (FiLM from the style, StyleGAN2's demodulation from the weight
and the style). The run stops at the first op that does not fit (a spatial op, a second use
of an intermediate, a multiplication after the shift, ...): what comes before it is fused,
the rest stays in PyTorch, and the report says where and why.

**How it is replaced.** Scopes are traced top-down: each submodule that runs during
``synthesize`` is traced as a whole (its children inlined, the ``torch.nn`` layers as leaves,
:func:`t2v_rt.generators.ops.coordinate_features` as one call); a module that ``torch.fx``
cannot trace (data-dependent control flow, ``torch.randn`` of traced sizes, ...) is skipped
and its children are tried. A trace is used only if it computes what the module computes on
the inputs recorded from a real ``synthesize`` call (a trace that silently specialised on
something those inputs show is never used; :func:`verify` covers the rest). The recorded
inputs also give every node its shape, which is how "per-channel" is decided, and the
values of the constants (weights, ``weight * gain``, noise buffers). In a scope with
something to fuse, each matched run becomes one :class:`FusedUpConv` node (the kernel,
weights packed once in the body's dtype) and the module is replaced, in a deep copy of the
generator, by a :class:`FusedScope` that takes the same arguments (and falls back to the
original module if a non-tensor argument differs from the traced one). Last, ``synthesize``
itself is traced with every module as a leaf, for runs written there (a last
``ConvTranspose2d`` -> ``tanh``). The rest of the generator runs in PyTorch, unchanged.

**Checked at load.** :func:`verify` runs the fused and the eager generator on fresh random
inputs (the generator's own front end, latent, time features or steps) and refuses the fused
one, with the numbers and the seed, if the frames differ by more than the dtype's tolerance.

The kernels package imports no model code; this module is where models meet kernels.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import operator
import random
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from t2v_rt.errors import CompileError
from t2v_rt.generators.ops import COORD_FEATURES, coordinate_features

# Max |fused - eager| over the frames, relative to max(1, max |eager|), that verify accepts.
# fp32: the kernel sums the 3x3 taps into 2x2 ones and accumulates in another order, and
# BatchNorm is folded: each layer differs from PyTorch by a few fp32 ulps of its
# pre-activations (measured: <= 1e-5 on the frames of every built-in architecture), while
# any real mistake (a term missing, misplaced or mis-indexed) moves frames by 1e-2 or more;
# 1e-3 sits between. fp16 / bf16: the body's activations are rounded to 11 / 8 bits at every
# block (2^-11 ~ 5e-4, 2^-8 ~ 4e-3 relative, growing over the depth), and the PyTorch parts
# run under autocast; the reference is the eager generator in fp32, and the tolerance is at
# least twice what eager PyTorch under autocast itself loses on the same inputs (measured on
# the built-in tiny presets, fused vs fp32: fp16 <= 0.008, bf16 <= 0.05; eager autocast vs
# fp32: fp16 <= 0.015, bf16 <= 0.09), see :func:`verify`.
TOLERANCES = {torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 5e-2}
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}

_ACTIVATION_MODULES = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.SiLU: "silu",
                       nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
_ACTIVATION_FUNCTIONS = {
    F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu_: "relu",
    F.leaky_relu: "leaky_relu", F.leaky_relu_: "leaky_relu", F.silu: "silu",
    torch.tanh: "tanh", F.tanh: "tanh", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
}
_ACTIVATION_METHODS = {"relu": "relu", "relu_": "relu", "tanh": "tanh", "tanh_": "tanh",
                       "sigmoid": "sigmoid", "sigmoid_": "sigmoid"}
_ADD = {operator.add, operator.iadd, torch.add}
_SUB = {operator.sub, operator.isub, torch.sub}
_MUL = {operator.mul, operator.imul, torch.mul}
_INTERPOLATE = {F.interpolate, F.upsample}
_CLAMP = {torch.clamp, torch.clip}
_RANDOM = {torch.randn, torch.rand, torch.randint, torch.randn_like, torch.rand_like,
           torch.randint_like, torch.normal, torch.bernoulli, torch.multinomial, torch.poisson,
           F.dropout, F.dropout2d, F.alpha_dropout}
_META_ATTRS = {"shape", "device", "ndim"}
_STATE = threading.local()


def _analysing() -> bool:
    return getattr(_STATE, "analysis", False)


@contextlib.contextmanager
def _analysis():
    """While the pass analyses a generator, fused nodes compute their PyTorch formulation in
    fp32: the traces it checks then run at PyTorch's speed (not the interpreter's) and in the
    dtypes eager PyTorch has, whatever the body's dtype."""
    before = _analysing()
    _STATE.analysis = True
    try:
        yield
    finally:
        _STATE.analysis = before
_META_METHODS = {"size", "dim"}


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


@dataclass
class BlockReport:
    """One convolution of the frames path: fused or not, and why."""

    name: str                 # where: module path (``blocks.0.conv``) or ``scope:node``
    fused: bool
    pattern: str              # what was fused (``upsample3x3+bias+coord+film+leaky_relu``), or found
    reason: str = ""          # not fused: why; fused: where the epilogue stopped (if it did)

    def line(self) -> str:
        if self.fused:
            return f"{self.name}: fused {self.pattern}" + (f" ({self.reason})" if self.reason else "")
        return f"{self.name}: in PyTorch: {self.reason}"


@dataclass
class FusionReport:
    """What :func:`fuse` (or :func:`plan`) found in a generator."""

    blocks: list[BlockReport] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)          # modules replaced ("" = synthesize)
    untraced: list[tuple[str, str]] = field(default_factory=list)   # (module, why)

    @property
    def found(self) -> int:
        return len(self.blocks)

    @property
    def fused(self) -> int:
        return sum(b.fused for b in self.blocks)

    def patterns(self) -> Counter:
        return Counter(b.pattern for b in self.blocks if b.fused)

    def summary(self, limit: int = 3) -> str:
        """One line: ``fused 4 of 5 convolutions (4x upsample3x3+...); in PyTorch: to_alpha
        (3x3 conv with no x2 upsample before it)``."""
        if not self.blocks:
            return "no convolution found on the frames path; everything runs in PyTorch"
        pats = ", ".join(f"{n}x {p}" for p, n in self.patterns().most_common())
        text = f"fused {self.fused} of {self.found} convolutions" + (f" ({pats})" if pats else "")
        rest = [b for b in self.blocks if not b.fused]
        if rest:
            shown = "; ".join(f"{b.name}: {b.reason}" for b in rest[:limit])
            more = f"; and {len(rest) - limit} more" if len(rest) > limit else ""
            text += f"; in PyTorch: {shown}{more}"
        return text

    def lines(self) -> list[str]:
        out = [b.line() for b in self.blocks]
        out += [f"{name or 'synthesize'}: not traced by torch.fx ({why})" for name, why in self.untraced]
        return out


# --------------------------------------------------------------------------------------------
# The fused op and the replaced scopes
# --------------------------------------------------------------------------------------------


def _vec(t: torch.Tensor, width: int, name: str) -> torch.Tensor:
    """A per-channel operand as the graph broadcasts it (``[1|N, 1|width, 1, 1]``, fewer dims,
    or a 0-d tensor) -> ``[width]`` or ``[N, width]`` (a view), as the kernel takes it."""
    if t.dim() == 0:
        return t.reshape(1).expand(width)
    if t.dim() > 4:
        raise ValueError(f"fused block: {name} has {t.dim()} dimensions")
    t4 = t.reshape((1,) * (4 - t.dim()) + tuple(t.shape))
    if t4.shape[2:] != (1, 1) or t4.shape[1] not in (1, width):
        raise ValueError(f"fused block: {name} must broadcast as [N, {width}, 1, 1], got "
                         f"{list(t.shape)}")
    t2 = t4[:, :, 0, 0]
    return t2[0].expand(width) if t2.shape[0] == 1 else t2.expand(-1, width)


class FusedUpConv(nn.Module):
    """One matched run: ``forward(x, *side)`` -> :func:`t2v_rt.kernels.upsample_conv_act`.

    ``side`` are the operands computed per call in PyTorch, in the order of ``inputs`` (names
    among ``in_scale out_scale noise noise_weight bias pose scale shift``); the others are
    constants of the model, folded at fuse time (``const_*`` buffers). ``x`` is cast to the
    body's dtype (``dtype``), the output is in it. ``pack=False`` builds the node without the
    packed weights (:func:`plan`: no Triton needed)."""

    def __init__(self, kind: str, weight: torch.Tensor, dtype: torch.dtype, *, activation: str,
                 slope: float, gain: float, clamp: float | None, consts: dict[str, torch.Tensor],
                 inputs: list[str], negate: set[str], coord_weight: torch.Tensor | None,
                 pattern: str, pack: bool = True):
        super().__init__()
        self.kind, self.dtype, self.pattern = kind, dtype, pattern
        self.activation, self.slope, self.gain, self.clamp = activation, slope, gain, clamp
        self.inputs, self.negate = tuple(inputs), frozenset(negate)
        self.c, self.k = ((weight.shape[1], weight.shape[0]) if kind == "upsample3x3"
                          else (weight.shape[0], weight.shape[1]))
        weight = weight.detach().float().contiguous()
        self.register_buffer("weight", weight)
        packed = None
        if pack:
            from t2v_rt import kernels

            packed = kernels.pack_weights(weight, dtype, kind)
        self.register_buffer("packed", packed)
        self.register_buffer("coord_weight", None if coord_weight is None
                             else coord_weight.detach().float().reshape(self.k, COORD_FEATURES).contiguous())
        for name, t in consts.items():
            self.register_buffer("const_" + name, t)

    def extra_repr(self) -> str:
        return f"{self.pattern}, {self.c} -> {self.k}, {DTYPE_NAMES.get(self.dtype, self.dtype)}"

    def _term(self, got: dict, name: str, width: int):
        if name in got:
            v = _vec(got[name], width, name)
            return -v if name in self.negate else v
        return getattr(self, "const_" + name, None)

    def forward(self, x: torch.Tensor, *side: torch.Tensor) -> torch.Tensor:
        got = dict(zip(self.inputs, side))
        k, c, n = self.k, self.c, x.shape[0]
        pose = got.get("pose", getattr(self, "const_pose", None))
        if pose is not None and pose.shape[0] != n:
            pose = pose.expand(n, 2)
        noise = got.get("noise", getattr(self, "const_noise", None))
        if self.packed is None or _analysing():
            return self._reference(x, got, pose, noise)
        from t2v_rt import kernels

        return kernels.upsample_conv_act(
            x.to(self.dtype), self.weight, self._term(got, "bias", k), self.activation,
            self.slope, self._term(got, "scale", k), self._term(got, "shift", k),
            self.coord_weight, pose, kind=self.kind, in_scale=self._term(got, "in_scale", c),
            out_scale=self._term(got, "out_scale", k), noise=noise,
            noise_weight=self._term(got, "noise_weight", k), gain=self.gain, clamp=self.clamp,
            packed=self.packed, out_dtype=self.dtype)

    def _reference(self, x, got, pose, noise) -> torch.Tensor:
        """The same op in fp32 PyTorch, in the kernel's order, output fp32: what nodes built
        without packed weights compute (:func:`plan`, which may run where Triton is not
        installed), and every node while the pass analyses (:func:`_analysis`)."""
        k, c = self.k, self.c

        def rows(name, width):
            t = self._term(got, name, width)
            return None if t is None else t.float().reshape(-1, width, 1, 1)

        y = x.float()
        if (t := rows("in_scale", c)) is not None:
            y = y * t
        if self.kind == "upsample3x3":
            y = F.conv2d(F.interpolate(y, scale_factor=2.0, mode="nearest"), self.weight, padding=1)
        else:
            y = F.conv_transpose2d(y, self.weight, stride=2, padding=1)
        if (t := rows("out_scale", k)) is not None:
            y = y * t
        if noise is not None:
            y = y + noise.float().reshape(-1, 1, *y.shape[2:]) * rows("noise_weight", k)
        if (t := rows("bias", k)) is not None:
            y = y + t
        if self.coord_weight is not None:
            grid = coordinate_features(pose.float(), y.shape[2], y.shape[3])
            y = y + F.conv2d(grid, self.coord_weight.reshape(k, COORD_FEATURES, 1, 1))
        if (t := rows("scale", k)) is not None:
            y = y * t
        if (t := rows("shift", k)) is not None:
            y = y + t
        if self.activation == "leaky_relu":
            y = F.leaky_relu(y, self.slope)
        elif self.activation != "none":
            y = {"relu": torch.relu, "silu": F.silu, "tanh": torch.tanh,
                 "sigmoid": torch.sigmoid}[self.activation](y)
        y = y * self.gain if self.gain != 1.0 else y
        if self.clamp is not None:
            y = y.clamp(-self.clamp, self.clamp)
        return y


class FusedScope(nn.Module):
    """A module of the generator with its matched runs fused: the same call signature; runs
    the rewritten graph, or the original module when a non-tensor argument differs from the
    one the graph was traced with. Anything else asked of it (another method, an attribute)
    is the original module's."""

    def __init__(self, graph: fx.GraphModule, original: nn.Module, consts: dict[str, Any]):
        super().__init__()
        self.graph = graph
        # shares its parameters with the graph (the fused nodes' weights are the same storage)
        self.original = original
        self._sig = inspect.signature(original.forward)
        self._names = list(self._sig.parameters)
        self._consts = consts

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            original = self.__dict__.get("_modules", {}).get("original")
            if original is None:
                raise
            return getattr(original, name)

    def forward(self, *args, **kwargs):
        if not self._consts and not kwargs and len(args) == len(self._names):
            return self.graph(*args)
        bound = self._sig.bind(*args, **kwargs)
        bound.apply_defaults()
        values = bound.arguments
        for name, want in self._consts.items():
            if not _same_const(values[name], want):
                return self.original(*args, **kwargs)
        return self.graph(*[values[name] for name in self._names])


def _same_const(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return False
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - an argument that cannot be compared is not the same
        return False


class FusedGenerator(nn.Module):
    """The generator with its fused scopes (:func:`fuse`): ``style``, ``initial_state`` and
    ``step`` are the generator's own; ``synthesize`` is the generator's with the fused
    modules, or its rewritten graph when runs written in ``synthesize`` itself were fused."""

    def __init__(self, generator: nn.Module, synthesize_graph: fx.GraphModule | None,
                 report: FusionReport, dtype: torch.dtype):
        super().__init__()
        self.generator = generator
        self.synthesize_graph = synthesize_graph
        self.report, self.dtype, self.config = report, dtype, generator.config

    @property
    def form(self) -> str:
        return self.config.FORM

    def style(self, text, z):
        return self.generator.style(text, z)

    def initial_state(self, w):
        return self.generator.initial_state(w)

    def step(self, w, state):
        return self.generator.step(w, state)

    def synthesize(self, w, features):
        if self.synthesize_graph is not None:
            return self.synthesize_graph(w, features)
        return self.generator.synthesize(w, features)

    def forward(self, w, features):
        return self.synthesize(w, features)


# --------------------------------------------------------------------------------------------
# Tracing, recording, probing
# --------------------------------------------------------------------------------------------


class _Tracer(fx.Tracer):
    """``torch.nn`` layers and fused nodes as leaves (or every module but the root, for the
    ``synthesize`` scope); :func:`coordinate_features` as one call wherever it is imported."""

    def __init__(self, all_leaves_but: nn.Module | None = None):
        super().__init__(autowrap_functions=(coordinate_features,))
        self._all_but = all_leaves_but

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if self._all_but is not None:
            return m is not self._all_but
        if isinstance(m, (FusedUpConv, FusedScope, fx.GraphModule)):
            return True
        return super().is_leaf_module(m, qualname)


class _Synthesize(nn.Module):
    """The ``synthesize`` method as a module, for tracing."""

    def __init__(self, g: nn.Module):
        super().__init__()
        self.g = g

    def forward(self, w, features):
        return self.g.synthesize(w, features)


class _NotTraceable(Exception):
    pass


def _clone(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, (list, tuple)):
        out = [_clone(o) for o in obj]
        return type(obj)(out) if isinstance(obj, list) else tuple(out)
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    return obj


def _close(a, b) -> bool:
    """Whether two outputs are the same (tensors up to a few ulps: same ops, same order)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if not a.is_floating_point():
            return torch.equal(a, b)
        scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
        return bool(((a - b).abs().max() <= 1e-5 * scale).item()) if a.numel() else True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return False
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return False


def _seeded(fn, seed: int):
    """``fn()`` with PyTorch's generators seeded (and restored after): random ops in the
    model draw the same numbers in the eager and the fused run."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return fn()


def _is_random(n: fx.Node) -> bool:
    if n.op == "call_function" and n.target in _RANDOM:
        return True
    return n.op == "call_method" and isinstance(n.target, str) and n.target.endswith("_")


def _const_nodes(graph: fx.Graph) -> set[fx.Node]:
    """Nodes that depend on no input and draw no random numbers: constants of the model."""
    const: set[fx.Node] = set()
    for n in graph.nodes:
        if n.op == "get_attr":
            const.add(n)
        elif n.op in ("call_function", "call_method", "call_module"):
            if _is_random(n) or n.is_impure():
                continue
            if all(i in const for i in n.all_input_nodes):
                const.add(n)
    return const


class _Probe(fx.Interpreter):
    """Runs the traced graph once on the recorded inputs: every node's shape and dtype, and
    the values of the constant nodes, into ``node.meta``."""

    def __init__(self, gm: fx.GraphModule, const: set[fx.Node]):
        super().__init__(gm)
        self._const = const

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            n.meta["t2v_shape"], n.meta["t2v_dtype"] = tuple(out.shape), out.dtype
            if n in self._const:
                n.meta["t2v_const"] = out.detach()
        return out


def _record_calls(g: nn.Module, w: torch.Tensor, features: torch.Tensor, seed: int) -> dict:
    """Every submodule's first call during ``g.synthesize(w, features)``: id -> (args,
    kwargs), cloned."""
    records: dict[int, tuple] = {}
    handles = []

    def pre(mod, args, kwargs):
        if id(mod) not in records:
            records[id(mod)] = (_clone(args), _clone(kwargs))

    for m in g.modules():
        if m is not g:
            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
    try:
        _seeded(lambda: g.synthesize(w, features), seed)
    finally:
        for h in handles:
            h.remove()
    return records


def sample_inputs(g, n: int, seed: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh inputs of ``synthesize`` for ``n`` frames of ``n`` videos, from the generator's
    own front end and latent: w [n, S] and features [n, F] (continuous: time features of random
    times in [0, 1000) s; recurrent: the features of real steps, a random number in)."""
    cfg = g.config
    if device is None:
        device = next((p.device for p in g.parameters()), torch.device("cpu"))
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    front = cfg.front_end()
    text = torch.as_tensor(front.features(front.example_prompts(rng, n))).to(device)
    z = torch.randn(n, cfg.latent_dim, generator=gen).to(device)
    with torch.no_grad():
        w = g.style(text, z).float()
        if cfg.FORM == "continuous":
            t = torch.rand(n, generator=gen, dtype=torch.float64) * 1000
            features = torch.as_tensor(cfg.time_features(t), dtype=torch.float32, device=device)
        else:
            state = g.initial_state(w)
            features = None
            for _ in range(rng.randint(1, 8)):
                features, state = g.step(w, state)
            features = features.float()
    return w, features


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------


def _shape(n) -> tuple | None:
    return n.meta.get("t2v_shape") if isinstance(n, fx.Node) else None


def _dims(v) -> str:
    """(2, 2) -> '2'; (2, 1) -> '2x1'; 'same' -> 'same'."""
    if isinstance(v, tuple) and len(set(v)) == 1:
        return str(v[0])
    return "x".join(map(str, v)) if isinstance(v, tuple) else str(v)


def _pair(v) -> tuple:
    if isinstance(v, (list, tuple)):
        return tuple(v) if len(v) == 2 else tuple(v) * 2 if len(v) == 1 else tuple(v)
    return (v, v)


def _number(v) -> float | None:
    """A python number, or a constant 0-d / 1-element tensor node, as a float; else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, fx.Node) and "t2v_const" in v.meta and v.meta["t2v_const"].numel() == 1:
        return float(v.meta["t2v_const"].reshape(()).item())
    return None


def _args(n: fx.Node, names: list[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """A call's arguments by name (positional and keyword), defaults filled in."""
    out = dict(defaults)
    out.update(zip(names, n.args))
    out.update(n.kwargs)
    return out


def _same_forward(m: nn.Module, base: type) -> bool:
    return isinstance(m, base) and type(m).forward is base.forward and not (
        m._forward_hooks or m._forward_pre_hooks)


@dataclass
class _Conv:
    """A convolution node of the graph, normalised."""

    node: fx.Node
    transposed: bool
    input: Any
    weight: torch.Tensor | None      # None: computed per call
    bias: torch.Tensor | None
    bias_runtime: bool
    stride: tuple
    padding: Any
    dilation: tuple
    groups: int
    output_padding: tuple = (0, 0)
    padding_mode: str = "zeros"
    extra: bool = False              # ConvTranspose2d called with output_size
    module: nn.Module | None = None


_CONV2D_ARGS = (["input", "weight", "bias", "stride", "padding", "dilation", "groups"],
                {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1})
_CONVT_ARGS = (["input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"],
               {"bias": None, "stride": 1, "padding": 0, "output_padding": 0, "groups": 1, "dilation": 1})


def _conv(gm: fx.GraphModule, n: fx.Node) -> _Conv | None:
    if n.op == "call_module":
        m = gm.get_submodule(n.target)
        for base, transposed in ((nn.Conv2d, False), (nn.ConvTranspose2d, True)):
            if isinstance(m, base):
                if not _same_forward(m, base):
                    return None
                return _Conv(n, transposed, n.args[0] if n.args else n.kwargs.get("input"),
                             m.weight.detach(), None if m.bias is None else m.bias.detach(), False,
                             _pair(m.stride), m.padding if isinstance(m.padding, str) else _pair(m.padding),
                             _pair(m.dilation), m.groups,
                             _pair(m.output_padding) if transposed else (0, 0), m.padding_mode,
                             extra=len(n.args) > 1 or bool(n.kwargs.get("output_size")), module=m)
        return None
    if n.op != "call_function" or n.target not in (F.conv2d, torch.conv2d, F.conv_transpose2d,
                                                    torch.conv_transpose2d):
        return None
    transposed = n.target in (F.conv_transpose2d, torch.conv_transpose2d)
    a = _args(n, *(_CONVT_ARGS if transposed else _CONV2D_ARGS))
    w, b = a["weight"], a["bias"]
    weight = w.meta.get("t2v_const") if isinstance(w, fx.Node) else None
    bias = b.meta.get("t2v_const") if isinstance(b, fx.Node) else None
    if not isinstance(a["groups"], int) or not all(
            isinstance(v, (int, str, tuple, list)) for v in (a["stride"], a["padding"], a["dilation"])):
        return None
    return _Conv(n, transposed, a["input"], weight, bias,
                 isinstance(b, fx.Node) and bias is None, _pair(a["stride"]),
                 a["padding"] if isinstance(a["padding"], str) else _pair(a["padding"]),
                 _pair(a["dilation"]), a["groups"], _pair(a.get("output_padding", 0)))


def _upsample(gm: fx.GraphModule, n) -> tuple[Any, str] | None:
    """(input, problem) of an upsample node ("" when it is the kernel's nearest x2), or None
    when ``n`` is no upsample."""
    if not isinstance(n, fx.Node):
        return None
    if n.op == "call_module":
        m = gm.get_submodule(n.target)
        if not isinstance(m, nn.Upsample):
            return None
        a = {"input": n.args[0] if n.args else n.kwargs.get("input"), "size": m.size,
             "scale_factor": m.scale_factor, "mode": m.mode, "align_corners": m.align_corners,
             "antialias": False}
    elif n.op == "call_function" and n.target in _INTERPOLATE:
        a = _args(n, ["input", "size", "scale_factor", "mode", "align_corners",
                      "recompute_scale_factor", "antialias"],
                  {"size": None, "scale_factor": None, "mode": "nearest", "align_corners": None,
                   "antialias": False})
    elif n.op == "call_function" and n.target is F.upsample_nearest:
        a = _args(n, ["input", "size", "scale_factor"], {"size": None, "scale_factor": None})
        a.update(mode="nearest", antialias=False)
    else:
        return None
    x, sf = a["input"], a["scale_factor"]
    if isinstance(sf, (list, tuple)) and len(set(sf)) == 1:
        sf = sf[0]
    if a["mode"] not in ("nearest", "nearest-exact"):
        return x, f"the x2 upsample before it is {a['mode']}; the kernel's is nearest"
    if a["size"] is not None or not isinstance(sf, (int, float)) or float(sf) != 2.0:
        return x, "the upsample before it is not by a scale factor of 2"
    if len(_shape(x) or ()) != 4:
        return x, "the upsample's input is not [N, C, H, W]"
    return x, ""


def _depends_on(n, targets: set[fx.Node], memo: dict) -> bool:
    """Whether node ``n`` is computed from any of ``targets``."""
    if not isinstance(n, fx.Node):
        return False
    if n in targets:
        return True
    if n not in memo:
        memo[n] = False
        memo[n] = any(_depends_on(i, targets, memo) for i in n.all_input_nodes)
    return memo[n]


@dataclass
class _Operand:
    """A per-channel operand: a constant (folded, fp32) or a node computed per call."""

    const: torch.Tensor | None
    node: fx.Node | None
    rows: int            # 1: shared by the batch; N: per sample
    cols: int            # 1: one number for every channel; width


def _per_channel(v, ref: tuple, chain: set[fx.Node], memo: dict) -> tuple[_Operand | None, str]:
    """``v`` as a per-channel operand of a tensor of shape ``ref`` [N, W, H, W'] (or why not)."""
    num = v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    if num is not None:
        return _Operand(torch.tensor(float(num)), None, 1, 1), ""
    if not isinstance(v, fx.Node) or _shape(v) is None:
        return None, "an operand that is not a tensor"
    s = _shape(v)
    if v.meta.get("t2v_dtype") not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        return None, "a non-float operand"
    if len(s) > 4:
        return None, f"a {len(s)}-d operand"
    s4 = (1,) * (4 - len(s)) + s
    n, width = ref[0], ref[1]
    if s4[2:] != (1, 1) or s4[1] not in (1, width) or s4[0] not in (1, n):
        return None, f"a {list(s)} operand (not per-channel)"
    if _depends_on(v, chain, memo):
        return None, "an operand computed from the conv's output"
    rows = s4[0] if n > 1 else 1
    if "t2v_const" in v.meta:
        if rows != 1:
            return None, "a constant with a batch axis"
        return _Operand(v.meta["t2v_const"].detach().float(), None, 1, s4[1]), ""
    return _Operand(None, v, rows, s4[1]), ""


def _describe(gm: fx.GraphModule, n: fx.Node) -> str:
    if n.op == "call_module":
        return type(gm.get_submodule(n.target)).__name__
    if n.op == "call_method":
        return f".{n.target}()"
    if n.op == "call_function":
        return getattr(n.target, "__name__", str(n.target))
    return n.op


@dataclass
class _Match:
    kind: str
    conv: _Conv
    x: Any
    nodes: list[fx.Node]                # pre-conv nodes absorbed, the conv, the epilogue, in order
    end: fx.Node
    consts: dict[str, torch.Tensor] = field(default_factory=dict)
    runtime: dict[str, fx.Node] = field(default_factory=dict)
    negate: set[str] = field(default_factory=set)
    terms: list[str] = field(default_factory=list)
    activation: str = "none"
    slope: float = 0.0
    gain: float = 1.0
    clamp: float | None = None
    coord_weight: torch.Tensor | None = None
    stop: str = ""

    @property
    def pattern(self) -> str:
        mod = ["mod"] if "in_scale" in self.consts or "in_scale" in self.runtime else []
        return "+".join(mod + [self.kind] + self.terms)


class _Epilogue:
    """The kernel's epilogue slots and the phase reached: an op goes to a slot only if the
    kernel's order computes the same real-number result."""

    def __init__(self, match: _Match, k: int, n: int):
        self.m, self.k, self.n = match, k, n
        # 0 start, 1 out_scale, 2 additive terms (noise, bias, coord: any order), 5 scale,
        # 6 shift, 7 activation, 8 gain, 9 clamp
        self.phase = 0
        self.used: set[str] = set()

    def put(self, slot: str, op: _Operand, negate: bool = False, width: int | None = None) -> None:
        """Slot ``slot`` takes ``op``: a node (computed per call), or a constant as [width]."""
        self.used.add(slot)
        if op.node is not None:
            self.m.runtime[slot] = op.node
            if negate:
                self.m.negate.add(slot)
        else:
            t = op.const.reshape(-1).float()
            t = t.expand(width or self.k) if t.numel() == 1 else t
            self.m.consts[slot] = (-t if negate else t).contiguous()

    def multiply(self, op: _Operand, what: str) -> str:
        """A per-channel multiplication; '' when placed, else why not."""
        if self.phase == 0 and "out_scale" not in self.used:
            self.put("out_scale", op)
            self.phase = 1
            self.m.terms.append("demod" if op.node is not None and op.rows > 1 else "scale")
            return ""
        if self.phase < 5:
            self.put("scale", op)
            self.phase = 5
            self.m.terms.append("film" if op.node is not None and op.rows > 1 else "scale")
            return ""
        if op.node is None and op.const.numel() == 1 and self.phase < 8:
            self.m.gain = float(op.const.reshape(()).item())
            self.phase = 8
            self.m.terms.append("gain")
            return ""
        return f"{what} after the shift or the activation (the kernel's order is scale, shift, activation)"

    def add(self, op: _Operand, negate: bool, what: str) -> str:
        if op.rows == 1 and self.phase <= 4 and "bias" not in self.used:
            self.put("bias", op, negate)
            self.phase = max(self.phase, 2)
            self.m.terms.append("bias")
            return ""
        if self.phase < 6 and "shift" not in self.used:
            self.put("shift", op, negate)
            self.phase = 6
            if self.m.terms and self.m.terms[-1] in ("scale", "film") and op.rows > 1:
                self.m.terms[-1] = "film"
            else:
                self.m.terms.append("film" if op.rows > 1 else "shift")
            return ""
        return f"{what} after the shift or the activation"

    def additive_term(self, slot: str) -> str:
        if self.phase <= 4 and slot not in self.used:
            self.used.add(slot)
            self.phase = max(self.phase, 2)
            return ""
        return f"a {slot} term after the scale (the kernel adds it before)"


def _is_call(n: fx.Node, functions: set, methods: set[str]) -> bool:
    return ((n.op == "call_function" and n.target in functions)
            or (n.op == "call_method" and n.target in methods))


def _binary(n: fx.Node, cur: fx.Node) -> tuple[Any, bool] | None:
    """(the other operand, cur is first) of a binary op on ``cur``; None if cur is both or
    neither."""
    args = list(n.args[:2]) + [n.kwargs[k] for k in ("other",) if k in n.kwargs]
    if len(args) != 2 or (args[0] is cur) == (args[1] is cur):
        return None
    if any(k not in ("other",) for k in n.kwargs) or (n.kwargs.get("alpha", 1) != 1):
        return None
    return (args[1], True) if args[0] is cur else (args[0], False)


def _coord_term(gm: fx.GraphModule, v, out: tuple) -> tuple[torch.Tensor, Any] | None:
    """(coord_weight [K, 5], pose) when ``v`` is a 1x1 conv of coordinate_features(pose, 2H, 2W)."""
    if not isinstance(v, fx.Node):
        return None
    c = _conv(gm, v)
    if c is None or c.transposed or c.weight is None or c.bias is not None or c.bias_runtime:
        return None
    if tuple(c.weight.shape) != (out[1], COORD_FEATURES, 1, 1) or c.stride != (1, 1) or \
            c.padding not in ((0, 0), "valid") or c.groups != 1 or c.dilation != (1, 1):
        return None
    f = c.input
    if not (isinstance(f, fx.Node) and f.op == "call_function" and f.target is coordinate_features):
        return None
    fs = _shape(f)
    if fs is None or fs[1:] != (COORD_FEATURES, out[2], out[3]) or fs[0] not in (1, out[0]):
        return None
    pose = f.args[0] if f.args else f.kwargs.get("pose")
    ps = _shape(pose)
    if ps is None or len(ps) != 2 or ps[1] != 2:
        return None
    return c.weight, pose


def _noise_term(v, out: tuple, chain: set, memo: dict) -> tuple[Any, _Operand] | None:
    """(noise, strength) when ``v`` is noise [N|1, 1, 2H, 2W] (times a per-channel strength)."""
    def is_noise(t):
        s = _shape(t)
        if s is None or _depends_on(t, chain, memo):
            return False
        return s in ((out[2], out[3]), (1, out[2], out[3])) or (
            len(s) == 4 and s[1:] == (1, out[2], out[3]) and s[0] in (1, out[0]))

    if is_noise(v):
        return v, _Operand(torch.tensor(1.0), None, 1, 1)
    if isinstance(v, fx.Node) and _is_call(v, _MUL, {"mul"}) and len(v.args) == 2 and not v.kwargs:
        a, b = v.args
        for noise, strength in ((a, b), (b, a)):
            if is_noise(noise):
                op, _ = _per_channel(strength, out, chain, memo)
                if op is not None and op.rows == 1:
                    return noise, op
    return None


def _match(gm: fx.GraphModule, conv: _Conv, features: set[str] | None) -> tuple[_Match | None, str]:
    """The longest fusable run starting at ``conv``, or why there is none."""
    memo: dict = {}
    w = conv.weight
    if conv.transposed:
        kind = "transpose4x4"
        if w is None:
            return None, "its weight is computed per call"
        if tuple(w.shape[2:]) != (4, 4) or conv.stride != (2, 2) or conv.padding != (1, 1):
            return None, (f"ConvTranspose2d kernel {_dims(tuple(w.shape[2:]))}, stride "
                          f"{_dims(conv.stride)}, padding {_dims(conv.padding)}; the kernel's is "
                          "kernel 4, stride 2, padding 1")
        if conv.output_padding != (0, 0) or conv.dilation != (1, 1) or conv.groups != 1 \
                or conv.padding_mode != "zeros" or conv.extra:
            return None, "ConvTranspose2d with output padding, dilation, groups or output_size"
    else:
        kind = "upsample3x3"
        if w is None:
            return None, "its weight is computed per call (e.g. a grouped per-sample modulated conv)"
        if tuple(w.shape[2:]) != (3, 3):
            return None, (f"a {w.shape[2]}x{w.shape[3]} conv; the kernel fuses a 3x3 after a nearest "
                          "x2 upsample, or a 4x4 stride-2 transposed conv")
        if conv.stride != (1, 1) or conv.padding not in ((1, 1), "same") or conv.dilation != (1, 1) \
                or conv.groups != 1 or conv.padding_mode != "zeros":
            return None, (f"3x3 conv with stride {_dims(conv.stride)}, padding {_dims(conv.padding)}, "
                          f"dilation {_dims(conv.dilation)}, groups {conv.groups}, "
                          f"{conv.padding_mode} padding; the kernel's is 1, 1, 1, 1, zeros")
    if w.dim() != 4 or not w.is_floating_point():
        return None, "an unusual weight"
    if conv.bias_runtime:
        return None, "its bias is computed per call"
    out = _shape(conv.node)
    if out is None or len(out) != 4:
        return None, "its output is not [N, K, H, W]"

    def in_scale_of(t):
        """(x, operand) when t = x * s (s per input channel, out of place, t used once)."""
        if not (isinstance(t, fx.Node) and _is_call(t, _MUL - {operator.imul}, {"mul"})
                and len(t.users) == 1 and len(t.args) == 2 and not t.kwargs):
            return None
        a, b = t.args
        for x, s in ((a, b), (b, a)):
            xs = _shape(x)
            if xs is not None and xs == _shape(t) and len(xs) == 4:
                op, _ = _per_channel(s, xs, set(), memo)
                if op is not None:
                    return x, op
        return None

    pre: list[fx.Node] = []
    x, scale_in = conv.input, None
    if kind == "upsample3x3":
        found = in_scale_of(x)
        if found is not None:
            pre.append(x)
            x, scale_in = found
        up = _upsample(gm, x)
        if up is None:
            return None, "no x2 upsample before it; the kernel fuses x2 up-convolutions only"
        if up[1]:
            return None, up[1]
        pre.append(x)
        x = up[0]
        if scale_in is None:
            found = in_scale_of(x)
            if found is not None:
                pre.append(x)
                x, scale_in = found
    else:
        found = in_scale_of(x)
        if found is not None:
            pre.append(x)
            x, scale_in = found
    xs = _shape(x)
    if xs is None or len(xs) != 4 or out != (xs[0], out[1], 2 * xs[2], 2 * xs[3]):
        return None, "its output is not twice its input's size"

    m = _Match(kind, conv, x, list(reversed(pre)) + [conv.node], conv.node)
    ep = _Epilogue(m, out[1], out[0])
    if scale_in is not None:
        ep.put("in_scale", scale_in, width=xs[1])
    if conv.bias is not None:
        ep.put("bias", _Operand(conv.bias.detach().float(), None, 1, out[1]))
        ep.phase = 2
        m.terms.append("bias")

    best = [_snapshot(m, ep)]
    chain = set(m.nodes)
    cur = conv.node
    while True:
        users = [u for u in cur.users if not _meta_use(u)]
        if len(users) != 1:
            if len(users) > 1:
                m.stop = f"its output is used {len(users)} times"
            break
        u = users[0]
        if u.op == "output":
            break
        if _shape(u) != out:
            m.stop = f"{_describe(gm, u)}, which changes the shape"
            break
        if u.meta.get("t2v_dtype") != cur.meta.get("t2v_dtype"):
            m.stop = f"{_describe(gm, u)}, which changes the dtype"
            break
        why = _step(gm, u, cur, ep, chain, memo, out)
        if why:
            m.stop = why
            break
        m.nodes.append(u)
        chain.add(u)
        m.end = cur = u
        best.append(_snapshot(m, ep))
    # the longest prefix whose intermediates nothing outside the run still needs
    stop = m.stop
    for snap in reversed(best):
        cand = _restore(snap)
        if _escapes(gm.graph, cand):
            stop = "an intermediate is used elsewhere"
            continue
        if features is not None:
            need = _needs(cand) - features
            if need:
                return None, f"needs kernel feature(s) {', '.join(sorted(need))}"
        if cand.end is not m.end:
            cand.stop = stop
        else:
            cand.stop = m.stop
        return cand, ""
    return None, "an intermediate is used elsewhere"


def _snapshot(m: _Match, ep: _Epilogue):
    return (copy.copy(m), dict(m.consts), dict(m.runtime), set(m.negate), list(m.terms),
            list(m.nodes), ep.phase)


def _restore(snap) -> _Match:
    m, consts, runtime, negate, terms, nodes, _ = snap
    m = copy.copy(m)
    m.consts, m.runtime, m.negate, m.terms, m.nodes = consts, runtime, negate, terms, nodes
    m.end = nodes[-1]
    return m


def _needs(m: _Match) -> set[str]:
    need = set()
    if m.kind != "upsample3x3":
        need.add("kind")
    for slot in ("in_scale", "out_scale", "noise"):
        if slot in m.consts or slot in m.runtime:
            need.add(slot)
    if m.gain != 1.0:
        need.add("gain")
    if m.clamp is not None:
        need.add("clamp")
    need.add("activation:" + m.activation)
    return need


def _meta_use(u: fx.Node) -> bool:
    """A use of a node's shape only (``x.shape``, ``x.size()``, ``x.dim()``, ``x.device``)."""
    return ((u.op == "call_function" and u.target is getattr and len(u.args) >= 2
             and u.args[1] in _META_ATTRS)
            or (u.op == "call_method" and u.target in _META_METHODS))


def _escapes(graph: fx.Graph, m: _Match) -> bool:
    """Whether an intermediate of the run (after the conv) would still be needed once the run's
    end is replaced: a shape read that feeds something outside the run."""
    inner = set(m.nodes[m.nodes.index(m.conv.node):-1])
    if not any(len(n.users) > 1 for n in inner):
        return False
    keep = set(m.runtime.values())
    dead: set[fx.Node] = {m.end}
    for n in reversed(list(graph.nodes)):
        if n is m.end or n.op in ("placeholder", "output") or n in keep:
            continue
        users = list(n.users)
        if n in inner:
            if not all(u in dead for u in users):
                return True
            dead.add(n)
        elif users and all(u in dead for u in users) and not n.is_impure():
            dead.add(n)
    return False


def _step(gm, u: fx.Node, cur: fx.Node, ep: _Epilogue, chain: set, memo: dict, out: tuple) -> str:
    """Put op ``u`` (applied to ``cur``) into the epilogue; '' when placed, else why not."""
    m = ep.m
    what = _describe(gm, u)
    # additions / subtractions
    if _is_call(u, _ADD | _SUB, {"add", "add_", "sub", "sub_"}):
        b = _binary(u, cur)
        if b is None:
            return f"{what} of the conv's output with itself or with an alpha"
        other, first = b
        sub = ((u.op == "call_function" and u.target in _SUB)
               or (u.op == "call_method" and u.target.startswith("sub")))
        if sub and not first:
            return "a subtraction from a term (the kernel adds the conv's output)"
        if not sub:
            coord = _coord_term(gm, other, out)
            if coord is not None:
                if _depends_on(coord[1], chain, memo):
                    return "a coordinate term whose pose depends on the conv's output"
                why = ep.additive_term("coord")
                if why:
                    return why
                m.coord_weight = coord[0].detach().float()
                pose = coord[1]
                if "t2v_const" in pose.meta:
                    m.consts["pose"] = pose.meta["t2v_const"].float()
                else:
                    m.runtime["pose"] = pose
                m.terms.append("coord")
                return ""
            noise = _noise_term(other, out, chain, memo)
            if noise is not None:
                why = ep.additive_term("noise")
                if why:
                    return why
                nz, strength = noise
                if "t2v_const" in nz.meta:
                    m.consts["noise"] = nz.meta["t2v_const"].float()
                else:
                    m.runtime["noise"] = nz
                ep.put("noise_weight", strength)
                m.terms.append("noise")
                return ""
        op, why = _per_channel(other, out, chain, memo)
        if op is None:
            s = _shape(other)
            return f"{what} of {why}" if s is None or len(s) < 4 or s[2:] == (1, 1) else \
                f"{what} of a {list(s)} tensor (not per-channel)"
        return ep.add(op, sub, what)
    if _is_call(u, _MUL, {"mul", "mul_"}):
        b = _binary(u, cur)
        if b is None:
            return f"{what} of the conv's output with itself"
        op, why = _per_channel(b[0], out, chain, memo)
        if op is None:
            s = _shape(b[0])
            return f"{what} by {why}" if s is None or len(s) < 4 or s[2:] == (1, 1) else \
                f"{what} by a {list(s)} tensor (not per-channel)"
        if ep.phase == 7:
            if op.node is None and op.const.numel() == 1:
                ep.phase = 8
                m.gain = float(op.const.reshape(()).item())
                m.terms.append("gain")
                return ""
            return f"a per-channel {what} after the activation"
        return ep.multiply(op, what)
    if u.op == "call_module" and isinstance(gm.get_submodule(u.target), nn.BatchNorm2d):
        bn = gm.get_submodule(u.target)
        if not _same_forward(bn, nn.BatchNorm2d) or bn.training or bn.running_mean is None:
            return "a BatchNorm2d that normalises with the batch's statistics (training mode)"
        if ep.phase >= 5:
            return "a BatchNorm2d after a scale or shift"
        if bn.num_features != out[1]:
            return "a BatchNorm2d of another width"
        ep.phase = 6
        ep.used |= {"scale", "shift"}
        m.consts["bn"] = bn          # folded when the node is built
        m.terms.append("bn")
        return ""
    act = _activation(gm, u, cur)
    if act is not None:
        name, slope = act
        if name is None:
            return slope
        if ep.phase >= 7:
            return f"an activation ({name}) after the activation or the gain"
        m.activation, m.slope = name, slope
        ep.phase = 7
        m.terms.append(name)
        return ""
    if _is_call(u, _CLAMP, {"clamp", "clamp_", "clip", "clip_"}):
        a = _args(u, ["input", "min", "max"], {"min": None, "max": None})
        lo, hi = _number(a["min"]), _number(a["max"])
        if a["input"] is not cur or lo is None or hi is None or lo != -hi or hi < 0:
            return "a clamp that is not symmetric around 0"
        if ep.phase >= 9:
            return "a second clamp"
        m.clamp = hi
        ep.phase = 9
        m.terms.append("clamp")
        return ""
    return f"{what} is not a per-channel op the kernel computes"


def _activation(gm, u: fx.Node, cur: fx.Node) -> tuple[str | None, Any] | None:
    """(name, slope) of an activation applied to ``cur``; (None, why) for an activation with
    arguments the kernel does not take; None when ``u`` is no activation."""
    if u.op == "call_module":
        mod = gm.get_submodule(u.target)
        name = _ACTIVATION_MODULES.get(type(mod))
        if name is None:
            return None
        return name, float(getattr(mod, "negative_slope", 0.0))
    if u.op == "call_function" and u.target in _ACTIVATION_FUNCTIONS:
        name = _ACTIVATION_FUNCTIONS[u.target]
        if not u.args or u.args[0] is not cur:
            return None, "an activation of another input"
        if name == "leaky_relu":
            a = _args(u, ["input", "negative_slope", "inplace"], {"negative_slope": 0.01})
            slope = _number(a["negative_slope"])
            if slope is None:
                return None, "a leaky ReLU with a slope computed per call"
            return name, slope
        return name, 0.0
    if u.op == "call_method" and u.target in _ACTIVATION_METHODS:
        if len(u.args) != 1 or u.kwargs or u.args[0] is not cur:
            return None, "an activation with arguments"
        return _ACTIVATION_METHODS[u.target], 0.0
    return None


# --------------------------------------------------------------------------------------------
# Rewriting a scope
# --------------------------------------------------------------------------------------------


def _convs(gm: fx.GraphModule) -> list[_Conv]:
    """The convolutions of a scope that count as blocks (1x1 convs do not: they are the
    coordinate terms, heads, toRGBs)."""
    out = []
    for n in gm.graph.nodes:
        c = _conv(gm, n)
        if c is None:
            continue
        ks = tuple(c.weight.shape[2:]) if c.weight is not None else None
        if not c.transposed and ks == (1, 1):
            continue
        out.append(c)
    return out


def _build(m: _Match, dtype: torch.dtype, pack: bool) -> FusedUpConv:
    consts = dict(m.consts)
    bn = consts.pop("bn", None)
    if bn is not None:
        if pack:
            from t2v_rt.kernels import fold_batchnorm

            scale, shift = fold_batchnorm(bn)
        else:       # the same fold, without importing the kernels (plan: Triton may be absent)
            mean = bn.running_mean.double()
            scale = torch.rsqrt(bn.running_var.double() + bn.eps)
            if bn.weight is not None:
                scale = scale * bn.weight.detach().double()
            shift = -mean * scale + (bn.bias.detach().double() if bn.bias is not None else 0)
        consts["scale"], consts["shift"] = scale.float(), shift.float()
    inputs = list(m.runtime)
    return FusedUpConv(m.kind, m.conv.weight, dtype, activation=m.activation, slope=m.slope,
                       gain=m.gain, clamp=m.clamp, consts=consts, inputs=inputs,
                       negate=set(m.negate), coord_weight=m.coord_weight, pattern=m.pattern,
                       pack=pack)


def _rewrite_scope(gm: fx.GraphModule, scope: str, dtype, pack: bool, features,
                   report: FusionReport, covered: set[int], log) -> int:
    """Match and replace every run in ``gm``; report each conv (module convs into
    ``covered``); how many were fused."""
    done: set[fx.Node] = set()
    fused = 0
    while True:
        for conv in _convs(gm):
            if conv.node in done:
                continue
            done.add(conv.node)
            if conv.module is not None:
                covered.add(id(conv.module))
            name = _block_name(scope, gm, conv.node)
            m, why = _match(gm, conv, features)
            if m is None:
                report.blocks.append(BlockReport(name, False, _found(conv), why))
                if why.startswith("needs kernel feature"):
                    log(f"triton: not fused: {name}: {why}")
                continue
            mod = _build(m, dtype, pack)
            target = f"fused_{fused}"
            while hasattr(gm, target):
                target += "_"
            gm.add_submodule(target, mod)
            graph = gm.graph
            with graph.inserting_before(m.end):
                new = graph.call_module(target, args=(m.x, *m.runtime.values()))
            new.meta = {k: v for k, v in m.end.meta.items() if k != "t2v_const"}
            m.end.replace_all_uses_with(new)
            for node in reversed(m.nodes):
                if not node.users:
                    graph.erase_node(node)
            graph.eliminate_dead_code()
            report.blocks.append(BlockReport(name, True, m.pattern,
                                             f"then in PyTorch: {m.stop}" if m.stop else ""))
            fused += 1
            break       # the graph changed: list its convs again
        else:
            break
    if fused:
        gm.graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return fused


def _found(conv: _Conv) -> str:
    if conv.weight is None:
        return "conv"
    k = tuple(conv.weight.shape[2:])
    return f"{'convtranspose' if conv.transposed else 'conv'}{k[0]}x{k[1]}"


def _block_name(scope: str, gm: fx.GraphModule, n: fx.Node) -> str:
    if n.op == "call_module":
        target = n.target[2:] if scope == "" and n.target.startswith("g.") else n.target
        return f"{scope}.{target}" if scope else target
    return f"{scope or 'synthesize'}:{n.name}"


def _trace(module: nn.Module, args: tuple, kwargs: dict, seed: int,
           tracer: _Tracer) -> tuple[fx.GraphModule, list, dict]:
    """Trace ``module`` for a call with ``args``/``kwargs`` (its non-tensor arguments as
    constants); check that the graph computes what the module computed; probe shapes and
    constants. -> (graph module, the call's values in parameter order, the constants)."""
    sig = inspect.signature(module.forward)
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.KEYWORD_ONLY)
           for p in sig.parameters.values()):
        raise _NotTraceable("forward takes *args, **kwargs or keyword-only arguments")
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as e:
        raise _NotTraceable(f"its recorded call does not bind ({e})") from None
    bound.apply_defaults()
    consts = {k: v for k, v in bound.arguments.items() if not isinstance(v, torch.Tensor)}
    try:
        graph = tracer.trace(module, concrete_args=consts or None)
        gm = fx.GraphModule(tracer.root, graph)
    except Exception as e:  # noqa: BLE001 - whatever fx cannot trace is "not a candidate"
        first = str(e).splitlines()[0][:120] if str(e) else ""
        raise _NotTraceable(f"{type(e).__name__}: {first}") from None
    values = [bound.arguments[p] for p in sig.parameters]
    const = _const_nodes(gm.graph)
    try:
        got = _seeded(lambda: _Probe(gm, const).run(*values), seed)
        want = _seeded(lambda: module(*args, **kwargs), seed)
    except Exception as e:  # noqa: BLE001
        raise _NotTraceable(f"the traced graph does not run ({type(e).__name__}: "
                            f"{str(e)[:100]})") from None
    if not _close(got, want):
        raise _NotTraceable("the traced graph does not compute what forward does (control flow "
                            "torch.fx cannot see)")
    return gm, values, consts


# --------------------------------------------------------------------------------------------
# The pass
# --------------------------------------------------------------------------------------------


def _kernel_features() -> set[str] | None:
    """What the installed kernel takes (parameters and activations); None when unknown."""
    try:
        from t2v_rt import kernels

        params = set(inspect.signature(kernels.upsample_conv_act).parameters)
        return params | {f"activation:{a}" for a in kernels.ACTIVATIONS}
    except Exception:  # noqa: BLE001
        return None


def _run(generator: nn.Module, dtype: torch.dtype, pack: bool, seed: int, log) -> FusedGenerator:
    log = log or (lambda msg: None)
    g = copy.deepcopy(generator).eval()
    report = FusionReport()
    features = _kernel_features() if pack else None
    covered: set[int] = set()                       # conv modules some scope reported
    convs: list[tuple[nn.Module, str, str]] = []    # convs run: (module, path, untraced ancestor)
    with torch.no_grad(), _analysis():
        w, f = sample_inputs(g, 2, seed)
        records = _record_calls(g, w, f, seed)

        def visit(parent: nn.Module, name: str, module: nn.Module, qual: str, untraced: str):
            rec = records.get(id(module))
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                if rec is not None and (isinstance(module, nn.ConvTranspose2d)
                                        or module.kernel_size != (1, 1)):
                    convs.append((module, qual, untraced))
                return
            if rec is not None and not _Tracer().is_leaf_module(module, qual):
                try:
                    gm, _, consts = _trace(module, rec[0], rec[1], seed, _Tracer())
                except _NotTraceable as e:
                    report.untraced.append((qual, str(e)))
                    untraced = qual
                else:
                    if _rewrite_scope(gm, qual, dtype, pack, features, report, covered, log):
                        setattr(parent, name, FusedScope(gm, module, consts))
                        report.scopes.append(qual)
                    return
            for child_name, child in list(module.named_children()):
                visit(module, child_name, child, f"{qual}.{child_name}", untraced)

        for child_name, child in list(g.named_children()):
            visit(g, child_name, child, child_name, "")

        # synthesize itself, every module a leaf: runs written there (a last conv -> tanh)
        root = _Synthesize(g)
        synth_graph, root_why = None, ""
        try:
            gm, _, _ = _trace(root, (w, f), {}, seed, _Tracer(all_leaves_but=root))
        except _NotTraceable as e:
            report.untraced.append(("", str(e)))
            root_why = "synthesize"
        else:
            if _rewrite_scope(gm, "", dtype, pack, features, report, covered, log):
                synth_graph = gm
                report.scopes.append("")
        for module, qual, untraced in convs:
            if id(module) not in covered:
                kind = "convtranspose" if isinstance(module, nn.ConvTranspose2d) else "conv"
                k = module.kernel_size
                report.blocks.append(BlockReport(qual, False, f"{kind}{k[0]}x{k[1]}",
                                                 f"{untraced or root_why or 'its caller'} cannot be "
                                                 "traced by torch.fx"))
    return FusedGenerator(g, synth_graph, report, dtype)


def fuse(generator: nn.Module, dtype: torch.dtype = torch.float32, *, seed: int = 0,
         log=None) -> FusedGenerator:
    """A fused deep copy of ``generator`` (any :class:`~t2v_rt.generators.interface.VideoGenerator`,
    on the device it runs on): each matched run on :func:`t2v_rt.kernels.upsample_conv_act`
    with its weights packed in ``dtype`` (the body's: fp16 / bf16 on a GPU, fp32 under the
    interpreter); ``.report`` says what was fused. Not verified: see :func:`verify`."""
    return _run(generator, dtype, True, seed, log)


def plan(generator: nn.Module, *, seed: int = 0) -> FusionReport:
    """What :func:`fuse` would fuse, without Triton (nothing is packed or run on the kernels):
    ``doctor --model``."""
    return _run(generator, torch.float32, False, seed, None).report


def fuse_module(module: nn.Module, *args, dtype: torch.dtype = torch.float32, seed: int = 0,
                pack: bool = True, **kwargs) -> tuple[nn.Module, FusionReport]:
    """One module traced as one scope for a call with ``args``/``kwargs`` (tests, plugins
    checking their blocks): (a fused deep copy, or the copy itself when nothing was fused; the
    report). A module torch.fx cannot trace is returned unchanged, with the reason in
    ``report.untraced``. The module's training mode is kept (a BatchNorm in training mode
    normalises with the batch's statistics and is not folded)."""
    module = copy.deepcopy(module)
    report = FusionReport()
    with torch.no_grad(), _analysis():
        try:
            gm, _, consts = _trace(module, args, kwargs, seed, _Tracer())
        except _NotTraceable as e:
            report.untraced.append((type(module).__name__, str(e)))
            return module, report
        if _rewrite_scope(gm, "", dtype, pack, _kernel_features() if pack else None, report,
                          set(), lambda msg: None):
            report.scopes.append(type(module).__name__)
            return FusedScope(gm, module, consts), report
    return module, report


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


@dataclass
class Verification:
    max_error: float
    tolerance: float
    scale: float
    seed: int
    frames: int

    def line(self) -> str:
        return (f"max |fused - eager| {self.max_error:.2g} <= {self.tolerance:g} x {self.scale:.3g} "
                f"on {self.frames} random frames (seed {self.seed})")


def verify(eager: nn.Module, fused: nn.Module, dtype: torch.dtype = torch.float32, *,
           frames: int = 2, seed: int | None = None, tolerance: float | None = None) -> Verification:
    """Run ``eager`` (fp32) and ``fused`` (its PyTorch parts under autocast in ``dtype`` when
    not fp32, as the backend runs it) on fresh random inputs; :class:`CompileError` with the
    numbers and the seed if the frames differ by more than the tolerance times
    max(1, max |eager frames|).

    The tolerance (unless given): fp32 :data:`TOLERANCES`; fp16 / bf16 the larger of
    :data:`TOLERANCES` and twice what eager PyTorch itself loses under autocast in that dtype
    on the same inputs (some models lose more than others in bf16: 0.02 to 0.09 on the
    built-in tiny presets; the fused body must not lose much more than PyTorch does)."""
    seed = secrets.randbelow(2**31) if seed is None else seed
    name = DTYPE_NAMES.get(dtype, str(dtype))
    with torch.no_grad():
        w, f = sample_inputs(eager, frames, seed)
        dev = w.device.type
        want = _seeded(lambda: eager.synthesize(w, f), seed).float()
        scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
        tol = tolerance
        if tol is None:
            tol = TOLERANCES[dtype]
            if dtype != torch.float32:
                def autocast_eager():
                    with torch.autocast(dev, dtype, cache_enabled=False):
                        return eager.synthesize(w, f)

                own = float((_seeded(autocast_eager, seed).float() - want).abs().max()) / scale
                if math.isfinite(own):
                    tol = max(tol, 2 * own)

        def run():
            with torch.autocast(dev, dtype, enabled=dtype != torch.float32, cache_enabled=False):
                return fused.synthesize(w, f)

        try:
            got = _seeded(run, seed).float()
        except Exception as e:  # noqa: BLE001 - a fused graph that fails is refused the same way
            raise CompileError(
                f"triton: the fused generator fails on random inputs (seed {seed}): "
                f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}; use "
                "--backend torch, and report it") from None
    if got.shape != want.shape:
        raise CompileError(f"triton: the fused generator's frames are {list(got.shape)}, eager "
                           f"PyTorch's {list(want.shape)} (seed {seed}); use --backend torch")
    err = float((got - want).abs().max()) if got.numel() else 0.0
    if not math.isfinite(err) or err > tol * scale:
        raise CompileError(
            f"triton: the fused generator differs from eager PyTorch: max |error| {err:.3g} > "
            f"tolerance {tol:.3g} x {scale:.3g} ({name}) on {frames} random frames (seed {seed}); "
            "refusing it. Use --backend torch (or another precision), and report it")
    return Verification(err, tol, scale, seed, frames)


__all__ = ["BlockReport", "FusedGenerator", "FusedScope", "FusedUpConv", "FusionReport",
           "TOLERANCES", "Verification", "fuse", "fuse_module", "plan", "sample_inputs", "verify"]
