"""pytest-benchmark: one training step of the real schedule (``Trainer.step``), both phases.

    pytest bench/test_bench_train.py --benchmark-only

``bench/train_speed.py`` reports the same steps as samples/s into bench/results/.
"""

import pytest

from t2v_rt.models.shapes.train import TrainConfig, Trainer


@pytest.fixture(scope="module")
def trainer():
    return Trainer.create(TrainConfig(adv_start=10_000, adv_ramp=500))


def _stepper(tr: Trainer, first: int):
    state = {"i": first}

    def step():
        tr.step(state["i"])
        state["i"] += 1
    return step


def test_render_batch_16_clips(benchmark, trainer):
    benchmark(trainer.data.batch, 0, trainer.cfg.batch_size)


def test_reconstruction_step_16_clips(benchmark, trainer):
    benchmark.pedantic(_stepper(trainer, 0), rounds=10, warmup_rounds=2)


def test_adversarial_step_16_clips(benchmark, trainer):
    benchmark.pedantic(_stepper(trainer, 10_500), rounds=10, warmup_rounds=2)
