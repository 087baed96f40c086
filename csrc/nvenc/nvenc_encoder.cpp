#include "nvenc_encoder.h"

#include <dlfcn.h>

#include <cstring>
#include <mutex>
#include <stdexcept>

#include <ffnvcodec/nvEncodeAPI.h>

namespace t2v {
namespace {

// The few CUDA driver entry points used, resolved from libcuda.so.1 at run time.
using CUresult = int;
using CUdevice = int;
using CUcontext = void*;
using CUdeviceptr = unsigned long long;

struct Driver {
  void* cuda = nullptr;
  void* nvenc = nullptr;
  CUresult (*cuInit)(unsigned) = nullptr;
  CUresult (*cuDeviceGetCount)(int*) = nullptr;
  CUresult (*cuDeviceGet)(CUdevice*, int) = nullptr;
  CUresult (*cuDeviceGetName)(char*, int, CUdevice) = nullptr;
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext*, CUdevice) = nullptr;
  CUresult (*cuDevicePrimaryCtxRelease)(CUdevice) = nullptr;
  CUresult (*cuCtxPushCurrent)(CUcontext) = nullptr;
  CUresult (*cuCtxPopCurrent)(CUcontext*) = nullptr;
  CUresult (*cuGetErrorName)(CUresult, const char**) = nullptr;
  CUresult (*cuDriverGetVersion)(int*) = nullptr;
  CUresult (*cuMemAllocPitch)(CUdeviceptr*, size_t*, size_t, size_t, unsigned) = nullptr;
  CUresult (*cuMemFree)(CUdeviceptr) = nullptr;
  NVENCSTATUS (*NvEncodeAPIGetMaxSupportedVersion)(uint32_t*) = nullptr;
  NVENCSTATUS (*NvEncodeAPICreateInstance)(NV_ENCODE_API_FUNCTION_LIST*) = nullptr;
  NV_ENCODE_API_FUNCTION_LIST api{};
  std::string error;               // why the driver cannot be used; empty: it can
};

template <typename F>
bool resolve(void* lib, const char* name, F& fn) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  return fn != nullptr;
}

std::string dl_error() {
  const char* e = dlerror();
  return e ? e : "unknown error";
}

std::string cu_name(const Driver& d, CUresult r) {
  const char* name = nullptr;
  if (d.cuGetErrorName && d.cuGetErrorName(r, &name) == 0 && name) return name;
  return "CUDA error " + std::to_string(r);
}

const char* nvenc_name(NVENCSTATUS s) {
  switch (s) {
    case NV_ENC_SUCCESS: return "NV_ENC_SUCCESS";
    case NV_ENC_ERR_NO_ENCODE_DEVICE: return "NV_ENC_ERR_NO_ENCODE_DEVICE";
    case NV_ENC_ERR_UNSUPPORTED_DEVICE: return "NV_ENC_ERR_UNSUPPORTED_DEVICE";
    case NV_ENC_ERR_INVALID_ENCODERDEVICE: return "NV_ENC_ERR_INVALID_ENCODERDEVICE";
    case NV_ENC_ERR_INVALID_DEVICE: return "NV_ENC_ERR_INVALID_DEVICE";
    case NV_ENC_ERR_DEVICE_NOT_EXIST: return "NV_ENC_ERR_DEVICE_NOT_EXIST";
    case NV_ENC_ERR_INVALID_PTR: return "NV_ENC_ERR_INVALID_PTR";
    case NV_ENC_ERR_INVALID_PARAM: return "NV_ENC_ERR_INVALID_PARAM";
    case NV_ENC_ERR_INVALID_VERSION: return "NV_ENC_ERR_INVALID_VERSION";
    case NV_ENC_ERR_OUT_OF_MEMORY: return "NV_ENC_ERR_OUT_OF_MEMORY";
    case NV_ENC_ERR_ENCODER_NOT_INITIALIZED: return "NV_ENC_ERR_ENCODER_NOT_INITIALIZED";
    case NV_ENC_ERR_UNSUPPORTED_PARAM: return "NV_ENC_ERR_UNSUPPORTED_PARAM";
    case NV_ENC_ERR_INCOMPATIBLE_CLIENT_KEY: return "NV_ENC_ERR_INCOMPATIBLE_CLIENT_KEY";
    case NV_ENC_ERR_ENCODER_BUSY: return "NV_ENC_ERR_ENCODER_BUSY";
    case NV_ENC_ERR_NEED_MORE_INPUT: return "NV_ENC_ERR_NEED_MORE_INPUT";
    case NV_ENC_ERR_GENERIC: return "NV_ENC_ERR_GENERIC";
    default: return "NVENC error";
  }
}

