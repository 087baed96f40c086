"""Compiling the generator: ONNX export (and, next, TensorRT engines)."""
