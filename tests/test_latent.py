"""The torch-free per-video latent equals PyTorch's ``torch.randn`` bit for bit."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numpy as np
import pytest
import torch

from t2v_rt.generators import latent as L
from t2v_rt.generators.config import GeneratorConfig
from t2v_rt.generators.latent import standard_normal
from t2v_rt.models.shapes.scene import latent_from_seed

EDGE_SEEDS = [0, 1, 2, 7, 42, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 5, 2**53 + 1, 2**63 - 1]
RANDOM_SEEDS = [int(s) for s in np.random.default_rng(20240615).integers(0, 2**63, 200)]
SIZES = [1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 60, 64, 100, 512, 1024, 1025]


def torch_randn(seed: int, n: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g, dtype=torch.float32).numpy()


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.float32 and a.shape == b.shape and \
        np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("n", SIZES)
def test_bitwise_equal_to_torch(n):
    for seed in EDGE_SEEDS + RANDOM_SEEDS:
        got = standard_normal(seed, n)
        want = torch_randn(seed, n)
        assert same_bits(got, want), (seed, n, np.flatnonzero(got != want))


def test_every_size_up_to_4096_and_negative_seeds():
    for n in list(range(1, 80)) + [1023, 2047, 2048, 4095, 4096]:
        for seed in (n, 2**63 - n):
            assert same_bits(standard_normal(seed, n), torch_randn(seed, n)), (seed, n)
    for seed in (-1, -(2**63), -123456789):
        assert same_bits(standard_normal(seed, 40), torch_randn(seed, 40)), seed
    assert same_bits(standard_normal(np.int64(5), 20), torch_randn(5, 20))


def test_only_low_32_bits_of_the_seed_matter():
    assert same_bits(standard_normal(2**40 + 9, 33), standard_normal(9, 33))


def test_bad_arguments():
    for seed, n in ((1, 0), (1, -3), (2**64, 4), (-(2**63) - 1, 4)):
        with pytest.raises(ValueError):
            standard_normal(seed, n)
    with pytest.raises(TypeError):
        standard_normal(1.5, 4)


def test_threads_get_their_own_streams():
    seeds = list(range(64))
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda s: standard_normal(s, 100), seeds))
    for s, g in zip(seeds, got):
        assert same_bits(g, torch_randn(s, 100))


def test_config_latent_is_numpy_and_equals_torch():
    for dim in (1, 5, 16, 64, 1024):
        cfg = GeneratorConfig(latent_dim=dim)
        for seed in (0, 3, 2**62 + 11):
            z = cfg.latent(seed)
            assert isinstance(z, np.ndarray) and z.shape == (dim,)
            assert same_bits(z, torch_randn(seed, dim))


def test_shapes_world_latent_equals_numpy_version():
    for seed in list(range(40)) + [2**31, 2**63 - 1]:
        for dim in (16, 4, 40):
            assert same_bits(latent_from_seed(seed, dim).numpy(), standard_normal(seed, dim))


def test_module_does_not_import_torch():
    code = ("import sys, t2v_rt.generators.latent as m; m.standard_normal(3, 16); "
            "m.standard_normal(3, 5); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the float32 FMA emulation, against exact rational arithmetic --------------------------------

def round_f32(v: Fraction) -> np.float32:
    """Exact round-half-even of a rational to float32 (normal range)."""
    if v == 0:
        return np.float32(0.0)
    sign, v = (-1 if v < 0 else 1), abs(v)
    e = v.numerator.bit_length() - v.denominator.bit_length()
    while v >= Fraction(2) ** (e + 1):
        e += 1
    while v < Fraction(2) ** e:
        e -= 1
    q = round(v / Fraction(2) ** (e - 23))            # 24 significant bits, ties to even
    return np.float32(sign * q * Fraction(2) ** (e - 23))


def exact_fma(a, b, c) -> np.float32:
    return round_f32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def test_fma_rounds_once():
    f = np.float32
    # a * b is exactly halfway between two float32 values; c too small for float64 to keep:
    # a float64 sum would round to the midpoint and then to even, fma must not
    m = f(1 + 2.0**-12)
    cases = [(m, m, f(2.0**-60)), (m, m, f(-(2.0**-60))), (-m, m, f(2.0**-60)),
             (-m, m, f(-(2.0**-60))), (m, m, f(0.0))]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2000)).astype(np.float32)
    x[2, :500] *= f(2.0**-30)
    cases += list(zip(*x))
    for a, b, c in cases:
        got = L._fma(np.array([a], np.float32), np.float32(b), np.array([c], np.float32))[0]
        want = exact_fma(a, b, c)
        assert got.view(np.uint32) == want.view(np.uint32), (a, b, c, got, want)
    # scalar operands (constants), as the kernel passes them
    got = L._fma(m, np.array([m, -m, m], np.float32), np.float32(2.0**-60))
    assert [g.view(np.uint32) for g in got] == \
        [exact_fma(m, b, 2.0**-60).view(np.uint32) for b in (m, -m, m)]
    # the midpoint cases really are ones a plain float64 sum gets wrong
    naive = np.float32(float(m) * float(m) + 2.0**-60)
    assert naive != exact_fma(m, m, f(2.0**-60))
