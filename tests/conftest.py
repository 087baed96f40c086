import random

import pytest
import torch


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
