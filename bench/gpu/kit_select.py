"""pytest plugin of the GPU kit (``-p kit_select``): keeps the tests marked ``gpu`` and every
test of the kernel, triton-backend, encoder and TensorRT modules; deselects the rest."""

FILES = {"test_kernels.py", "test_triton_backend.py", "test_encoders.py", "test_tensorrt_backend.py"}


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        (keep if item.path.name in FILES or item.get_closest_marker("gpu") else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
