// An NVENC encoder of CUDA frames, against the NVENC API header (nvEncodeAPI.h, Debian's
// libffmpeg-nvenc-dev). libcuda.so.1 and libnvidia-encode.so.1 are opened at run time
// (dlopen), so the module imports and reports why on machines without a driver or NVENC.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nv12.h"

namespace t2v {

// Whether NVENC can encode here, and why (not): the driver's own words where it gives any.
std::pair<bool, std::string> nvenc_available(int device);

struct EncoderOptions {
  int width = 256, height = 256;   // output size (even)
  int fps_num = 30, fps_den = 1;
  std::string codec = "h264";      // h264 | hevc
  int gop = 60;                    // frames between IDRs (each repeats SPS/PPS)
  int bitrate = 0;                 // bits/s, CBR; 0: constant quality
  int cq = 23;                     // constant quality level, 1..51 (when bitrate == 0)
  int preset = 1;                  // P1 (fastest) .. P7
  int device = 0;                  // CUDA device ordinal
};

struct Packet {
  std::string data;                // Annex B bitstream of one frame
  int64_t pts;                     // frame index
  bool key;                        // IDR
};

class NvencEncoder {
 public:
  explicit NvencEncoder(const EncoderOptions& options);
  ~NvencEncoder();
  NvencEncoder(const NvencEncoder&) = delete;
  NvencEncoder& operator=(const NvencEncoder&) = delete;

  // ``n`` frames [n, 3, height, width] of ``dtype`` at device address ``src`` (contiguous),
  // ordered after the work already queued on CUDA stream ``stream``: converted to NV12 (resized
  // to the output size) into the encoder's registered buffers and encoded, one packet a frame.
  std::vector<Packet> encode(uintptr_t src, DType dtype, int n, int height, int width,
                             uintptr_t stream);
  std::vector<Packet> flush();     // end of stream: whatever the encoder still holds
  void close();
  std::string describe() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace t2v