// Opened once per process; never closed (the driver libraries stay for the process's life).
const Driver& driver() {
  static Driver d;
  static std::once_flag once;
  std::call_once(once, [] {
    d.cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!d.cuda) {
      d.error = "no NVIDIA driver: libcuda.so.1 cannot be loaded (" + dl_error() + ")";
      return;
    }
    bool ok = resolve(d.cuda, "cuInit", d.cuInit) && resolve(d.cuda, "cuDeviceGetCount", d.cuDeviceGetCount) &&
              resolve(d.cuda, "cuDeviceGet", d.cuDeviceGet) && resolve(d.cuda, "cuDeviceGetName", d.cuDeviceGetName) &&
              resolve(d.cuda, "cuDevicePrimaryCtxRetain", d.cuDevicePrimaryCtxRetain) &&
              resolve(d.cuda, "cuDevicePrimaryCtxRelease_v2", d.cuDevicePrimaryCtxRelease) &&
              resolve(d.cuda, "cuCtxPushCurrent_v2", d.cuCtxPushCurrent) &&
              resolve(d.cuda, "cuCtxPopCurrent_v2", d.cuCtxPopCurrent) &&
              resolve(d.cuda, "cuGetErrorName", d.cuGetErrorName) &&
              resolve(d.cuda, "cuDriverGetVersion", d.cuDriverGetVersion) &&
              resolve(d.cuda, "cuMemAllocPitch_v2", d.cuMemAllocPitch) && resolve(d.cuda, "cuMemFree_v2", d.cuMemFree);
    if (!ok) {
      d.error = "libcuda.so.1 lacks a CUDA driver function this module needs (" + dl_error() + "): update the driver";
      return;
    }
    if (CUresult r = d.cuInit(0); r != 0) {
      d.error = "the CUDA driver does not initialise (" + cu_name(d, r) + ")";
      return;
    }
    int count = 0;
    if (d.cuDeviceGetCount(&count) != 0 || count == 0) {
      d.error = "the CUDA driver sees no GPU";
      return;
    }
    d.nvenc = dlopen("libnvidia-encode.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!d.nvenc) {
      d.error = "the driver's NVENC library libnvidia-encode.so.1 cannot be loaded (" + dl_error() +
                "); in a container, NVIDIA_DRIVER_CAPABILITIES must include 'video'";
      return;
    }
    if (!resolve(d.nvenc, "NvEncodeAPIGetMaxSupportedVersion", d.NvEncodeAPIGetMaxSupportedVersion) ||
        !resolve(d.nvenc, "NvEncodeAPICreateInstance", d.NvEncodeAPICreateInstance)) {
      d.error = "libnvidia-encode.so.1 lacks the NVENC entry points (" + dl_error() + ")";
      return;
    }
    uint32_t version = 0;
    d.NvEncodeAPIGetMaxSupportedVersion(&version);
    const uint32_t needed = (NVENCAPI_MAJOR_VERSION << 4) | NVENCAPI_MINOR_VERSION;
    if (version < needed) {
      d.error = "the driver's NVENC API is " + std::to_string(version >> 4) + "." + std::to_string(version & 15) +
                ", this module needs " + std::to_string(NVENCAPI_MAJOR_VERSION) + "." +
                std::to_string(NVENCAPI_MINOR_VERSION) + ": update the NVIDIA driver";
      return;
    }
    d.api.version = NV_ENCODE_API_FUNCTION_LIST_VER;
    if (NVENCSTATUS s = d.NvEncodeAPICreateInstance(&d.api); s != NV_ENC_SUCCESS) {
      d.error = std::string("NvEncodeAPICreateInstance failed (") + nvenc_name(s) + ")";
    }
  });
  return d;
}

// The device's primary context (PyTorch's), current on this thread while in scope.
class ContextScope {
 public:
  ContextScope(const Driver& d, CUdevice dev, CUcontext ctx) : d_(d) { d_.cuCtxPushCurrent(ctx); (void)dev; }
  ~ContextScope() {
    CUcontext popped;
    d_.cuCtxPopCurrent(&popped);
  }

