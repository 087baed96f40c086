"""The per-video latent without PyTorch: numpy reproduces, bit for bit,
``torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)``.

:func:`standard_normal` returns exactly the float32 values that PyTorch's CPU generator gives on
Linux x86-64 (the official wheels, 2.4 .. 2.13, built with GCC; CPU capability AVX2 or AVX512,
i.e. every x86-64 CPU of the last decade). What PyTorch does, read from its source and checked
against the installed build:

* **Seeding.** ``manual_seed(seed)`` builds ``mt19937(seed)``, which keeps only the low 32 bits
  of the 64-bit seed and runs the reference ``init_genrand`` on them. numpy's legacy
  ``RandomState(seed32)`` runs the same initialisation, and its ``randint`` over the full uint32
  range returns the raw tempered MT19937 words in order (one word per value; the legacy streams
  of ``RandomState`` are frozen by numpy's compatibility policy).
* **n >= 16** (contiguous float32: ``normal_fill``). One 32-bit word per element gives a
  uniform ``u = (w & 0xFFFFFF) * 2**-24``; Box-Muller runs on blocks of 16: the first 8 are
  ``u1``, the next 8 ``u2``; ``radius = sqrt(-2 * log(1 - u1))``, ``theta = 2 pi u2`` and the
  block becomes ``radius * cos(theta)`` then ``radius * sin(theta)``. When ``n % 16 != 0`` the
  words ``n .. n + 15`` are drawn as well and the last 16 elements are recomputed from them (the
  words between the last full block and ``n`` are drawn but unused). The float32 math is
  PyTorch's AVX2 kernel (``NormalFill16`` / ``normal_fill_16_AVX2``, which the AVX512 dispatch
  uses too): ``log256_ps`` and ``sincos256_ps`` from ``avx_mathfun.h`` (Cephes polynomials in
  float32), compiled by GCC with multiply-adds contracted into FMA instructions. Those exact
  operations are replayed here: plain float32 operations with numpy float32 (IEEE, correctly
  rounded), and each FMA in float64, which holds the product exactly, with the one sum that
  float64 might round twice (a result exactly halfway between two float32 values) corrected.
* **n < 16** (``at::normal_distribution<double>``). Each pair of elements takes four words:
  ``u1`` and ``u2`` are 53-bit doubles from two words each (the first word is the high half);
  ``r = sqrt(-2 * log1p(-u2))``, ``theta = 2 pi u1``; the element is ``r * cos(theta)`` and the
  next one ``r * sin(theta)`` (the generator caches it), all in double, then cast to float32.
  Python's ``math`` calls the same C library functions as PyTorch does.

PyTorch itself is not the same everywhere, and this module follows the build above: the 2.4.1
and 2.13 wheels compile the kernel into the same sequence of float32 operations and FMAs (read
from their machine code), and ``_box_muller_16`` equals the 2.13 kernel, called directly, on
every one of the 2**24 possible values of ``u1`` and of ``u2``. PyTorch's DEFAULT CPU capability
(x86 without AVX2, or ``ATEN_CPU_CAPABILITY=default``; builds for other CPUs, such as aarch64,
have no AVX2 kernel either) computes n >= 16 with the C library's ``logf``/``cosf``/``sinf``
instead, and differs from this in about 4 elements in 10, by a few float32 ulps. A build whose
compiler kept the AVX2 kernel's multiplies and adds apart (no FMA contraction) would differ in
about 1 element in 100, by an ulp. The n < 16 path does not depend on the CPU capability (it
calls the platform's C library, as ``math`` does).

numpy only; importing it does not import torch.
"""

from __future__ import annotations

import math
import operator
import threading

import numpy as np

__all__ = ["standard_normal"]

_F32 = np.float32
_U32 = np.uint32

# One legacy MT19937 stream, re-seeded for every call (1.5 us, against 150 us for a new one).
_RS = np.random.RandomState(0)
_RS_LOCK = threading.Lock()


