"""Triton kernels of the generator's hot ops, each beside its PyTorch reference
(``impl="ref"``). Shipped in the wheel as ``t2v_rt.kernels``. Importing needs Triton; on a
CPU-only machine the kernels run under ``TRITON_INTERPRET=1`` (tests). Nothing here imports
model code: each kernel owns its reference."""

from t2v_rt.kernels._common import ACTIVATIONS
from t2v_rt.kernels.upsample_conv_act import (
    KINDS,
    coordinate_grid,
    fold_batchnorm,
    pack_weights,
    subpixel_weights,
    subpixel_weights_transpose,
    upsample_conv_act,
    upsample_conv_act_ref,
)

__all__ = ["ACTIVATIONS", "KINDS", "coordinate_grid",
           "fold_batchnorm", "pack_weights", "subpixel_weights", "subpixel_weights_transpose",
           "upsample_conv_act", "upsample_conv_act_ref"]
