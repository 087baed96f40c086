"""A short training run lowers the losses; runs are numbered, saved and resumable."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from t2v_rt.models.shapes.config import ModelConfig
from t2v_rt.generators.io import load_generator
from t2v_rt.models.shapes.train import TrainConfig, train

TINY = dict(resolution=32, base_size=4, channels=[64, 32, 16, 8], style_dim=64,
            motion_channels=8, text_dim=32)


def cfg(tmp_path, **kw):
    base = dict(run_dir=str(tmp_path), steps=60, batch_size=8, log_every=10, sample_every=0,
                checkpoint_every=30, adv_start=20, adv_ramp=10, d_warmup=10, lr_g=2e-3,
                lr_d=1e-3, model=ModelConfig(**TINY))
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_short_run_lowers_losses_and_resumes(tmp_path):
    run = train(cfg(tmp_path))
    assert run.name == "00000-shapes"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60]
    # 10-step windows of 8 clips are noisy: compare the last 20 steps with the first 10.
    assert (rows[-1]["rec"] + rows[-2]["rec"]) / 2 < 0.85 * rows[0]["rec"], rows
    assert rows[-1]["d"] > 0 and rows[-1]["adv"] > 0   # both adversarial terms were active
    saved = json.loads((run / "config.json").read_text())
    assert saved["steps"] == 60 and saved["model"]["resolution"] == 32

    ckpt = run / "checkpoint-0000060.safetensors"
    assert int(load_file(str(ckpt))["step"]) == 60
    g = load_generator(run / "generator.safetensors")
    assert g.cfg.resolution == 32

    # Resume: continues from step 60 to 70 in the same folder.
    train(cfg(tmp_path, steps=70, checkpoint_every=10), resume=str(run))
    assert int(load_file(str(run / "checkpoint-0000070.safetensors"))["step"]) == 70
    assert (tmp_path / "00001-shapes").exists() is False
    assert train(cfg(tmp_path), dry_run=True).name == "00001-shapes"


def test_sample_video_is_written(tmp_path):
    import av

    from t2v_rt.models.shapes.generator import Generator
    from t2v_rt.models.shapes.samples import SAMPLE_PROMPTS, write_samples

    g = Generator(ModelConfig(**TINY)).eval()
    path = tmp_path / "s.mp4"
    write_samples(g, path, torch.device("cpu"), seconds=1.0, fps=8)
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 8
    assert frames[0].width == 32 * len(SAMPLE_PROMPTS) // 2 and frames[0].height == 64


def test_box_weight_covers_each_shape_and_its_bounding_box():
    from t2v_rt.models.shapes.train import _box_mask
    from t2v_rt.models.shapes import spec
    from t2v_rt.models.shapes.dataset import ShapesClips

    b = ShapesClips(seed=3).batch(0, 12)
    box = _box_mask(b.scenes, b.centres, 64)
    assert box.shape == b.coverage.shape
    assert bool((box >= (b.coverage > 0).float()).all())          # every shape pixel is inside
    for i, scene in enumerate(b.scenes):
        side = spec.SIZES[scene.size] * 64 + 4                     # box + 2 pixels a side
        area = box[i].sum((1, 2, 3))                                # whole pixels in it
        assert bool((area <= math.ceil(side) ** 2).all()), (area, side)
        assert bool((area >= math.floor(side) ** 2).all()), (area, side)


def test_target_rendered_at_a_pose_is_the_clip_moved_there():
    from t2v_rt.models.shapes.dataset import ShapesClips, render_clips

    b = ShapesClips(seed=5).batch(0, 6)
    frames, cov = render_clips(b.scenes, b.centres, 64)
    torch.testing.assert_close(frames, b.frames)          # at the true centre: the clip itself
    torch.testing.assert_close(cov, b.coverage)
    moved, _ = render_clips(b.scenes, b.centres + torch.tensor([3 / 64, 0.0]), 64)
    # Three whole pixels to the right: the same picture, shifted (a sub-sample on a boundary
    # may round the other way).
    diff = (moved[..., 3:] - b.frames[..., :-3]).abs()
    assert float(diff.mean()) < 1e-3 and float(diff.max()) < 0.5
    assert float((moved - b.frames).abs().mean()) > 1e-2           # and it did move