def _words(seed32: int, k: int) -> np.ndarray:
    """The first ``k`` raw outputs of MT19937 seeded by ``init_genrand(seed32)``: [k] uint32."""
    with _RS_LOCK:
        _RS.seed(seed32)
        return _RS.randint(0, 2**32, size=k, dtype=np.uint32)


# --- float32 arithmetic as the AVX2 kernel does it ------------------------------------------

_HALF_ULP32 = np.uint64(1 << 28)        # in a float64's mantissa: half a float32 ulp
_BELOW_ULP32 = np.uint64((1 << 29) - 1)  # the 29 mantissa bits a float32 drops


def _fma(a, b, c) -> np.ndarray:
    """float32 ``fma(a, b, c)``: ``a * b + c`` rounded once.

    ``a * b`` of two float32 values is exact in float64; ``p + c`` in float64 is rounded at most
    once more, which can change the float32 result only when the float64 sum lands exactly
    halfway between two float32 values while the exact sum does not: those elements are moved
    one float64 step toward the exact sum (TwoSum's error term) before rounding to float32.
    Every value here is far from float32's subnormal and overflow ranges."""
    p = np.multiply(a, b, dtype=np.float64)
    s = p + np.asarray(c, dtype=np.float64)
    out = s.astype(_F32)
    tie = (s.view(np.uint64) & _BELOW_ULP32) == _HALF_ULP32
    if tie.any():
        p, s = np.broadcast_to(p, s.shape)[tie], s[tie]
        c = np.broadcast_to(np.asarray(c, dtype=np.float64), tie.shape)[tie]
        pv = s - c
        err = (p - pv) + (c - (s - pv))
        s = np.where(err > 0, np.nextafter(s, np.inf),
                     np.where(err < 0, np.nextafter(s, -np.inf), s))
        out[tie] = s.astype(_F32)
    return out


def _c(x: float) -> np.float32:
    return _F32(x)


# log256_ps (Cephes logf)
_SQRTHF = _c(0.707106781186547524)
_LOG_P = [_c(v) for v in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                          1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                          3.3333331174e-1)]
_LOG_Q1 = _c(-2.12194440e-4)
_LOG_Q2 = _c(0.693359375)
# sincos256_ps (Cephes sinf/cosf)
_FOPI = _c(1.27323954473516)
_DP1, _DP2, _DP3 = _c(-0.78515625), _c(-2.4187564849853515625e-4), _c(-3.77489497744594108e-8)
_COS_P = [_c(v) for v in (2.443315711809948e-005, -1.388731625493765e-003, 4.166664568298827e-002)]
_SIN_P = [_c(v) for v in (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1)]
_TWO_PI = _c(2.0 * math.pi)
_ZERO, _HALF, _ONE, _MINUS_ONE, _MINUS_TWO = _c(0.0), _c(0.5), _c(1.0), _c(-1.0), _c(-2.0)
_SIGN = _U32(0x80000000)


def _log(x: np.ndarray) -> np.ndarray:
    """``log256_ps`` for float32 ``x`` in [2**-24, 1] (normal, positive: no special cases)."""
    bits = x.view(_U32)
    e = ((bits >> _U32(23)).astype(np.int32) - 127).astype(_F32) + _ONE
    m = ((bits & _U32(0x807FFFFF)) | _U32(0x3F000000)).view(_F32)     # mantissa in [0.5, 1)
    small = m < _SQRTHF
    x = m + _MINUS_ONE
    e = e - np.where(small, _ONE, _ZERO)
    x = x + np.where(small, m, _ZERO)
    z = x * x
    y = np.full_like(x, _LOG_P[0])
    for p in _LOG_P[1:]:
        y = _fma(y, x, p)
    y = y * x
    y = _fma(y, z, e * _LOG_Q1)
    y = y - z * _HALF
    x = x + y
    return _fma(e, _LOG_Q2, x)


