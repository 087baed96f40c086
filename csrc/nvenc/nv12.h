// RGB [N, 3, H, W] in [-1, 1] (fp32 / fp16 / bf16, contiguous) -> NV12, BT.709 limited range,
// with a bilinear resize to the output size (PyTorch's interpolate, align_corners=False).
#pragma once

#include <cstdint>

namespace t2v {

enum class DType : int { Float32 = 0, Float16 = 1, BFloat16 = 2 };

// One frame: ``src`` -> the Y plane at ``dst`` (``pitch`` bytes per row, ``out_h`` rows), then
// the interleaved UV plane right below it (``out_h / 2`` rows of the same pitch), the layout
// NVENC's NV12 input surfaces have. Launches on ``stream`` (a cudaStream_t); returns the CUDA
// error code of the launch (0: queued).
int rgb_to_nv12(const void* src, DType dtype, int height, int width, uint8_t* dst, int pitch,
                int out_height, int out_width, void* stream);

}  // namespace t2v
