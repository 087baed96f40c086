// The colour conversion kernel: one thread per 2 x 2 block of output pixels (one chroma sample).
#include "nv12.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace t2v {
namespace {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// Source coordinate of output index ``o`` (PyTorch bilinear, align_corners=False): the lower
// tap, the upper tap and the weight of the upper one.
__device__ __forceinline__ void tap(int o, float scale, int n, int& i0, int& i1, float& t) {
  float s = fmaxf((o + 0.5f) * scale - 0.5f, 0.0f);
  i0 = min(static_cast<int>(s), n - 1);
  i1 = min(i0 + 1, n - 1);
  t = s - static_cast<float>(i0);
}

__device__ __forceinline__ uint8_t to_u8(float v) {
  return static_cast<uint8_t>(fminf(fmaxf(floorf(v + 0.5f), 0.0f), 255.0f));
}

template <typename T>
__global__ void rgb_to_nv12_kernel(const T* __restrict__ src, int h, int w, uint8_t* __restrict__ dst,
                                   int pitch, int oh, int ow) {
  const int cx = blockIdx.x * blockDim.x + threadIdx.x;
  const int cy = blockIdx.y * blockDim.y + threadIdx.y;
  if (cx >= ow / 2 || cy >= oh / 2) return;
  const float sy = static_cast<float>(h) / oh, sx = static_cast<float>(w) / ow;
  const size_t plane = static_cast<size_t>(h) * w;
  float rs = 0.f, gs = 0.f, bs = 0.f;
#pragma unroll
  for (int dy = 0; dy < 2; ++dy) {
    const int oy = 2 * cy + dy;
    int y0, y1;
    float ty;
    tap(oy, sy, h, y0, y1, ty);
#pragma unroll
    for (int dx = 0; dx < 2; ++dx) {
      const int ox = 2 * cx + dx;
      int x0, x1;
      float tx;
      tap(ox, sx, w, x0, x1, tx);
      float rgb[3];
#pragma unroll
      for (int c = 0; c < 3; ++c) {
        const T* p = src + c * plane;
        const float top = to_float(p[y0 * w + x0]) * (1.f - tx) + to_float(p[y0 * w + x1]) * tx;
        const float bot = to_float(p[y1 * w + x0]) * (1.f - tx) + to_float(p[y1 * w + x1]) * tx;
        // [-1, 1] -> [0, 1], clamped as the uint8 path clamps
        rgb[c] = fminf(fmaxf(((top * (1.f - ty) + bot * ty) + 1.f) * 0.5f, 0.f), 1.f);
      }
      const float luma = 0.2126f * rgb[0] + 0.7152f * rgb[1] + 0.0722f * rgb[2];
      dst[static_cast<size_t>(oy) * pitch + ox] = to_u8(16.f + 219.f * luma);
      rs += rgb[0];
      gs += rgb[1];
      bs += rgb[2];
    }
  }
  // Chroma of the block's mean colour (centre-sited), BT.709: Cb = (B - Y) / 1.8556,
  // Cr = (R - Y) / 1.5748, scaled to 224 levels around 128.
  const float r = rs * 0.25f, g = gs * 0.25f, b = bs * 0.25f;
  const float luma = 0.2126f * r + 0.7152f * g + 0.0722f * b;
  uint8_t* uv = dst + static_cast<size_t>(oh) * pitch + static_cast<size_t>(cy) * pitch + 2 * cx;
  uv[0] = to_u8(128.f + 224.f * (b - luma) / 1.8556f);
  uv[1] = to_u8(128.f + 224.f * (r - luma) / 1.5748f);
}

template <typename T>
int launch(const void* src, int h, int w, uint8_t* dst, int pitch, int oh, int ow, cudaStream_t s) {
  const dim3 block(32, 8);
  const dim3 grid((ow / 2 + block.x - 1) / block.x, (oh / 2 + block.y - 1) / block.y);
  rgb_to_nv12_kernel<T><<<grid, block, 0, s>>>(static_cast<const T*>(src), h, w, dst, pitch, oh, ow);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int rgb_to_nv12(const void* src, DType dtype, int height, int width, uint8_t* dst, int pitch,
                int out_height, int out_width, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DType::Float32: return launch<float>(src, height, width, dst, pitch, out_height, out_width, s);
    case DType::Float16: return launch<__half>(src, height, width, dst, pitch, out_height, out_width, s);
    case DType::BFloat16:
      return launch<__nv_bfloat16>(src, height, width, dst, pitch, out_height, out_width, s);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace t2v
