// t2v_rt._nvenc: the NVENC encoder and the NV12 conversion kernel, for Python (pybind11).
// Tensors cross as device addresses: the Python side (t2v_rt/encode/nvenc.py) checks
// device, dtype, shape and contiguity, and passes torch's current CUDA stream.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "nvenc/nv12.h"
#include "nvenc/nvenc_encoder.h"

namespace py = pybind11;

PYBIND11_MODULE(_nvenc, m) {
  m.doc() = "NVENC encoding of CUDA frames and the RGB -> NV12 conversion kernel";
  m.attr("NVENC_API_VERSION") = py::make_tuple(NVENCAPI_MAJOR_VERSION_FOR_PY, NVENCAPI_MINOR_VERSION_FOR_PY);

  py::enum_<t2v::DType>(m, "DType")
      .value("float32", t2v::DType::Float32)
      .value("float16", t2v::DType::Float16)
      .value("bfloat16", t2v::DType::BFloat16);

  m.def("nvenc_available", &t2v::nvenc_available, py::arg("device") = 0,
        py::call_guard<py::gil_scoped_release>(),
        "(True, what) when NVENC can encode on CUDA device ``device``, else (False, why).");

  m.def(
      "rgb_to_nv12",
      [](uintptr_t src, t2v::DType dtype, int height, int width, uintptr_t dst, int pitch, int out_height,
         int out_width, uintptr_t stream) {
        int e = t2v::rgb_to_nv12(reinterpret_cast<const void*>(src), dtype, height, width,
                                 reinterpret_cast<uint8_t*>(dst), pitch, out_height, out_width,
                                 reinterpret_cast<void*>(stream));
        if (e != 0) throw std::runtime_error("rgb_to_nv12: kernel launch failed (CUDA error " + std::to_string(e) + ")");
      },
      py::arg("src"), py::arg("dtype"), py::arg("height"), py::arg("width"), py::arg("dst"), py::arg("pitch"),
      py::arg("out_height"), py::arg("out_width"), py::arg("stream"),
      "One frame [3, height, width] at device address ``src`` -> NV12 at ``dst`` (Y rows, then UV rows).");

  py::class_<t2v::Packet>(m, "Packet")
      .def_property_readonly("data", [](const t2v::Packet& p) { return py::bytes(p.data); })
      .def_readonly("pts", &t2v::Packet::pts)
      .def_readonly("key", &t2v::Packet::key);

  py::class_<t2v::NvencEncoder>(m, "Encoder")
      .def(py::init([](int width, int height, int fps_num, int fps_den, const std::string& codec, int gop,
                       int bitrate, int cq, int preset, int device) {
             t2v::EncoderOptions o;
             o.width = width;
             o.height = height;
             o.fps_num = fps_num;
             o.fps_den = fps_den;
             o.codec = codec;
             o.gop = gop;
             o.bitrate = bitrate;
             o.cq = cq;
             o.preset = preset;
             o.device = device;
             py::gil_scoped_release release;
             return new t2v::NvencEncoder(o);
           }),
           py::arg("width"), py::arg("height"), py::arg("fps_num"), py::arg("fps_den"), py::arg("codec") = "h264",
           py::arg("gop") = 60, py::arg("bitrate") = 0, py::arg("cq") = 23, py::arg("preset") = 1,
           py::arg("device") = 0)
      .def("encode", &t2v::NvencEncoder::encode, py::arg("src"), py::arg("dtype"), py::arg("n"), py::arg("height"),
           py::arg("width"), py::arg("stream"), py::call_guard<py::gil_scoped_release>())
      .def("flush", &t2v::NvencEncoder::flush, py::call_guard<py::gil_scoped_release>())
      .def("close", &t2v::NvencEncoder::close)
      .def("describe", &t2v::NvencEncoder::describe);
}
