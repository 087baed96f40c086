"""The bundled weights: they load with no network and meet issue #2's bar on canonical prompts.

Bar: background and colour right in >= 90 % of videos, the motion in >= 70 %. The full
500-sample table is in docs/model.md; this is a 48-sample regression check (fixed seed).
"""

import pytest

from t2v_rt.backends import create_backend
from t2v_rt.eval.run import canonical_samples, evaluate
from t2v_rt.model.io import bundled_path


def test_bundled_weights_are_in_the_package():
    path = bundled_path()
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert path.stat().st_size < 20 * 2**20


@pytest.mark.slow
def test_bundled_model_meets_the_issue_2_bar():
    result = evaluate(create_backend("torch"), canonical_samples(48, seed=7), progress=False)
    for name, group in result["groups"].items():
        acc = group["accuracy"]
        assert acc["background"] >= 0.9, (name, acc)
        assert acc["colour"] >= 0.9, (name, acc)
        assert acc["motion"] >= 0.7, (name, acc)