 private:
  const Driver& d_;
};

std::string device_name(const Driver& d, CUdevice dev) {
  char name[256] = {0};
  d.cuDeviceGetName(name, sizeof(name) - 1, dev);
  return name;
}

// An encode session on ``dev`` (the primary context pushed), or the driver's reason.
void* open_session(const Driver& d, CUcontext ctx, NVENCSTATUS* status) {
  NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS p{};
  p.version = NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER;
  p.deviceType = NV_ENC_DEVICE_TYPE_CUDA;
  p.device = ctx;
  p.apiVersion = NVENCAPI_VERSION;
  void* encoder = nullptr;
  *status = d.api.nvEncOpenEncodeSessionEx(&p, &encoder);
  return *status == NV_ENC_SUCCESS ? encoder : nullptr;
}

bool same_guid(const GUID& a, const GUID& b) { return std::memcmp(&a, &b, sizeof(GUID)) == 0; }

std::vector<std::string> codecs(const Driver& d, void* encoder) {
  uint32_t count = 0, got = 0;
  d.api.nvEncGetEncodeGUIDCount(encoder, &count);
  std::vector<GUID> guids(count);
  if (count) d.api.nvEncGetEncodeGUIDs(encoder, guids.data(), count, &got);
  std::vector<std::string> out;
  for (uint32_t i = 0; i < got; ++i) {
    if (same_guid(guids[i], NV_ENC_CODEC_H264_GUID)) out.emplace_back("h264");
    if (same_guid(guids[i], NV_ENC_CODEC_HEVC_GUID)) out.emplace_back("hevc");
  }
  return out;
}

void check(NVENCSTATUS s, const char* what) {
  if (s != NV_ENC_SUCCESS) throw std::runtime_error(std::string("NVENC: ") + what + " failed (" + nvenc_name(s) + ")");
}

}  // namespace

std::pair<bool, std::string> nvenc_available(int device) {
  const Driver& d = driver();
  if (!d.error.empty()) return {false, d.error};
  int count = 0;
  d.cuDeviceGetCount(&count);
  if (device < 0 || device >= count) return {false, "no CUDA device " + std::to_string(device)};
  CUdevice dev;
  d.cuDeviceGet(&dev, device);
  const std::string name = device_name(d, dev);
  CUcontext ctx = nullptr;
  if (CUresult r = d.cuDevicePrimaryCtxRetain(&ctx, dev); r != 0)
    return {false, "cannot use " + name + "'s CUDA context (" + cu_name(d, r) + ")"};
  std::pair<bool, std::string> result;
  {
    ContextScope scope(d, dev, ctx);
    NVENCSTATUS status;
    void* encoder = open_session(d, ctx, &status);
    if (!encoder) {
      result = {false, name + " has no usable NVENC: the driver refuses an encode session (" +
                           std::string(nvenc_name(status)) + ")"};
    } else {
      auto list = codecs(d, encoder);
      d.api.nvEncDestroyEncoder(encoder);
      std::string joined;
      for (const auto& c : list) joined += (joined.empty() ? "" : ", ") + c;
      int version = 0;
      d.cuDriverGetVersion(&version);
      result = list.empty() ? std::make_pair(false, name + "'s NVENC offers neither H.264 nor HEVC")
                            : std::make_pair(true, "NVENC on " + name + " (CUDA driver " +
                                                       std::to_string(version / 1000) + "." +
                                                       std::to_string(version % 1000 / 10) + "): " + joined);
    }
  }
  d.cuDevicePrimaryCtxRelease(dev);
  return result;
}

struct NvencEncoder::Impl {
  static constexpr int kBuffers = 2;   // NV12 surfaces: frame k+1 converts while k encodes
  const Driver& d = driver();
  EncoderOptions o;
  CUdevice dev = 0;
  CUcontext ctx = nullptr;
  void* encoder = nullptr;
  std::string gpu;
  CUdeviceptr surface[kBuffers] = {};
  size_t pitch = 0;
  NV_ENC_REGISTERED_PTR registered[kBuffers] = {};
  NV_ENC_OUTPUT_PTR bitstream[kBuffers] = {};
  void* stream = nullptr;              // the caller's CUDA stream, given to NVENC for input and output
  bool streams_set = false;
  int64_t next_pts = 0;
  bool opened = false;

