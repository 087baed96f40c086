import os
import random

import pytest
import torch

# Tests must be deterministic and use the CPU threads they are given.
os.environ.setdefault("T2V_RT_TEST", "1")


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(1234)
    torch.manual_seed(1234)
    yield
