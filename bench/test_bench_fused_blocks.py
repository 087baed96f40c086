"""pytest-benchmark: each block of the bundled model, fused kernel vs the cuDNN formulation
(fp16, batch 64; CUDA GPU only). ``python bench/fused_blocks.py`` writes the full comparison
(torch.compile, channels-last, bf16, larger configurations, TFLOP/s, GB/s, roofline share).

    pytest bench/test_bench_fused_blocks.py --benchmark-only
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import kernels_from_source
from fused_blocks import MODELS, blocks, unfused

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="GPU timings; the kernels' CPU correctness is tests/test_kernels.py")
BATCH = 64


@pytest.mark.parametrize("impl", ["fused", "cudnn"])
@pytest.mark.parametrize("block", list(blocks(*MODELS["bundled"][:2])), ids=lambda b: "{}to{}@{}".format(*b))
def test_block(benchmark, block, impl):
    kernels_from_source()
    from t2v_rt.kernels import subpixel_weights, upsample_conv_act

    c, k, h = block
    dev, dt = "cuda", torch.float16
    x = torch.randn(BATCH, c, h, h, device=dev, dtype=dt)
    weight = (torch.randn(k, c, 3, 3, device=dev) / (3 * c**0.5)).to(dt)
    bias, cw = torch.randn(k, device=dev, dtype=dt), torch.randn(k, 5, device=dev, dtype=dt)
    scale = (1 + 0.3 * torch.randn(BATCH, k, device=dev)).to(dt)
    shift = (0.3 * torch.randn(BATCH, k, device=dev)).to(dt)
    pose = torch.rand(BATCH, 2, device=dev) * 2 - 1
    packed = subpixel_weights(weight)

    def run():
        if impl == "fused":
            upsample_conv_act(x, weight, bias, "leaky_relu", 0.2, scale, shift, cw, pose, packed=packed)
        else:
            unfused(x, weight, bias, scale, shift, cw, pose)
        torch.cuda.synchronize()

    run()
    benchmark.extra_info.update(C=c, K=k, H=h, batch=BATCH, dtype="fp16")
    benchmark(run)