  void release() {
    if (!opened) return;
    opened = false;
    ContextScope scope(d, dev, ctx);
    for (int i = 0; i < kBuffers; ++i) {
      if (registered[i]) d.api.nvEncUnregisterResource(encoder, registered[i]);
      if (bitstream[i]) d.api.nvEncDestroyBitstreamBuffer(encoder, bitstream[i]);
      if (surface[i]) d.cuMemFree(surface[i]);
      registered[i] = nullptr;
      bitstream[i] = nullptr;
      surface[i] = 0;
    }
    if (encoder) d.api.nvEncDestroyEncoder(encoder);
    encoder = nullptr;
    d.cuDevicePrimaryCtxRelease(dev);
  }
};

NvencEncoder::NvencEncoder(const EncoderOptions& options) : impl_(new Impl) {
  Impl& m = *impl_;
  m.o = options;
  const Driver& d = m.d;
  if (!d.error.empty()) throw std::runtime_error(d.error);
  if (options.width <= 0 || options.height <= 0 || options.width % 2 || options.height % 2)
    throw std::invalid_argument("NVENC: width and height must be even and positive, got " +
                                std::to_string(options.width) + " x " + std::to_string(options.height));
  if (options.codec != "h264" && options.codec != "hevc")
    throw std::invalid_argument("NVENC: codec must be h264 or hevc, got '" + options.codec + "'");
  if (options.preset < 1 || options.preset > 7) throw std::invalid_argument("NVENC: preset must be 1..7");
  if (options.fps_num <= 0 || options.fps_den <= 0) throw std::invalid_argument("NVENC: fps must be positive");
  d.cuDeviceGet(&m.dev, options.device);
  m.gpu = device_name(d, m.dev);
  if (CUresult r = d.cuDevicePrimaryCtxRetain(&m.ctx, m.dev); r != 0)
    throw std::runtime_error("NVENC: cannot use " + m.gpu + "'s CUDA context (" + cu_name(d, r) + ")");
  m.opened = true;
  try {
    ContextScope scope(d, m.dev, m.ctx);
    NVENCSTATUS status;
    m.encoder = open_session(d, m.ctx, &status);
    if (!m.encoder)
      throw std::runtime_error(m.gpu + " has no usable NVENC: the driver refuses an encode session (" +
                               nvenc_name(status) + ")");
    const GUID codec = options.codec == "h264" ? NV_ENC_CODEC_H264_GUID : NV_ENC_CODEC_HEVC_GUID;
    const GUID presets[7] = {NV_ENC_PRESET_P1_GUID, NV_ENC_PRESET_P2_GUID, NV_ENC_PRESET_P3_GUID, NV_ENC_PRESET_P4_GUID,
                             NV_ENC_PRESET_P5_GUID, NV_ENC_PRESET_P6_GUID, NV_ENC_PRESET_P7_GUID};
    const GUID preset = presets[options.preset - 1];
    NV_ENC_PRESET_CONFIG pc{};
    pc.version = NV_ENC_PRESET_CONFIG_VER;
    pc.presetCfg.version = NV_ENC_CONFIG_VER;
    check(d.api.nvEncGetEncodePresetConfigEx(m.encoder, codec, preset, NV_ENC_TUNING_INFO_ULTRA_LOW_LATENCY, &pc),
          "reading the low-latency preset");
    NV_ENC_CONFIG cfg = pc.presetCfg;
    cfg.version = NV_ENC_CONFIG_VER;
    cfg.gopLength = options.gop;
    cfg.frameIntervalP = 1;                           // I and P only: no B-frames, no reordering
    if (options.bitrate > 0) {
      cfg.rcParams.rateControlMode = NV_ENC_PARAMS_RC_CBR;
      cfg.rcParams.averageBitRate = options.bitrate;
      cfg.rcParams.maxBitRate = options.bitrate;
      // one frame's worth of VBV: the lowest latency CBR allows
      cfg.rcParams.vbvBufferSize = static_cast<uint32_t>(
          static_cast<int64_t>(options.bitrate) * options.fps_den / options.fps_num);
      cfg.rcParams.vbvInitialDelay = cfg.rcParams.vbvBufferSize;
    } else {
      cfg.rcParams.rateControlMode = NV_ENC_PARAMS_RC_VBR;
      cfg.rcParams.averageBitRate = 0;
      cfg.rcParams.targetQuality = static_cast<uint8_t>(options.cq);
    }
    // The stream says what the conversion kernel wrote: BT.709 primaries, transfer and
    // matrix, limited range (Annex E codes 1, 1, 1; video format 5: unspecified).
    auto bt709 = [](NV_ENC_CONFIG_H264_VUI_PARAMETERS& vui) {
      vui.videoSignalTypePresentFlag = 1;
      vui.videoFormat = 5;
      vui.videoFullRangeFlag = 0;
      vui.colourDescriptionPresentFlag = 1;
      vui.colourPrimaries = vui.transferCharacteristics = vui.colourMatrix = 1;
    };
    if (options.codec == "h264") {
      cfg.encodeCodecConfig.h264Config.idrPeriod = options.gop;
      cfg.encodeCodecConfig.h264Config.repeatSPSPPS = 1;
      bt709(cfg.encodeCodecConfig.h264Config.h264VUIParameters);
    } else {
      cfg.encodeCodecConfig.hevcConfig.idrPeriod = options.gop;
      cfg.encodeCodecConfig.hevcConfig.repeatSPSPPS = 1;
      bt709(cfg.encodeCodecConfig.hevcConfig.hevcVUIParameters);
    }
    NV_ENC_INITIALIZE_PARAMS init{};
    init.version = NV_ENC_INITIALIZE_PARAMS_VER;
    init.encodeGUID = codec;
    init.presetGUID = preset;
    init.tuningInfo = NV_ENC_TUNING_INFO_ULTRA_LOW_LATENCY;
    init.encodeWidth = init.darWidth = init.maxEncodeWidth = options.width;
    init.encodeHeight = init.darHeight = init.maxEncodeHeight = options.height;
    init.frameRateNum = options.fps_num;
    init.frameRateDen = options.fps_den;
    init.enablePTD = 1;
    init.enableEncodeAsync = 0;                       // Linux: synchronous mode only
    init.encodeConfig = &cfg;
    check(d.api.nvEncInitializeEncoder(m.encoder, &init), "initialising the encoder");
    for (int i = 0; i < Impl::kBuffers; ++i) {
      if (CUresult r = d.cuMemAllocPitch(&m.surface[i], &m.pitch, options.width, options.height * 3 / 2, 16); r != 0)
        throw std::runtime_error("NVENC: allocating an NV12 surface failed (" + cu_name(d, r) + ")");
      NV_ENC_REGISTER_RESOURCE reg{};
      reg.version = NV_ENC_REGISTER_RESOURCE_VER;
      reg.resourceType = NV_ENC_INPUT_RESOURCE_TYPE_CUDADEVICEPTR;
      reg.width = options.width;
      reg.height = options.height;
      reg.pitch = static_cast<uint32_t>(m.pitch);
      reg.resourceToRegister = reinterpret_cast<void*>(m.surface[i]);
      reg.bufferFormat = NV_ENC_BUFFER_FORMAT_NV12;
      reg.bufferUsage = NV_ENC_INPUT_IMAGE;
      check(d.api.nvEncRegisterResource(m.encoder, &reg), "registering an input surface");
      m.registered[i] = reg.registeredResource;
      NV_ENC_CREATE_BITSTREAM_BUFFER bs{};
      bs.version = NV_ENC_CREATE_BITSTREAM_BUFFER_VER;
      check(d.api.nvEncCreateBitstreamBuffer(m.encoder, &bs), "creating a bitstream buffer");
      m.bitstream[i] = bs.bitstreamBuffer;
    }
  } catch (...) {
    m.release();
    throw;
  }
}

