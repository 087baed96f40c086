"""NVENC from Python: the status probe and an encoder of CUDA frames (``t2v_rt._nvenc``).

The native module is built at install time when nvcc and ``nvEncodeAPI.h`` are present
(``csrc/``); it opens the driver's libraries only when asked, so it imports anywhere.
"""

from __future__ import annotations

from fractions import Fraction

from t2v_rt.encode.sink import EncoderOptions
from t2v_rt.errors import RuntimeUnavailable


def native_module():
    """``t2v_rt._nvenc``, or :class:`RuntimeUnavailable` saying why it is not there."""
    try:
        from t2v_rt import _nvenc
    except ImportError as e:
        raise RuntimeUnavailable(
            f"the NVENC module was not built with this install ({e}); it needs nvcc and "
            "nvEncodeAPI.h (apt install libffmpeg-nvenc-dev) when installing") from None
    return _nvenc


def native_dtype(dtype):
    import torch

    nv = native_module()
    table = {torch.float32: nv.DType.float32, torch.float16: nv.DType.float16,
             torch.bfloat16: nv.DType.bfloat16}
    if dtype not in table:
        raise ValueError(f"frames must be float32, float16 or bfloat16, got {dtype}")
    return table[dtype]


def nvenc_status(device: int = 0) -> tuple[bool, str]:
    """(True, what) when NVENC can encode here, else (False, why): the driver's own reason."""
    try:
        nv = native_module()
    except RuntimeUnavailable as e:
        return False, str(e)
    return nv.nvenc_available(device)


class NvencEncoder:
    """CUDA frames [N, 3, H, W] in [-1, 1] -> H.264/HEVC packets (Annex B, one per frame).

    Conversion to NV12 (with the resize to ``size``) and encoding run on torch's current
    stream, after whatever produced the frames; the host gets compressed bytes only.
    """

    def __init__(self, size: tuple[int, int], fps: Fraction, options: EncoderOptions | None = None,
                 device: int = 0):
        nv = native_module()
        options = options or EncoderOptions()
        width, height = size
        gop = options.gop or max(1, round(2 * float(fps)))
        try:
            self._enc = nv.Encoder(width, height, fps.numerator, fps.denominator, options.codec, gop,
                                   options.bitrate, options.quality, options.preset, device)
        except RuntimeError as e:
            raise RuntimeUnavailable(str(e)) from None
        self.codec = options.codec

    def encode(self, frames) -> list:   # torch.Tensor on the GPU
        """frames [N, 3, H, W] CUDA float -> the native packets (``data``, ``pts``, ``key``)."""
        if not frames.is_cuda or frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"NVENC takes CUDA frames [N, 3, H, W], got {list(frames.shape)} on "
                             f"{frames.device}")
        frames = frames.contiguous()
        import torch

        stream = torch.cuda.current_stream(frames.device).cuda_stream
        return self._enc.encode(frames.data_ptr(), native_dtype(frames.dtype), frames.shape[0],
                                frames.shape[2], frames.shape[3], stream)

    def flush(self) -> list:
        return self._enc.flush()

    def close(self) -> None:
        self._enc.close()

    def describe(self) -> str:
        return self._enc.describe()

    def __enter__(self) -> NvencEncoder:  # noqa: PYI034 - Self needs Python 3.11
        return self

    def __exit__(self, *exc) -> None:
        self.close()
