"""pytest-benchmark: one frame batch on each backend, side by side (bundled model).

    pytest bench/test_bench_backends.py --benchmark-only

The same fresh random prompts, seeds and times for every backend; ``python bench/backends.py``
writes the frames/s, the ratios to eager PyTorch and the share of the compute ceiling.
"""

import pytest

from t2v_rt.backends import create_backend
from t2v_rt.compile.export import random_inputs
from t2v_rt.generators.io import load_generator

BACKENDS = {"torch": ("torch", "fp32"), "onnxruntime-fp32": ("onnxruntime", "fp32"),
            "onnxruntime-fp16": ("onnxruntime", "fp16")}


@pytest.fixture(scope="module")
def backends():
    return {k: create_backend(name, precision=p) for k, (name, p) in BACKENDS.items()}


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_frames(benchmark, backends, backend, batch):
    x = random_inputs(load_generator(), batch, batch, 1000 + batch)
    be = backends[backend]
    w = be.style(x["tokens"], x["z"])
    benchmark.extra_info["frames"] = batch
    benchmark(be.frames, w, x["features"])
