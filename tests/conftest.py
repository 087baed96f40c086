import random

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(1234)
    torch.manual_seed(1234)
    yield
