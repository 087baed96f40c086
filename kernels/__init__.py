"""Triton kernels of the generator's hot ops, each beside its PyTorch reference
(``impl="ref"``). Shipped in the wheel as ``t2v_rt.kernels``. Importing needs Triton; on a
CPU-only machine the kernels run under ``TRITON_INTERPRET=1`` (tests)."""

from t2v_rt.kernels.conv_alpha_blend import conv_alpha_blend, conv_alpha_blend_ref
from t2v_rt.kernels.upsample_conv_act import (
    coordinate_grid,
    subpixel_weights,
    upsample_conv_act,
    upsample_conv_act_ref,
)

__all__ = ["conv_alpha_blend", "conv_alpha_blend_ref", "coordinate_grid", "subpixel_weights",
           "upsample_conv_act", "upsample_conv_act_ref"]