NvencEncoder::~NvencEncoder() { impl_->release(); }

void NvencEncoder::close() { impl_->release(); }

std::string NvencEncoder::describe() const {
  const auto& o = impl_->o;
  return "nvenc " + o.codec + " P" + std::to_string(o.preset) + " on " + impl_->gpu + " (" +
         (o.bitrate > 0 ? std::to_string(o.bitrate / 1000) + " kbit/s CBR" : "constant quality " + std::to_string(o.cq)) +
         ", GOP " + std::to_string(o.gop) + ", no B-frames)";
}

std::vector<Packet> NvencEncoder::encode(uintptr_t src, DType dtype, int n, int height, int width,
                                         uintptr_t stream) {
  Impl& m = *impl_;
  if (!m.opened) throw std::runtime_error("NVENC: the encoder is closed");
  if (n < 0 || height <= 0 || width <= 0) throw std::invalid_argument("NVENC: bad frame batch shape");
  const size_t elem = dtype == DType::Float32 ? 4 : 2;
  const size_t frame_bytes = 3 * static_cast<size_t>(height) * width * elem;
  const Driver& d = m.d;
  ContextScope scope(d, m.dev, m.ctx);
  if (!m.streams_set || reinterpret_cast<void*>(stream) != m.stream) {
    m.stream = reinterpret_cast<void*>(stream);
    check(d.api.nvEncSetIOCudaStreams(m.encoder, &m.stream, &m.stream), "setting the CUDA stream");
    m.streams_set = true;
  }
  std::vector<Packet> out;
  out.reserve(n);
  NV_ENC_INPUT_PTR mapped[Impl::kBuffers] = {};
  auto collect = [&](int slot) {
    NV_ENC_LOCK_BITSTREAM lock{};
    lock.version = NV_ENC_LOCK_BITSTREAM_VER;
    lock.outputBitstream = m.bitstream[slot];
    check(d.api.nvEncLockBitstream(m.encoder, &lock), "locking the bitstream");
    out.push_back({std::string(static_cast<const char*>(lock.bitstreamBufferPtr), lock.bitstreamSizeInBytes),
                   static_cast<int64_t>(lock.outputTimeStamp), lock.pictureType == NV_ENC_PIC_TYPE_IDR});
    check(d.api.nvEncUnlockBitstream(m.encoder, m.bitstream[slot]), "unlocking the bitstream");
    check(d.api.nvEncUnmapInputResource(m.encoder, mapped[slot]), "unmapping an input surface");
    mapped[slot] = nullptr;
  };
  for (int i = 0; i < n; ++i) {
    const int slot = i % Impl::kBuffers;
    if (mapped[slot]) collect(slot);   // the surface's previous frame is out before it is reused
    const auto* frame = reinterpret_cast<const uint8_t*>(src) + i * frame_bytes;
    if (int e = rgb_to_nv12(frame, dtype, height, width, reinterpret_cast<uint8_t*>(m.surface[slot]),
                            static_cast<int>(m.pitch), m.o.height, m.o.width, m.stream);
        e != 0)
      throw std::runtime_error("NVENC: the NV12 conversion kernel failed to launch (CUDA error " +
                               std::to_string(e) + ")");
    NV_ENC_MAP_INPUT_RESOURCE map{};
    map.version = NV_ENC_MAP_INPUT_RESOURCE_VER;
    map.registeredResource = m.registered[slot];
    check(d.api.nvEncMapInputResource(m.encoder, &map), "mapping an input surface");
    mapped[slot] = map.mappedResource;
    NV_ENC_PIC_PARAMS pic{};
    pic.version = NV_ENC_PIC_PARAMS_VER;
    pic.inputWidth = m.o.width;
    pic.inputHeight = m.o.height;
    pic.inputPitch = static_cast<uint32_t>(m.pitch);
    pic.inputBuffer = map.mappedResource;
    pic.bufferFmt = NV_ENC_BUFFER_FORMAT_NV12;
    pic.outputBitstream = m.bitstream[slot];
    pic.pictureStruct = NV_ENC_PIC_STRUCT_FRAME;
    pic.inputTimeStamp = static_cast<uint64_t>(m.next_pts++);
    check(d.api.nvEncEncodePicture(m.encoder, &pic), "encoding a frame");
  }
  for (int k = 0; k < Impl::kBuffers; ++k) {   // in order: the older frame's slot first
    const int slot = (n + k) % Impl::kBuffers;
    if (mapped[slot]) collect(slot);
  }
  return out;
}

std::vector<Packet> NvencEncoder::flush() {
  Impl& m = *impl_;
  if (!m.opened) return {};
  ContextScope scope(m.d, m.dev, m.ctx);
  NV_ENC_PIC_PARAMS pic{};
  pic.version = NV_ENC_PIC_PARAMS_VER;
  pic.encodePicFlags = NV_ENC_PIC_FLAG_EOS;
  check(m.d.api.nvEncEncodePicture(m.encoder, &pic), "ending the stream");
  return {};   // no B-frames and synchronous mode: every frame's packet came out of encode()
}

}  // namespace t2v
