"""pytest plugin of the GPU kit (``-p kit_select``): the tests of the kernel, triton-backend,
encoder and TensorRT modules, and every test marked ``gpu`` elsewhere. Other modules are not
even imported unless their source names the marker; their tests are deselected."""

FILES = {"test_kernels.py", "test_triton_backend.py", "test_encoders.py", "test_tensorrt_backend.py"}


def pytest_ignore_collect(collection_path, config):
    if collection_path.suffix == ".py" and collection_path.name.startswith("test_") \
            and collection_path.name not in FILES:
        try:
            return "mark.gpu" not in collection_path.read_text(errors="replace") or None
        except OSError:
            return None
    return None


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        (keep if item.path.name in FILES or item.get_closest_marker("gpu") else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