def _sincos(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sincos256_ps`` for float32 ``x`` in [0, 2 pi]: (sin, cos)."""
    sign_sin = x.view(_U32) & _SIGN
    x = np.abs(x)
    j = (x * _FOPI).astype(np.int32)                  # truncation, as cvttps2dq
    j = (j + 1) & ~1
    y = j.astype(_F32)
    sign_sin = sign_sin ^ ((j & 4) << 29).astype(_U32)
    poly = (j & 2) == 0
    x = _fma(y, _DP1, x)
    x = _fma(y, _DP2, x)
    x = _fma(y, _DP3, x)
    sign_cos = ((~(j - 2) & 4) << 29).astype(_U32)
    z = x * x
    half_z = z * _HALF
    yc = _fma(_COS_P[0], z, _COS_P[1])
    yc = _fma(yc, z, _COS_P[2])
    yc = z * yc
    yc = _fma(z, yc, -half_z)
    yc = yc + _ONE
    ys = _fma(_SIN_P[0], z, _SIN_P[1])
    ys = _fma(ys, z, _SIN_P[2])
    ys = z * ys
    ys = _fma(x, ys, x)
    ysin2 = np.where(poly, ys, _ZERO)
    ysin1 = np.where(poly, _ZERO, yc)
    ys = ys - ysin2
    yc = yc - ysin1
    s = ysin1 + ysin2
    c = ys + yc
    return (s.view(_U32) ^ sign_sin).view(_F32), (c.view(_U32) ^ sign_cos).view(_F32)


def _box_muller_16(u: np.ndarray) -> np.ndarray:
    """[B, 16] float32 uniforms in [0, 1) -> [B, 16] float32 normals (PyTorch's NormalFill16)."""
    # (log(1 - u1) <= 0 for all 2**24 values of u1; were it not, NaN would follow, as in torch)
    with np.errstate(invalid="ignore"):
        radius = np.sqrt(_log(_ONE - u[:, :8]) * _MINUS_TWO)
    s, c = _sincos(_TWO_PI * u[:, 8:])
    # fma(n, std = 1, mean = 0): exact, and -0 becomes +0
    return np.concatenate([radius * c + _ZERO, radius * s + _ZERO], axis=1)


def _pairs(words: np.ndarray, n: int) -> np.ndarray:
    """The n < 16 path: ``at::normal_distribution<double>``, two elements per four words."""
    w = [int(v) for v in words]
    out = []
    for i in range(0, len(w), 4):
        u1 = (((w[i] << 32) | w[i + 1]) & ((1 << 53) - 1)) * 2.0**-53
        u2 = (((w[i + 2] << 32) | w[i + 3]) & ((1 << 53) - 1)) * 2.0**-53
        r = math.sqrt(-2.0 * math.log1p(-u2))
        theta = 2.0 * math.pi * u1
        out += [r * math.cos(theta) + 0.0, r * math.sin(theta) + 0.0]
    return np.array(out[:n], dtype=_F32)


def standard_normal(seed: int, n: int) -> np.ndarray:
    """``torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)``,
    bit for bit, without torch: [n] float32.

    ``seed``: an integer PyTorch's ``manual_seed`` takes, in [-2**63, 2**64) (only its low 32
    bits matter); ``n`` >= 1."""
    seed = operator.index(seed)
    n = operator.index(n)
    if not -(2**63) <= seed < 2**64:
        raise ValueError(f"seed must be in [-2**63, 2**64), got {seed}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    seed32 = seed & 0xFFFFFFFF
    if n < 16:
        return _pairs(_words(seed32, 4 * ((n + 1) // 2)), n)
    tail = n % 16
    words = _words(seed32, n + 16 if tail else n)
    u = (words & _U32(0xFFFFFF)).astype(_F32) * _c(2.0**-24)
    full = n - tail
    out = np.empty(n, dtype=_F32)
    if tail:
        blocks = _box_muller_16(np.concatenate([u[:full], u[n:]]).reshape(-1, 16))
        out[:full] = blocks[:-1].reshape(-1)
        out[n - 16:] = blocks[-1]
    else:
        out[:] = _box_muller_16(u.reshape(-1, 16)).reshape(-1)
    return out
