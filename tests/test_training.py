"""``t2v-rt train --data DIR --arch ARCH`` (t2v_rt.training): a short adversarial run on a small
rendered dataset lowers the losses and resumes bit for bit, for a continuous (stylegan-v) and
a recurrent (mocogan) architecture; the trained weights stream on the CPU backends; the
learned vocabulary refuses unknown words with a suggestion; R1 and DiffAugment keep what they
must (the caption's colours and directions)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from t2v_rt import cli
from t2v_rt.errors import UsageError
from t2v_rt.generators.io import load_generator, read_config
from t2v_rt.training.losses import (
    augment, augment_params, contrastive_loss, d_loss, ema_beta, image_contrastive_loss,
    r1_penalty, ranking_loss,
)
from t2v_rt.training.trainer import AdversarialConfig, AdversarialTrainer, train

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, FRAMES, CLIPS = 16, 8, 32
ARCHS = ("stylegan-v", "mocogan")


def make_dataset(root):
    """32 shapes-world clips, 16x16, 8 frames at 15 fps, as a captioned folder under ``root``,
    opened through the data package's training cache: (folder, cache, training set)."""
    from t2v_rt.data import open_training_set
    from t2v_rt.models.shapes.dataset_folder import render_shapes

    render_shapes(root / "shapes", CLIPS, seed=0, size=SIZE, seconds=FRAMES / 15,
                  captions_per_clip=3, workers=1)
    ts = open_training_set(root / "shapes", frames=FRAMES, size=SIZE, cache_dir=root / "cache")
    return root / "shapes", root / "cache", ts


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    data = make_dataset(tmp_path_factory.mktemp("data"))
    assert data[2].clips.shape == (CLIPS, FRAMES, SIZE, SIZE, 3)
    return data


def settings(tmp_path, data, **kw):
    folder, cache, _ = data
    base = dict(data=str(folder), cache_dir=str(cache), size=SIZE, frames=FRAMES,
                run_dir=str(tmp_path), steps=40, batch_size=8, clip_frames=3, log_every=5,
                checkpoint_every=20, sample_every=0, threads=1, lr_g=2e-3, lr_d=2e-3)
    base.update(kw)
    return AdversarialConfig(**base)


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


STEPS = 120


def short_run(tmp_path, data, arch, **kw):
    """A 120-step run with narrow discriminators (16 channels at full resolution), so that it
    takes seconds."""
    return train(settings(tmp_path, data, arch=arch, steps=STEPS, d_width=16, d_dim=64, **kw),
                 data=data[2])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset):
    """One :func:`short_run` per architecture, shared by the tests below."""
    return {arch: short_run(tmp_path_factory.mktemp(arch), dataset, arch, log_every=10,
                            checkpoint_every=60, sample_every=STEPS) for arch in ARCHS}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_a_short_run_lowers_both_losses(trained, dataset, arch, tmp_path):
    """GAN losses are not monotone step by step (each player's loss is the other's gain), so
    each side is judged by what it has learnt: the discriminators tell real from generated
    better (their loss falls from 2 log 4, the share they get right rises) and the generator's
    clips come closer to the data (the gap in their colour and motion statistics shrinks).

    The gap is judged on its mean over GAP_SEEDS seeds: one short run's end is a chaotic
    function of its arithmetic. With a second thread's order of summation alone, seed 0's
    stylegan-v run ends at 0.65 of its start gap instead of 0.78, and of seeds 0 to 24, three
    end above 0.85 (seed 8 at 1.03; mean 0.68, sd 0.15), so one run's gap failed now and then
    on a bit-level change (once in CI, at 0.87). The mean of 8 sits about 3 standard errors
    below the limit (seeds 0 to 7: 0.62; mocogan 0.56). tests/data_gap_seeds.py measures it."""
    run = trained[arch]
    assert run.name == f"00000-{arch}"
    rows = metrics(run)
    assert [r["step"] for r in rows] == list(range(10, STEPS + 10, 10))
    later = rows[2:]
    assert np.mean([r["d"] for r in later]) < 0.9 * rows[0]["d"], rows
    assert np.mean([r["d_acc"] for r in later]) > max(0.6, rows[0]["d_acc"]), rows
    assert any("r1" in r for r in rows)
    ratios = [_gap_ratio(run, dataset[2])] + [
        _gap_ratio(short_run(tmp_path / str(seed), dataset, arch, seed=seed, log_every=STEPS,
                             checkpoint_every=STEPS), dataset[2])
        for seed in range(1, GAP_SEEDS)]
    assert np.mean(ratios) < 0.85, ratios
    assert (run / f"samples-{STEPS:07d}.mp4").stat().st_size > 0
    assert "0: " in (run / "samples.txt").read_text()


GAP_SEEDS = 8


def _gap_ratio(run, ts) -> float:
    """The run's data gap at its last checkpoint over the gap of its generator at the start."""
    cfg = AdversarialConfig.from_dict(json.loads((run / "config.json").read_text()))
    start = AdversarialTrainer.create(cfg, data=ts)
    end = AdversarialTrainer.create(cfg, data=ts)
    end.load(load_file(str(run / f"checkpoint-{STEPS:07d}.safetensors")))
    return _data_gap(end, ts) / _data_gap(start, ts)


def _stats(clips: torch.Tensor) -> torch.Tensor:
    """[B, T, 3, H, W] -> [B, 7]: mean colour, colour spread, mean change between frames."""
    motion = (clips[:, 1:] - clips[:, :-1]).abs().mean((1, 2, 3, 4))
    return torch.cat([clips.mean((-2, -1)).mean(1), clips.std((-2, -1)).mean(1),
                      motion[:, None]], 1)


@torch.no_grad()
def _data_gap(tr: AdversarialTrainer, ts) -> float:
    """How far the EMA generator's clips (one per data caption, fixed seeds) are from the
    data's: the L1 gap of the means and spreads of their colour and motion statistics."""
    captions = [c[0] for c in ts.captions]
    z = torch.randn(len(captions), tr.config.latent_dim, generator=torch.Generator().manual_seed(0))
    fake = tr.G_ema(tr.tokens(captions), z, np.arange(FRAMES) / ts.fps).float()
    real = torch.from_numpy(np.array(ts.clips)).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    f, r = _stats(fake), _stats(real)
    return float((f.mean(0) - r.mean(0)).abs().sum() + (f.std(0) - r.std(0)).abs().sum())


@pytest.mark.slow
@pytest.mark.parametrize("arch,extra", [(a, {}) for a in ARCHS] + [
    ("stylegan-v", {"contrastive": 1.0, "contrastive_bank": 16, "speed_negatives": 0.5,
                    "minimal_pairs": 1.0, "minimal_pair_draws": 4, "d_stem": 2, "d_steps": 2,
                    "d_patch": 0.5, "d_patch_side": 8, "image_contrastive": 0.5,
                    "model": {"time_modulation": "features"}}),
    ("stylegan-v", {"speed_ranking": 0.5, "speed_negatives": 0.5,
                    "speed_ranking_term": "caption"}),
    ("stylegan-v", {"speed_ranking": 0.5, "speed_ranking_term": "centred",
                    "d_velocity": True, "min_stride": 1, "max_stride": 2}),
    ("stylegan-v", {"speed_ranking": 0.5, "speed_ranking_term": "pair", "minimal_pairs": 1.0,
                    "minimal_pair_draws": 4, "min_stride": 1, "max_stride": 1}),
    ("mocogan", {"speed_ranking": 0.5})])
def test_resume_continues_bit_for_bit(tmp_path, dataset, arch, extra):
    whole = train(settings(tmp_path / "a", dataset, arch=arch, steps=8, log_every=1,
                           checkpoint_every=4, **extra), data=dataset[2])
    # From the step-4 checkpoint file (not its run's latest): a new run folder, same steps.
    again = train(settings(tmp_path / "b", dataset, arch=arch, steps=8, log_every=1,
                           checkpoint_every=4, **extra),
                  resume=str(whole / "checkpoint-0000004.safetensors"), data=dataset[2])
    assert again.parent == tmp_path / "b"
    a, b = metrics(whole)[4:], metrics(again)
    strip = lambda rows: [{k: v for k, v in r.items() if "per_s" not in k} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)
    fa = load_file(str(whole / "checkpoint-0000008.safetensors"))
    fb = load_file(str(again / "checkpoint-0000008.safetensors"))
    assert fa.keys() == fb.keys()
    for k in fa:
        assert torch.equal(fa[k], fb[k]), k


def test_stop_saves_the_step_and_says_how_to_resume(tmp_path, dataset):
    from t2v_rt.training.runs import TrainInterrupted

    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(TrainInterrupted, match="interrupted at step 2 of 40: saved .*"
                                              "continue with: t2v-rt train --resume"):
        train(settings(tmp_path, dataset, arch="stylegan-v"), stop=stop, data=dataset[2])
    run = tmp_path / "00000-stylegan-v"
    assert int(load_file(str(run / "checkpoint-0000002.safetensors"))["step"]) == 2
    record = json.loads((run / "run.json").read_text())
    assert record["checkpoints"] == ["checkpoint-0000002.safetensors"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_the_trained_generator_streams_on_every_cpu_backend(trained, dataset, arch):
    """``t2v-rt stream --model run/generator.safetensors`` with the torch and the onnxruntime
    backend (which exports the graphs on first use), both at once; the bytes decode."""
    import io

    import av

    weights = trained[arch] / "generator.safetensors"
    caption = dataset[2].captions[0][0]
    procs = {backend: subprocess.Popen(
        [sys.executable, "-m", "t2v_rt", "stream", caption, "--model", str(weights),
         "--backend", backend, "--frames", "3", "--no-realtime", "--size", "32",
         "--encoder", "x264"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for backend in ("torch", "onnxruntime")}
    for backend, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, (backend, err.decode()[-2000:])
        with av.open(io.BytesIO(out)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == 3 and frames[0].shape == (32, 32, 3), backend
        assert f"backend {backend}" in err.decode() or backend in err.decode()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_the_learned_vocabulary_refuses_unknown_words(trained, dataset, arch):
    config = read_config(trained[arch] / "generator.safetensors")
    ts = dataset[2]
    assert list(config.vocab) == ts.vocabulary
    assert config.resolution == SIZE
    front = config.front_end()
    for caps in ts.captions:                      # every caption of the data reads
        for c in caps:
            front.check(c)
    assert "ball" in config.vocab
    with pytest.raises(UsageError, match="unknown word 'bal'.*did you mean 'ball'"):
        front.check("a red bal")
    g = load_generator(trained[arch] / "generator.safetensors")
    assert g.config.ARCH == arch


def test_the_cli_refuses_unknown_words_and_bad_settings(tmp_path, dataset, capsys):
    rc = cli.main(["train", "--data", str(dataset[0]), "--arch", "stylegan-v",
                   "--set", "no_such_thing=1", "--run-dir", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "'no_such_thing' is neither a training setting" in err and "\n" == err[-1]
    rc = cli.main(["train", "--data", str(dataset[0]), "--arch", "no-such-arch",
                   "--run-dir", str(tmp_path), "--dry-run"])
    assert rc == 2 and "unknown architecture 'no-such-arch'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_dry_run_through_the_cli_names_the_run(tmp_path, dataset, capsys):
    rc = cli.main(["train", "--data", str(dataset[0]), "--arch", "mocogan", "--dry-run",
                   "--run-dir", str(tmp_path), "--set", f"size={SIZE}", "--set",
                   f"frames={FRAMES}", "--set", f"cache_dir={dataset[1]}",
                   "--set", "content_dim=8"])
    assert rc == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "00000-mocogan" in err and "mocogan generator" in err and "16x16 at 15 fps" in err
    saved = json.loads((tmp_path / "00000-mocogan" / "config.json").read_text())
    assert saved["arch"] == "mocogan" and saved["model"]["content_dim"] == 8
    assert saved["model"]["fps"] == 15 and saved["model"]["resolution"] == SIZE


def test_help_says_how_long_the_default_run_takes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "about an hour" in out and "--data" in out and "--minutes" in out


# --- the pieces ---------------------------------------------------------------------------


def _moving_square(b=3, t=5, size=24, seed=0):
    """Clips of a coloured square moving right one pixel per frame over a coloured ground."""
    g = torch.Generator().manual_seed(seed)
    clips = torch.empty(b, t, 3, size, size)
    for i in range(b):
        bg, fg = torch.rand(3, generator=g) * 2 - 1, torch.rand(3, generator=g) * 2 - 1
        clips[i] = bg.view(1, 3, 1, 1)
        y = int(torch.randint(2, size - 8, (1,), generator=g))
        for k in range(t):
            clips[i, k, :, y:y + 5, 4 + k:9 + k] = fg.view(3, 1, 1)
    return clips + 0.01 * torch.randn(clips.shape, generator=g)


@pytest.mark.parametrize("size", [16, 24, 33])
def test_augment_keeps_each_frames_mean_colour(size):
    clips = _moving_square(b=6, size=size, seed=size)
    p = augment_params(6, size, torch.Generator().manual_seed(1), translate=0.25, cutout=0.4)
    out = augment(clips, p)
    assert out.shape == clips.shape
    torch.testing.assert_close(out.mean((-2, -1)), clips.mean((-2, -1)), atol=1e-5, rtol=0)
    assert not torch.equal(out, clips)


def test_augment_moves_every_frame_of_a_clip_alike_so_motion_is_kept():
    clips = _moving_square(b=4, size=24, seed=3)
    p = augment_params(4, 24, torch.Generator().manual_seed(5), translate=0.25, cutout=0.0)
    assert "cut" not in p and bool((p["shift"] != 0).any())
    out = augment(clips, p)
    for i, (dy, dx) in enumerate(p["shift"].tolist()):
        # one shift for the whole clip: the same picture sequence, moved (direction kept)
        torch.testing.assert_close(out[i], torch.roll(clips[i], (dy, dx), dims=(-2, -1)))


def test_cutout_is_the_same_box_in_every_frame_filled_with_its_own_mean():
    clips = _moving_square(b=3, size=20, seed=4)
    p = augment_params(3, 20, torch.Generator().manual_seed(2), translate=0.0, cutout=0.3)
    assert bool((p["shift"] == 0).all())
    out = augment(clips, p)
    side = int(p["side"])
    for i, (y, x) in enumerate(p["cut"].tolist()):
        box = out[i, :, :, y:y + side, x:x + side]
        want = clips[i, :, :, y:y + side, x:x + side].mean((-2, -1), keepdim=True)
        torch.testing.assert_close(box, want.expand_as(box))
        mask = torch.ones(20, 20, dtype=torch.bool)
        mask[y:y + side, x:x + side] = False
        assert torch.equal(out[i][..., mask], clips[i][..., mask])


def test_augment_is_differentiable():
    clips = _moving_square(b=2, size=16).requires_grad_(True)
    p = augment_params(2, 16, torch.Generator().manual_seed(0))
    augment(clips, p).square().sum().backward()
    assert clips.grad is not None and bool(torch.isfinite(clips.grad).all())
    assert float(clips.grad.abs().sum()) > 0


def test_r1_is_the_squared_input_gradient():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 8, 8, generator=g)
    x = torch.randn(5, 3, 8, 8, generator=g, dtype=torch.float32).requires_grad_(True)
    logits = (x * w).sum((1, 2, 3)) + 0.5 * (x * x).sum((1, 2, 3))   # grad: w + x
    want = (w + x.detach()).square().sum((1, 2, 3)).mean()
    torch.testing.assert_close(r1_penalty(logits, x), want)
    r1_penalty(logits, x).backward()      # trained through: a graph to the input
    torch.testing.assert_close(x.grad, 2 * (w + x.detach()) / 5)


def test_losses_count_mismatched_captions_as_fakes():
    real, fake = torch.full((4,), 3.0), torch.full((4,), -3.0)
    right = d_loss(real, fake)
    mism = torch.tensor([5.0, 5.0, -5.0, -5.0])
    mask = torch.tensor([True, True, False, False])
    # mismatched pairs scored as real cost; pairs that are not really mismatched do not
    assert float(d_loss(real, fake, mism, mask)) > float(d_loss(real, fake, -mism, mask))
    torch.testing.assert_close(d_loss(real, fake, mism, ~mask), d_loss(real, fake, -mism.abs()))
    assert float(right) < 0.2
    assert ema_beta(0, 100, 0.05) == 0.0 and ema_beta(10**6, 100, 0.05) == 0.5 ** (1 / 100)


def _contrastive_reference(feat, text, owner, same):
    """The loss written out row by row: -log softmax over the captions that are negatives."""
    total = 0.0
    for n in range(feat.shape[0]):
        i = int(owner[n])
        keep = [j for j in range(text.shape[0]) if j == i or not bool(same[i, j])]
        logits = torch.stack([(feat[n].double() * text[j].double()).sum() for j in keep])
        total += float(torch.logsumexp(logits, 0) - logits[keep.index(i)])
    return total / feat.shape[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_contrastive_loss_is_cross_entropy_over_the_real_clips(seed):
    """Generated clip i against real clip i (and every unmarked other real clip), in cosine
    similarity over tau, written out by hand; pulling a fake towards its real lowers it."""
    g = torch.Generator().manual_seed(seed)
    b, extra, dim, tau = 4, 2, 6, 0.2
    fake, real = torch.randn(b, dim, generator=g), torch.randn(b + extra, dim, generator=g)
    same = torch.zeros(b, b + extra, dtype=torch.bool)
    same[torch.arange(b), torch.arange(b)] = True
    same[0, 2] = same[2, 0] = True                  # clips 0 and 2: the same caption
    same[1, b + 1] = True                           # a pair clip of clip 1's own data clip
    got = float(image_contrastive_loss(fake, real, same, tau))
    total = 0.0
    for i in range(b):
        keep = [j for j in range(b + extra) if j == i or not bool(same[i, j])]
        cos = torch.stack([torch.nn.functional.cosine_similarity(
            fake[i].double(), real[j].double(), dim=0) for j in keep]) / tau
        total += float(torch.logsumexp(cos, 0) - cos[keep.index(i)])
    assert got == pytest.approx(total / b, abs=1e-5)
    # scale-free (cosine); a fake pulled towards its own real scores lower; gradients flow
    assert float(image_contrastive_loss(3 * fake, real, same, tau)) == pytest.approx(got, abs=1e-5)
    assert float(image_contrastive_loss(fake + 4 * real[:b], real, same, tau)) < got
    f = fake.clone().requires_grad_(True)
    image_contrastive_loss(f, real, same, tau).backward()
    assert bool(torch.isfinite(f.grad).all()) and float(f.grad.abs().sum()) > 0
    # a marked column is no negative: unmarking one changes the loss
    unmarked = same.clone()
    unmarked[0, 2] = False
    assert float(image_contrastive_loss(fake, real, unmarked, tau)) != pytest.approx(got)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_contrastive_loss_is_cross_entropy_over_the_batch_captions(seed):
    g = torch.Generator().manual_seed(seed)
    b, t, dim = 5, 3, 7
    feat, text = torch.randn(b * t, dim, generator=g), torch.randn(b, dim, generator=g)
    owner = torch.arange(b).repeat_interleave(t)
    tokens = torch.tensor([[1, 2], [3, 4], [1, 2], [5, 0], [6, 7]])      # rows 0 and 2 equal
    same = (tokens[:, None] == tokens[None]).flatten(2).all(dim=2)
    got = contrastive_loss(feat, text, owner, same)
    assert abs(float(got) - _contrastive_reference(feat, text, owner, same)) < 1e-5
    # an identical caption is no negative: rows of clip 0 never see caption 2, and back
    no_same = torch.eye(b, dtype=torch.bool)
    assert float(got) != pytest.approx(float(contrastive_loss(feat, text, owner, no_same)))
    # fitting its own caption better lowers it; the gradient reaches the features
    f = feat.clone().requires_grad_(True)
    contrastive_loss(f, text, owner, same).backward()
    aligned = feat + 3 * text[owner]
    assert float(contrastive_loss(aligned, text, owner, same)) < float(got)
    assert bool(torch.isfinite(f.grad).all()) and float(f.grad.abs().sum()) > 0
    # more negatives than the batch (a caption bank): columns after the B batch captions;
    # a marked one (the same clip or text as the owner's) is left out, the rest count
    bank = torch.randn(4, dim, generator=g)
    columns = torch.cat([text, bank])
    marks = torch.cat([same, torch.zeros(b, 4, dtype=torch.bool)], 1)
    marks[1, b + 2] = True
    got = contrastive_loss(feat, columns, owner, marks)
    assert abs(float(got) - _contrastive_reference(feat, columns, owner, marks)) < 1e-5
    assert float(got) > float(contrastive_loss(feat, text, owner, same))      # more negatives
    unmarked = marks.clone()
    unmarked[1, b + 2] = False
    assert float(contrastive_loss(feat, columns, owner, unmarked)) != pytest.approx(float(got))


def test_contrastive_negatives_leave_out_a_clips_own_text_and_its_other_captions():
    """not_negatives(): column j is no negative of batch clip i when it is the same text
    (token ids or caption embeddings) or a caption of the same data clip."""
    from t2v_rt.training.trainer import not_negatives

    tokens = torch.tensor([[1, 2], [3, 4], [5, 6]])
    bank = torch.tensor([[1, 2], [7, 8], [9, 9], [3, 5]])
    ids = torch.tensor([10, 11, 12, 20, 11, 21, 22])       # bank column 1: clip 11's
    got = not_negatives(tokens, torch.cat([tokens, bank]), ids)
    want = torch.zeros(3, 7, dtype=torch.bool)
    want[0, 0] = want[1, 1] = want[2, 2] = True
    want[0, 3] = True                                      # clip 0's text, another clip
    want[1, 4] = True                                      # clip 1's other caption
    assert torch.equal(got, want)
    emb = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    cols = torch.cat([emb, emb[2:3], torch.randn(1, 5)])
    got = not_negatives(emb, cols, torch.tensor([0, 1, 2, 3, 4]))
    assert got.tolist() == [[True, False, False, False, False], [False, True, False, False, False],
                            [False, False, True, True, False]]


@torch.no_grad()
def _own_caption_loss(tr: AdversarialTrainer, ts) -> float:
    """The frame discriminator's contrastive loss on the first 8 data clips (each frame
    against the 8 clips' first captions): how much better each fits its own caption."""
    captions = [c[0] for c in ts.captions[:8]]
    tokens = tr.tokens(captions)
    real = torch.from_numpy(np.array(ts.clips[:8])).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    feat = tr.FD.features(real.flatten(0, 1))
    same = (tokens[:, None] == tokens[None]).flatten(2).all(dim=2)
    owner = torch.arange(8).repeat_interleave(real.shape[1])
    return float(contrastive_loss(feat, tr.FD.caption(tokens), owner, same))


@pytest.mark.slow
def test_contrastive_training_makes_real_clips_fit_their_own_captions(tmp_path, dataset):
    """200 steps with and without the contrastive loss (and no other caption negatives), from
    the same start, for three seeds: with it, the discriminator's loss of the data clips' own
    captions against the others (log 8 = 2.08 for one that cannot tell the captions apart)
    falls well below where it started and below where it ends without it, on average over the
    seeds. One seed is not enough: 200 adversarial steps end differently on different CPUs
    (the same seed gave a difference of 0.34 here and 0.14 on CI's machine; seeds 0 to 5 gave
    0.16 to 0.37 here, and the contrastive run's own loss 1.26 to 1.56)."""
    before, after = [], {0.0: [], 1.0: []}
    for seed in (0, 1, 2):
        for weight in (0.0, 1.0):
            cfg = settings(tmp_path / f"{seed}-{weight}", dataset, arch="stylegan-v",
                           contrastive=weight, matching=False, d_width=8, d_dim=16, seed=seed)
            tr = AdversarialTrainer.create(cfg.validate(), dataset[2])
            before.append(_own_caption_loss(tr, dataset[2]))
            rows = [tr.step(s) for s in range(1, 201)]
            assert all(np.isfinite(v) for row in rows for v in row.values())
            after[weight].append(_own_caption_loss(tr, dataset[2]))
    start, with_, without = (float(np.mean(x)) for x in (before, after[1.0], after[0.0]))
    assert start == pytest.approx(np.log(8), abs=0.05), before
    assert with_ < 0.75 * start and with_ < without - 0.1, (before, after)


def _colour_shape_set(folder, ts):
    """The data clips with one caption each, "a COLOUR SHAPE", written from the renderer's
    ground truth (meta.json; for this test only): many clips share all but one word."""
    import dataclasses

    meta = {c["video"]: c for c in json.loads((folder / "meta.json").read_text())["clips"]}
    captions = [[f"a {meta[v]['colour']} {meta[v]['shape']}"] for v in ts.videos]
    words = [w for w, _ in Counter(w for c in captions for w in c[0].split()).most_common()]
    return dataclasses.replace(ts, captions=captions, vocabulary=words)


def test_a_step_scores_each_real_clip_under_a_minimal_pair_of_its_caption(tmp_path, dataset,
                                                                        monkeypatch):
    """With minimal_pairs: one caption per clip drawn from the data's minimal pairs (another
    clip's, one word different); both discriminators score the real clips under it, as fakes
    only where the clip has one; with contrastive, those captions are extra negative columns
    (with their clips' ids). The draws come from the trainer's numpy generator in that order."""
    import copy

    from t2v_rt.training import trainer as T

    import dataclasses

    ts = _colour_shape_set(dataset[0], dataset[2])
    # every other clip's caption made one of a kind (a length no other caption has)
    ts = dataclasses.replace(ts, captions=[c if i % 2 == 0 else [c[0] + " very" * (i + 1)]
                                           for i, c in enumerate(ts.captions)])
    cfg = settings(tmp_path, dataset, arch="stylegan-v", minimal_pairs=2.0, contrastive=1.0,
                   d_width=8, d_dim=16)
    tr = AdversarialTrainer.create(cfg.validate(), ts)
    assert len(tr.pairs) >= 8 and not tr.pairs.paraphrases
    rng = copy.deepcopy(tr.rng)
    clip_ids, _, captions = ts.draw(rng, cfg.batch_size)
    pair_ids, pair_texts, has = tr.pairs.draw(rng, captions)
    assert has.any() and not has.all()
    for i in np.flatnonzero(has):
        own, other = captions[i].split(), pair_texts[i].split()
        assert pair_ids[i] != clip_ids[i] and pair_texts[i] in ts.captions[pair_ids[i]]
        assert sum(x != y for x, y in zip(own, other)) == 1
    negatives, columns = [], []
    real_negatives, real_contrastive = T.negatives_loss, T.contrastive_loss

    def spy_negatives(logits, mask):
        negatives.append((logits.detach().clone(), mask.clone()))
        return real_negatives(logits, mask)

    def spy_contrastive(feat, text, owner, same):
        columns.append((text.shape[0], same.clone()))
        return real_contrastive(feat, text, owner, same)

    monkeypatch.setattr(T, "negatives_loss", spy_negatives)
    monkeypatch.setattr(T, "contrastive_loss", spy_contrastive)
    row = tr.step(1)
    assert all(np.isfinite(v) for v in row.values())
    assert len(negatives) == 2                           # frame, then video discriminator
    (frame_logits, frame_mask), (video_logits, video_mask) = negatives
    assert frame_mask.tolist() == np.repeat(has, cfg.clip_frames).tolist()
    assert video_mask.tolist() == has.tolist()
    assert frame_logits.shape == (cfg.batch_size * cfg.clip_frames,)
    assert video_logits.shape == (cfg.batch_size,)
    b, extra = cfg.batch_size, int(has.sum())
    assert len(columns) == 4 and all(n == b + extra for n, _ in columns)   # G's 2, then D's 2
    same = columns[0][1]
    pair_cols = {int(k): b + j for j, k in enumerate(np.flatnonzero(has))}
    for i, col in pair_cols.items():
        assert not same[i, col]                          # its own minimal pair: a negative
    # with the setting off, no pairs are built or drawn, and the draws are those of before
    off = AdversarialTrainer.create(settings(tmp_path / "off", dataset, arch="stylegan-v",
                                             contrastive=1.0, d_width=8, d_dim=16).validate(), ts)
    assert off.pairs is None
    negatives.clear()
    off.step(1)
    assert negatives == []


def test_hardest_picks_the_candidate_with_the_largest_mean_projection():
    from t2v_rt.training.trainer import hardest

    g = torch.Generator().manual_seed(3)
    feat, codes = torch.randn(5, 6, 16, generator=g), torch.randn(5 * 7, 16, generator=g)
    codes.requires_grad_(True)
    got = hardest(feat, codes)
    scores = torch.einsum("btd,bkd->bk", feat, codes.detach().view(5, 7, 16))
    want = codes.detach().view(5, 7, 16)[torch.arange(5), scores.argmax(1)]
    assert torch.equal(got.detach(), want)
    got.sum().backward()                                  # the gradient reaches the chosen rows
    chosen = torch.zeros(5, 7, dtype=torch.bool)
    chosen[torch.arange(5), scores.argmax(1)] = True
    assert torch.equal(codes.grad.view(5, 7, 16).abs().sum(2) > 0, chosen)


def test_hard_minimal_pairs_score_each_clip_under_its_discriminators_hardest_candidate(
        tmp_path, dataset, monkeypatch):
    """minimal_pair_draws k > 1: k candidates per clip drawn after the batch; each
    discriminator's minimal-pair logits are the real clips under the candidate whose caption
    code it scores highest (frame: mean over the clip's frames); the contrastive columns get
    the first candidate of each clip that has one."""
    import copy
    import dataclasses

    from t2v_rt.training import trainer as T

    ts = _colour_shape_set(dataset[0], dataset[2])
    ts = dataclasses.replace(ts, captions=[c if i % 2 == 0 else [c[0] + " very" * (i + 1)]
                                           for i, c in enumerate(ts.captions)])
    k = 5
    cfg = settings(tmp_path, dataset, arch="stylegan-v", minimal_pairs=1.0, contrastive=1.0,
                   minimal_pair_draws=k, d_width=8, d_dim=16)
    tr = AdversarialTrainer.create(cfg.validate(), ts)
    rng = copy.deepcopy(tr.rng)
    clip_ids, _, captions = ts.draw(rng, cfg.batch_size)
    cand_ids, cand_texts, has = tr.pairs.draw_many(rng, captions, k)
    assert has.any() and not has.all()
    picks, negatives, columns = [], [], []
    real_hardest, real_negatives, real_contrastive = T.hardest, T.negatives_loss, T.contrastive_loss

    def spy_hardest(feat, codes):
        D = tr.FD if not picks else tr.VD                # frame, then video discriminator
        with torch.no_grad():
            want = D.caption(tr.tokens(cand_texts))
        assert torch.allclose(codes, want)
        out = real_hardest(feat, codes)
        b = feat.shape[0]
        scores = torch.einsum("btd,bkd->bk", feat.detach(), codes.detach().view(b, k, -1))
        picks.append((feat.shape, scores.argmax(1)))
        chosen = codes.detach().view(b, k, -1)[torch.arange(b), scores.argmax(1)]
        assert torch.equal(out.detach(), chosen)
        return out

    def spy_negatives(logits, mask):
        negatives.append(mask.clone())
        return real_negatives(logits, mask)

    firsts = [cand_texts[i * k] for i in np.flatnonzero(has)]

    def spy_contrastive(feat, text, owner, same):
        if not columns:                                  # G's, under the frame discriminator
            with torch.no_grad():
                want = tr.FD.caption(tr.tokens(firsts))
            assert torch.allclose(text[cfg.batch_size:], want)
        columns.append(text.shape[0])
        return real_contrastive(feat, text, owner, same)

    monkeypatch.setattr(T, "hardest", spy_hardest)
    monkeypatch.setattr(T, "negatives_loss", spy_negatives)
    monkeypatch.setattr(T, "contrastive_loss", spy_contrastive)
    row = tr.step(1)
    assert all(np.isfinite(v) for v in row.values())
    b, tc = cfg.batch_size, cfg.clip_frames
    assert [tuple(s) for s, _ in picks] == [(b, tc, cfg.d_dim), (b, 1, cfg.d_dim)]
    assert negatives[0].tolist() == np.repeat(has, tc).tolist()
    assert negatives[1].tolist() == has.tolist()
    assert columns == [b + int(has.sum())] * 4


def test_speed_negatives_are_the_same_clips_at_twice_or_half_the_speed(tmp_path, dataset):
    """warped(): the stride doubled or halved (never the same), inside the data clips; None
    when neither fits. The step's speed negatives leave out clips that do not move."""
    from t2v_rt.training import trainer as T

    cfg = settings(tmp_path, dataset, arch="stylegan-v", speed_negatives=0.5, d_width=8,
                   d_dim=16, clip_frames=3)
    tr = AdversarialTrainer.create(cfg.validate(), dataset[2])
    seen = set()
    for _ in range(200):
        idx, _, _, _ = tr.plan(4)
        stride = int(idx[1] - idx[0])
        w = tr.warped(idx)
        if w is None:
            assert 2 * stride * 2 >= FRAMES and stride % 2
            continue
        ws = int(w[1] - w[0])
        assert ws in (2 * stride, stride // 2) and ws != stride, (stride, ws)
        assert int(w[0]) >= 0 and int(w[-1]) < FRAMES
        assert torch.equal(w - w[0], torch.arange(3) * ws)
        seen.add((stride, ws))
    assert {(1, 2), (2, 1)} <= seen
    # a still clip (every frame the same) is no speed negative; a moving one is
    still = torch.zeros(1, 3, 3, SIZE, SIZE)
    moving = still.clone()
    moving[0, 1, :, :3, :3] = 1.0
    clips = torch.cat([still, moving])
    assert T.moving_clips(clips).tolist() == [False, True]
    noisy = still + (torch.rand(still.shape, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.15
    assert T.moving_clips(noisy).tolist() == [False]     # changes of 0.15 at most: noise
    real = torch.from_numpy(np.array(dataset[2].clips)).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    assert 0 < int(T.moving_clips(real).sum()) < CLIPS     # the data: still and moving clips
    row = tr.step(1)
    assert all(np.isfinite(v) for v in row.values())


def test_ranking_loss_against_a_written_out_reference():
    """ranking_loss: the mean of log(1 + exp(other - true)) over the kept rows; 0 if none."""
    g = torch.Generator().manual_seed(3)
    true, other = torch.randn(6, generator=g) * 3, torch.randn(6, generator=g) * 3
    mask = torch.tensor([True, False, True, True, False, True])
    want = np.mean([np.log1p(np.exp(float(o - t))) for t, o, m in zip(true, other, mask) if m])
    assert float(ranking_loss(true, other, mask)) == pytest.approx(want, rel=1e-5)
    assert float(ranking_loss(true, other, torch.zeros(6, dtype=torch.bool))) == 0.0
    # the loss falls as the true clip's logit rises above the other's
    assert float(ranking_loss(true + 5, other, mask)) < float(ranking_loss(true, other, mask))


@pytest.mark.parametrize("arch", ARCHS)
def test_speed_ranking_plays_the_generators_own_clip_at_twice_or_half_the_speed(
        tmp_path, dataset, monkeypatch, arch):
    """warped_times(): the times scaled by 2 or 1/2 from the same start (both drawn for a
    continuous generator; a recurrent one halves only even step offsets), so the warped clip
    is the same video: at twice the speed its frame i is the true clip's frame 2i, at half the
    speed its frame 2i is the true clip's frame i. In the step, the generator's loss gains
    speed_ranking x ranking_loss(true, warped, real clips that move); with speed_ranking 0
    (the default) the ranking is never computed."""
    from t2v_rt.training import trainer as T

    cfg = settings(tmp_path, dataset, arch=arch, speed_ranking=0.5, d_width=8, d_dim=16,
                   clip_frames=4, min_stride=1, max_stride=2)
    tr = AdversarialTrainer.create(cfg.validate(), dataset[2])
    factors = set()
    for _ in range(60):
        idx, rel, steps, starts = tr.plan(2)
        rel_w, steps_w = tr.warped_times(rel, steps)
        f = float(rel_w[1] / rel[1])
        factors.add((int(idx[1] - idx[0]), f))
        assert f in (2.0, 0.5)
        assert torch.equal(rel_w, rel * f)
        assert steps_w == [steps[0] + int((s - steps[0]) * f) for s in steps]
    if arch == "stylegan-v":
        assert {(1, 2.0), (1, 0.5), (2, 2.0), (2, 0.5)} <= factors
    else:                           # stride 1: odd offsets, so twice the speed only
        assert {(1, 2.0), (2, 2.0), (2, 0.5)} <= factors and (1, 0.5) not in factors

    # the warped clip is the same video at other times
    idx, rel, steps, starts = tr.plan(2)
    while int(idx[1] - idx[0]) != 2:
        idx, rel, steps, starts = tr.plan(2)
    tokens = tr.tokens([c[0] for c in dataset[2].captions[:2]])
    z = torch.randn(2, tr.config.latent_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        G = tr.G.eval()
        clip = tr.fake(tokens, z, rel, steps, starts)
        fast = tr.fake(tokens, z, rel * 2, [steps[0] + 2 * (s - steps[0]) for s in steps],
                       starts)
        slow = tr.fake(tokens, z, rel / 2, [steps[0] + (s - steps[0]) // 2 for s in steps],
                       starts)
    assert G.training is False and clip.std() > 0
    torch.testing.assert_close(fast[:, :2], clip[:, ::2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(slow[:, ::2], clip[:, :2], atol=1e-5, rtol=1e-4)
    assert (fast - clip).abs().amax() > 1e-3                # another motion

    # the step: G's loss = 1 (frame) + 1 (video) + 0.5 x ranking, the ranking over moving clips
    seen = []

    def spy(true, other, mask):
        seen.append((true.detach(), other.detach(), mask))
        return true.sum() * 0 + 1

    one = lambda x, *rest: x.sum() * 0 + 1  # noqa: E731 (keeps the graph)
    monkeypatch.setattr(T, "g_loss", one)
    monkeypatch.setattr(T, "ranking_loss", spy)
    row = tr.step(1)
    assert row["g"] == pytest.approx(1 + 1 + 0.5)
    (true, other, mask), = seen
    assert true.shape == other.shape == mask.shape == (cfg.batch_size,)
    assert mask.dtype == torch.bool and not torch.equal(true, other)
    # default: no ranking (and no draw for it)
    off = AdversarialTrainer.create(settings(tmp_path / "off", dataset, arch=arch, d_width=8,
                                             d_dim=16).validate(), dataset[2])
    assert off.cfg.speed_ranking == 0
    monkeypatch.setattr(T, "ranking_loss", lambda *a: pytest.fail("ranking computed"))
    off.step(1)


def test_caption_term_is_the_projection_logit_less_the_unconditional_verdict():
    """caption_term(phi, code) = <phi, code> = project(phi, code) - out(phi), written out."""
    from t2v_rt.training.discriminators import VideoDiscriminator

    torch.manual_seed(0)
    VD = VideoDiscriminator(3, SIZE, 0, base=8, dim=16, embedding_dim=16)
    feat, code = torch.randn(5, 16), torch.randn(5, 16)
    want = torch.tensor([sum(float(a) * float(b) for a, b in zip(f, c))
                         for f, c in zip(feat, code)])
    torch.testing.assert_close(VD.caption_term(feat, code), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(VD.project(feat, code) - VD.out(feat).squeeze(1), want,
                               atol=1e-5, rtol=1e-5)


def pair_every_clip(tr):
    """The tiny test set has few minimal pairs (4 caption texts): stand in k captions of
    random other data clips for each clip's, so every clip of a batch has candidates (what
    the pair term does with them does not depend on how they differ)."""
    data = tr.data

    def draw_many(rng, captions, k):
        ids = rng.integers(len(data.captions), size=(len(captions), k))
        texts = [data.captions[int(i)][0] for row in ids for i in row]
        return ids.astype(np.int64), texts, np.ones(len(captions), dtype=bool)

    tr.pairs.draw_many = draw_many


@pytest.mark.parametrize("term", ["logit", "caption", "centred", "pair"])
@pytest.mark.parametrize("what", ["verdict", "code"])
def test_speed_ranking_term_leaves_out_what_it_says(tmp_path, dataset, monkeypatch, term,
                                                    what):
    """The video discriminator's unconditional bias raised by 100 (verdict): the ranked
    logits of the whole (logit) rise by exactly 100, the caption's terms (caption, centred,
    pair) not at all. The same vector u added to every caption code (code: the caption MLP's
    last bias): the whole logit and the caption's term move by <phi, u>, which differs from
    clip to clip; the centred term (the caption's term less its mean over the batch's
    captions) and the pair term (less its value under a minimal pair's caption, chosen by
    margins that u leaves as they are) not at all."""
    from t2v_rt.training import trainer as T

    seen = []
    monkeypatch.setattr(T, "ranking_loss", lambda t, o, m: seen.append((t.detach(), o.detach()))
                        or t.sum() * 0)
    for shift in (0.0, 100.0):
        pairs = {"minimal_pairs": 1.0, "minimal_pair_draws": 4} if term == "pair" else {}
        cfg = settings(tmp_path / str(shift), dataset, arch="stylegan-v", speed_ranking=1.0,
                       speed_ranking_term=term, d_width=8, d_dim=16, min_stride=1,
                       max_stride=1, **pairs)
        tr = AdversarialTrainer.create(cfg.validate(), dataset[2])
        if pairs:
            pair_every_clip(tr)
        with torch.no_grad():
            if what == "verdict":
                tr.VD.out.bias += shift
            else:
                u = torch.randn(16, generator=torch.Generator().manual_seed(3))
                tr.VD.caption.proj[-1].bias += shift * u
        tr.step(1)
    (t0, o0), (t1, o1) = seen
    assert t0.std() > 0 and not torch.equal(t0, o0)
    if what == "verdict":
        lift = 100.0 if term == "logit" else 0.0
        torch.testing.assert_close(t1, t0 + lift, atol=1e-3, rtol=0)
        torch.testing.assert_close(o1, o0 + lift, atol=1e-3, rtol=0)
    elif term in ("centred", "pair"):
        torch.testing.assert_close(t1, t0, atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(o1, o0, atol=1e-3, rtol=1e-4)
    else:                           # <phi, u> x 100: a different lift for each clip
        lift = t1 - t0
        assert lift.abs().min() > 1e-2 and lift.std() > 1e-2


def test_speed_partner_is_the_minimal_pair_under_which_the_real_speed_wins_most():
    """speed_partner(real, warped, code, candidates): for each clip, the candidate code j with
    the largest <real - warped, code - candidate_j>, and that margin, written out on fresh
    random features; a clip whose candidates are all its own caption (no partner) has margin
    0."""
    from t2v_rt.training.trainer import speed_partner

    g = torch.Generator().manual_seed(5)
    b, k, dim = 6, 4, 8
    real, warped, code = (torch.randn(b, dim, generator=g) for _ in range(3))
    cands = torch.randn(b * k, dim, generator=g)
    cands[5 * k:] = code[5]                                     # clip 5: no partner
    partner, won = speed_partner(real, warped, code, cands)
    for i in range(b):
        m = [float(((real[i] - warped[i]) * (code[i] - cands[i * k + j])).sum())
             for j in range(k)]
        j = max(range(k), key=m.__getitem__)
        assert float(won[i]) == pytest.approx(m[j], abs=1e-5)
        torch.testing.assert_close(partner[i], cands[i * k + j])
    assert float(won[5]) == 0.0


def test_speed_ranking_pair_ranks_against_the_chosen_partner(tmp_path, dataset, monkeypatch):
    """In the step, the pair term ranks <phi, code - partner> of the generated clip and its
    warped copy, over the rows that move and whose partner ranks the real clip's own speed
    first (margin > 0); it needs minimal pairs (one line naming the fix)."""
    from t2v_rt.errors import ConfigError
    from t2v_rt.training import trainer as T

    chosen, seen = [], []
    real_partner = T.speed_partner

    def spy_partner(*args):
        out = real_partner(*args)
        chosen.append(out)
        return out

    monkeypatch.setattr(T, "speed_partner", spy_partner)
    monkeypatch.setattr(T, "ranking_loss", lambda t, o, m: seen.append((t.detach(), o.detach(),
                                                                        m)) or t.sum() * 0)
    cfg = settings(tmp_path, dataset, arch="stylegan-v", speed_ranking=1.0,
                   speed_ranking_term="pair", minimal_pairs=1.0, minimal_pair_draws=4,
                   d_width=8, d_dim=16, min_stride=1, max_stride=1)
    tr = AdversarialTrainer.create(cfg.validate(), dataset[2])
    pair_every_clip(tr)
    kept = 0
    for step in range(1, 6):
        tr.step(step)
        (partner, won), (true, other, mask) = chosen[-1], seen[-1]
        assert mask.dtype == torch.bool and mask.shape == won.shape == (cfg.batch_size,)
        assert not (mask & (won <= 0)).any()
        assert partner.shape == (cfg.batch_size, 16) and true.shape == other.shape == won.shape
        assert not torch.equal(true[mask], other[mask]) or not mask.any()
        kept += int(mask.sum())
    assert kept > 0 and len(chosen) == len(seen) == 5
    with pytest.raises(ConfigError, match="minimal_pairs above 0"):
        settings(tmp_path, dataset, arch="stylegan-v", speed_ranking=1.0,
                 speed_ranking_term="pair").validate()


@pytest.mark.parametrize("frame_weight", [1.0, 3.0, 0.0])
def test_frame_weight_weighs_the_frame_discriminators_terms_in_the_generators_loss(
        tmp_path, dataset, monkeypatch, frame_weight):
    """frame_weight multiplies the frame discriminator's adversarial and contrastive terms of
    the generator's loss, and nothing else: each term read as 1, the loss is
    frame_weight + 1 + contrastive x (frame_weight + 1)."""
    from t2v_rt.training import trainer as T

    kw = {} if frame_weight == 1.0 else {"frame_weight": frame_weight}
    cfg = settings(tmp_path, dataset, arch="stylegan-v", contrastive=0.5, d_width=8, d_dim=16,
                   **kw)
    assert cfg.frame_weight == frame_weight
    tr = AdversarialTrainer.create(cfg.validate(), dataset[2])
    one = lambda x, *rest: x.sum() * 0 + 1  # noqa: E731 (keeps the graph)
    monkeypatch.setattr(T, "g_loss", one)
    monkeypatch.setattr(T, "contrastive_loss", one)
    row = tr.step(1)
    assert row["g"] == pytest.approx(frame_weight + 1 + 0.5 * (frame_weight + 1))


def test_d_steps_update_the_discriminators_that_often_per_generator_update(tmp_path, dataset,
                                                                         monkeypatch):
    """A discriminator-only step (train_g false) changes both discriminators and neither the
    generator, its EMA nor its optimiser; with d_steps = 3 the loop makes two of them on fresh
    batches before each full step, and logs each generator step once."""
    cfg = settings(tmp_path, dataset, arch="stylegan-v", contrastive=0.5, minimal_pairs=1.0,
                   d_width=8, d_dim=16)
    tr = AdversarialTrainer.create(cfg.validate(), dataset[2])
    copy = lambda m: {k: v.detach().clone() for k, v in m.state_dict().items()}  # noqa: E731
    g, ema, fd, vd = copy(tr.G), copy(tr.G_ema), copy(tr.FD), copy(tr.VD)
    row = tr.step(0, train_g=False)
    assert "g" not in row and all(np.isfinite(v) for v in row.values())
    assert all(torch.equal(v, tr.G.state_dict()[k]) for k, v in g.items())
    assert all(torch.equal(v, tr.G_ema.state_dict()[k]) for k, v in ema.items())
    assert not tr.opt_g.state
    assert any(not torch.equal(v, tr.FD.state_dict()[k]) for k, v in fd.items())
    assert any(not torch.equal(v, tr.VD.state_dict()[k]) for k, v in vd.items())
    assert all(p.requires_grad for p in tr.FD.parameters())

    calls = []
    step = AdversarialTrainer.step

    def spy(self, s, train_g=True):
        calls.append((s, train_g))
        return step(self, s, train_g)

    monkeypatch.setattr(AdversarialTrainer, "step", spy)
    run = train(settings(tmp_path / "r", dataset, arch="stylegan-v", steps=2, d_steps=3,
                         log_every=1, checkpoint_every=2, d_width=8, d_dim=16), data=dataset[2])
    assert calls == [(0, False), (0, False), (0, True), (1, False), (1, False), (1, True)]
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    assert all({"g", "d", "d_acc"} <= r.keys() for r in rows)


def test_min_stride_bounds_the_clip_spacing_and_may_fix_it(tmp_path, dataset):
    """plan(): strides from min_stride to max_stride (capped by the data clips); equal bounds
    give one spacing always, and the times follow it; min_stride above max_stride is refused."""
    from t2v_rt.errors import ConfigError

    def strides(**kw):
        cfg = settings(tmp_path, dataset, arch="stylegan-v", d_width=8, d_dim=16, **kw)
        tr = AdversarialTrainer.create(cfg.validate(), dataset[2])
        out = set()
        for _ in range(100):
            idx, rel, _, _ = tr.plan(4)
            s = int(idx[1] - idx[0])
            assert torch.equal(idx - idx[0], torch.arange(len(idx)) * s)
            assert torch.allclose(rel, (idx - idx[0]).double() / tr.fps)
            assert int(idx[0]) >= 0 and int(idx[-1]) < FRAMES
            out.add(s)
        return out

    assert strides(clip_frames=3, max_stride=3) == {1, 2, 3}
    assert strides(clip_frames=3, min_stride=2, max_stride=3) == {2, 3}
    assert strides(clip_frames=3, min_stride=3, max_stride=3) == {3}
    assert strides(clip_frames=4, min_stride=3, max_stride=3) == {2}   # 3 x 3 > 7: capped
    with pytest.raises(ConfigError, match=r"min_stride \(4\) must not exceed max_stride \(3\)"):
        settings(tmp_path, dataset, min_stride=4, max_stride=3).validate()


def test_at_a_fixed_stride_a_fast_time_feature_passes_for_a_slower_one():
    """The blind spot aliasing_warning names, on the stylegan-v config's own time features:
    sampled every 0.2 s (stride 3 at 15 fps) from any start, the 0.25-s feature (4 Hz) is
    the 1-s feature (1 Hz) played backwards from another phase, so a video discriminator that
    sees only those frames cannot tell the two motions apart. At stride 2 (0.133 s), and at
    the full 15 fps, it can."""
    from t2v_rt.models.stylegan_v.config import StyleganVConfig

    cfg = StyleganVConfig(resolution=16, channels=[8, 8, 8])
    periods, k = cfg.periods, cfg.time_periods
    i4, i1 = periods.index(0.25), periods.index(1.0)

    def product(t):                       # e^(i 2 pi 4 t) x e^(i 2 pi 1 t): constant iff the
        f = cfg.time_features(t).astype(np.float64)     # 4 Hz one is the 1 Hz one reversed
        return (f[:, i4] + 1j * f[:, k + i4]) * (f[:, i1] + 1j * f[:, k + i1])

    rng = np.random.default_rng(7)
    for t0 in rng.uniform(0, 30, 5):
        r = product(t0 + 0.2 * np.arange(6))
        assert np.allclose(r, r[0], atol=1e-5), t0
        for spacing in (2 / 15, 1 / 15):
            r = product(t0 + spacing * np.arange(6))
            assert not np.allclose(r, r[0], atol=1e-2), (t0, spacing)


def test_the_trainer_warns_when_one_stride_leaves_a_blind_spot(tmp_path, dataset, capsys):
    """aliasing_warning: a fixed stride above 1 is named with its sampling rate, an example
    alias, the alternative and what it cost; a range of strides, stride 1 or no video clip is
    quiet. The trainer logs it once as it starts, for the strides it really draws (capped by
    the data), for any architecture (a recurrent generator can oscillate too)."""
    from t2v_rt.training.trainer import aliasing_warning

    msg = aliasing_warning(3, 3, 15.0, 6)
    assert msg and "fixed stride of 3 (15 fps data)" in msg and "0.2 s apart" in msg
    assert "|f - n x 5| Hz" in msg and "(4 Hz passes for 1 Hz)" in msg
    assert "--set min_stride=2" in msg
    assert "cost the speed word" in msg                     # and what that cost in the runs
    assert aliasing_warning(2, 3, 15.0, 6) is None          # strides 2 and 3: no common rate
    assert aliasing_warning(1, 1, 15.0, 6) is None          # every frame
    assert aliasing_warning(3, 3, 15.0, 1) is None          # no video clip
    assert "passes for" not in aliasing_warning(15, 15, 30.0, 4)   # 2 Hz sampling: no example

    def warned(arch="stylegan-v", **kw):
        cfg = settings(tmp_path, dataset, arch=arch, d_width=8, d_dim=16, **kw)
        capsys.readouterr()
        AdversarialTrainer.create(cfg.validate(), dataset[2])
        err = capsys.readouterr().err
        return [line for line in err.splitlines() if "blind spot" in line]

    fixed = dict(clip_frames=3, min_stride=3, max_stride=3)
    lines = warned(**fixed)
    assert len(lines) == 1 and "fixed stride of 3 (15 fps data)" in lines[0], lines
    assert len(warned(arch="mocogan", **fixed)) == 1
    assert warned(clip_frames=3, min_stride=2, max_stride=3) == []
    assert warned(clip_frames=3, max_stride=3) == []         # strides 1..3
    # 4 frames at stride 3 do not fit 8-frame clips: stride 2 is drawn, 0.133 s apart
    lines = warned(clip_frames=4, min_stride=3, max_stride=3)
    assert len(lines) == 1 and "fixed stride of 2" in lines[0] and "0.133 s" in lines[0], lines


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_velocity_channels_are_the_same_for_one_motion_at_every_stride(seed):
    """velocity_unit u: each neighbour difference times u / its gap, the rest of the input
    as without it. A clip that changes at one rate per pixel (fresh random start a and rate
    v: x(t) = a + v t), sampled at strides 2 and 3 of 15 fps from random starts, gives the
    same difference channels, u v, at both; without it they differ by the ratio of the
    gaps. Times that do not increase are refused."""
    from t2v_rt.training.discriminators import VideoDiscriminator

    torch.manual_seed(seed)
    frames, res, unit = 4, 8, 0.2
    plain = VideoDiscriminator(frames, res, 0, base=8, dim=16, embedding_dim=16)
    vel = VideoDiscriminator(frames, res, 0, base=8, dim=16, embedding_dim=16,
                             velocity_unit=unit)
    a, v = torch.rand(2, 1, 3, res, res) - 0.5, torch.randn(2, 1, 3, res, res) * 0.3
    starts = torch.rand(2, 1) * 2
    diff = 3 * frames
    out = {}
    for stride in (2, 3):
        times = starts + torch.arange(frames) * (stride / 15)
        clips = a + v * times[:, :, None, None, None]
        p, q = plain.prepare(clips, times), vel.prepare(clips, times)
        torch.testing.assert_close(q[:, :diff], p[:, :diff])                 # frames
        torch.testing.assert_close(q[:, diff + 3 * (frames - 1):],            # times
                                   p[:, diff + 3 * (frames - 1):])
        torch.testing.assert_close(q[:, diff:diff + 3 * (frames - 1)],
                                   p[:, diff:diff + 3 * (frames - 1)] * unit / (stride / 15))
        out[stride] = (p[:, diff:diff + 3 * (frames - 1)], q[:, diff:diff + 3 * (frames - 1)])
        torch.testing.assert_close(out[stride][1], (unit * v).expand(2, frames - 1, 3, res, res)
                                   .reshape(2, -1, res, res), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[2][1], out[3][1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[3][0], out[2][0] * 1.5, atol=1e-5, rtol=1e-4)
    assert vel(clips, times, torch.randn(2, 16)).shape == (2,)
    with pytest.raises(ValueError, match="frame times must increase"):
        vel.prepare(clips, times.flip(1))
    with pytest.raises(ValueError, match="velocity_unit"):
        VideoDiscriminator(frames, res, 0, velocity_unit=-1.0)


def test_d_velocity_sets_the_unit_to_the_largest_strides_gap(tmp_path, dataset):
    """--set d_velocity=true: the trainer's video discriminator divides by gaps in units of
    the largest stride it draws (capped by the data's clips) over the data's frame rate; off,
    it leaves the differences as they are."""
    def unit(**kw):
        cfg = settings(tmp_path, dataset, arch="stylegan-v", d_width=8, d_dim=16, **kw)
        return AdversarialTrainer.create(cfg.validate(), dataset[2]).VD.velocity_unit

    assert unit(clip_frames=3, min_stride=2, max_stride=3) == 0.0
    assert unit(clip_frames=3, min_stride=2, max_stride=3, d_velocity=True) == pytest.approx(
        3 / 15)
    assert unit(clip_frames=4, min_stride=2, max_stride=3, d_velocity=True) == pytest.approx(
        2 / 15)                                                 # 4 x 3 > 8 frames: capped


@pytest.mark.parametrize("res", [8, 16, 24, 48])
def test_discriminators_read_any_resolution_and_the_caption(res):
    from t2v_rt.training.discriminators import FrameDiscriminator, VideoDiscriminator

    torch.manual_seed(res)
    fd, vd = FrameDiscriminator(res, 20, base=8, dim=16), VideoDiscriminator(3, res, 20, base=8, dim=16)
    x = torch.randn(2, 3, 3, res, res)
    tokens = torch.tensor([[1, 2, 0], [3, 4, 5]])
    times = torch.tensor([[0.0, 0.1, 0.2]] * 2)
    assert fd(x[:, 0], tokens).shape == (2,) and vd(x, times, tokens).shape == (2,)
    other = torch.tensor([[6, 7, 0], [8, 9, 10]])
    assert not torch.allclose(fd(x[:, 0], tokens), fd(x[:, 0], other))
    assert not torch.allclose(vd(x, times, tokens), vd(x, times, other))
    with pytest.raises(ValueError, match="clips must be"):
        vd(x[:, :2], times[:, :2], tokens)


@pytest.mark.parametrize("stem", [1, 2])
def test_a_frame_discriminator_stem_is_stride_1_convs_before_the_trunk(stem):
    """d_stem: stem stride-1 3x3 convs of base channels at full resolution, leaky ReLU 0.2
    after each, then the unchanged trunk; written out by hand on fresh random inputs. Without
    a stem the parameter names are those of a discriminator that never had one."""
    from t2v_rt.training.discriminators import FrameDiscriminator

    torch.manual_seed(100 + stem)
    base, res = 8, 16
    fd = FrameDiscriminator(res, 20, base=base, dim=16, stem=stem)
    plain = FrameDiscriminator(res, 20, base=base, dim=16)
    assert not any(k.startswith("stem") for k in plain.state_dict())
    assert set(plain.state_dict()) == {k for k in fd.state_dict() if not k.startswith("stem")}
    x = torch.randn(3, 3, res, res)
    tokens = torch.tensor([[1, 2, 0], [3, 4, 5], [6, 0, 0]])
    h = x
    convs = [m for m in fd.stem if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == stem
    for conv in convs:
        assert conv.weight.shape[:2] == (base, h.shape[1]) and conv.stride == (1, 1)
        h = torch.nn.functional.leaky_relu(torch.nn.functional.conv2d(
            h, conv.weight, conv.bias, padding=1), 0.2)
    assert h.shape == (3, base, res, res)
    feat = fd.fc(fd.trunk(h))
    want = (fd.out(feat)[:, 0] + (feat * fd.caption(tokens)).sum(1))
    torch.testing.assert_close(fd(x, tokens), want, rtol=1e-5, atol=1e-6)
    # the stem is trained: its weights get the logit's gradient
    fd(x, tokens).sum().backward()
    assert all(c.weight.grad is not None and c.weight.grad.abs().sum() > 0 for c in convs)
    with pytest.raises(ValueError, match="stem convs must be 0 or more"):
        FrameDiscriminator(res, 20, stem=-1)


@pytest.mark.parametrize("side", [32, 16, 8])
def test_patch_verdicts_are_text_aware_one_per_region_and_see_only_their_region(side):
    """patch_side S: logits [N, S * S] from 1x1 convs on the trunk's map of side S, written out
    by hand (out(h) + <embed(h), caption> at each place); phi is the whole frame's, unchanged;
    a change in one corner of the frame moves only the verdicts of the regions that see it;
    the caption moves them all. Without patch_side the parameter names are unchanged."""
    from t2v_rt.training.discriminators import FrameDiscriminator

    torch.manual_seed(side)
    res, base, dim = 64, 8, 16
    fd = FrameDiscriminator(res, 20, base=base, dim=dim, stem=2, patch_side=side)
    plain = FrameDiscriminator(res, 20, base=base, dim=dim, stem=2)
    assert set(plain.state_dict()) == {k for k in fd.state_dict() if not k.startswith("patch")}
    assert plain.patch is None and plain.features_and_patches(torch.randn(1, 3, res, res))[1] is None
    x = torch.randn(3, 3, res, res)
    tokens = torch.tensor([[1, 2, 0], [3, 4, 5], [6, 0, 0]])
    phi, patches = fd.features_and_patches(x)
    torch.testing.assert_close(phi, fd.features(x), rtol=0, atol=0)
    assert patches.shape[2:] == (side, side)
    text = fd.caption(tokens)
    logits = fd.project_patches(patches, text)
    assert logits.shape == (3, side * side) and logits.dtype == torch.float32
    h = patches
    for layer in list(fd.trunk)[fd.patch_layers:]:
        h = layer(h)
    torch.testing.assert_close(fd.fc(h), phi)
    out = torch.nn.functional.conv2d(patches, fd.patch["out"].weight, fd.patch["out"].bias)
    code = torch.nn.functional.conv2d(patches, fd.patch["embed"].weight, fd.patch["embed"].bias)
    want = out[:, 0] + (code * text[:, :, None, None]).sum(1)
    torch.testing.assert_close(logits, want.flatten(1), rtol=1e-5, atol=1e-5)
    # a 4x4 change in the top-left corner: the far corner's regions do not move
    y = x.clone()
    y[:, :, :4, :4] = torch.randn(3, 3, 4, 4)
    moved = (fd.project_patches(fd.features_and_patches(y)[1], text) != logits).view(3, side, side)
    assert moved[:, 0, 0].all()
    assert not moved[:, side // 2:, side // 2:].any()
    other = fd.caption(torch.tensor([[7, 8, 0], [9, 0, 0], [10, 11, 12]]))
    assert (fd.project_patches(patches, other) != logits).all()
    # trained through: the patch convs get the gradient
    fd.project_patches(fd.features_and_patches(x)[1], text).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fd.patch.parameters())
    with pytest.raises(ValueError, match="one of the trunk's maps, of side 32, 16, 8, 4"):
        FrameDiscriminator(res, 20, base=base, dim=dim, patch_side=12)


def test_patch_verdicts_join_both_players_losses(tmp_path, dataset, monkeypatch):
    """d_patch: the generator's loss is frame_weight x (frame + d_patch x regions) + video;
    a step trains the patch convs; a side the frame discriminator has no map of is refused
    with the sides it has."""
    from t2v_rt.errors import ConfigError
    from t2v_rt.training import trainer as T

    cfg = settings(tmp_path, dataset, arch="stylegan-v", d_patch=0.5, d_patch_side=4,
                   frame_weight=2.0, d_width=8, d_dim=16)
    tr = AdversarialTrainer.create(cfg.validate(), dataset[2])
    assert tr.FD.patch is not None
    before = {k: v.clone() for k, v in tr.FD.patch.state_dict().items()}
    calls = []
    real_g_loss = T.g_loss

    def spy(x):
        calls.append(tuple(x.shape))
        return x.sum() * 0 + 1

    monkeypatch.setattr(T, "g_loss", spy)
    row = tr.step(0)
    assert row["g"] == pytest.approx(2.0 * (1 + 0.5) + 1)
    n = cfg.batch_size * cfg.clip_frames
    assert calls == [(n,), (n, 16), (cfg.batch_size,)]
    monkeypatch.setattr(T, "g_loss", real_g_loss)
    row = tr.step(4)                          # an R1 step (r1_every 4) with the patch verdicts
    assert all(np.isfinite(v) for v in row.values()) and row["r1"] > 0
    assert any(not torch.equal(v, tr.FD.patch.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ConfigError, match="d_patch_side 5 .* use one of 8, 4"):
        settings(tmp_path, dataset, arch="stylegan-v", d_patch=0.5, d_patch_side=5).validate()


@pytest.mark.parametrize("pairs", [False, True])
def test_image_contrastive_joins_the_generator_loss(tmp_path, dataset, monkeypatch, pairs):
    """image_contrastive: the generator's loss gains weight x the loss of its clips' frame
    features (mean over frames) against the real clips' (the batch's, then the minimal pairs'
    real clips), with the batch's same-caption marks; the generator trains through it."""
    from t2v_rt.training import trainer as T

    extra = {"minimal_pairs": 1.0} if pairs else {}
    cfg = settings(tmp_path, dataset, arch="stylegan-v", image_contrastive=0.25,
                   image_contrastive_tau=0.5, d_width=8, d_dim=16, **extra)
    tr = AdversarialTrainer.create(cfg.validate(), dataset[2])
    seen = []

    def spy(fake, real, same, tau):
        seen.append((tuple(fake.shape), tuple(real.shape), same.clone(), tau,
                     fake.requires_grad))
        return fake.sum() * 0 + 2.0

    monkeypatch.setattr(T, "image_contrastive_loss", spy)
    monkeypatch.setattr(T, "g_loss", lambda x: x.sum() * 0 + 1)
    drawn = []
    if pairs:
        draw_many = tr.pairs.draw_many

        def recorded(rng, captions, k):
            ids, texts, has = draw_many(rng, captions, k)
            drawn.append(has)
            return ids, texts, has
        monkeypatch.setattr(tr.pairs, "draw_many", recorded)
    row = tr.step(1)
    for step in range(2, 40):               # the test data's few pairs: until a batch has one
        if not pairs or drawn[-1].any():
            break
        row = tr.step(step)
    b = cfg.batch_size
    fake_shape, real_shape, same, tau, grad = seen[-1]
    assert fake_shape == (b, cfg.d_dim) and tau == 0.5 and grad
    assert row["g"] == pytest.approx(1.0 + 1.0 + 0.25 * 2.0)
    n_real = real_shape[0]
    assert real_shape == (n_real, cfg.d_dim) and same.shape == (b, n_real)
    assert bool(same[torch.arange(b), torch.arange(b)].all())
    # the batch's real clips, then one per clip that has a minimal pair
    assert n_real == b + (int(drawn[-1].sum()) if pairs else 0)
    if pairs:
        assert drawn[-1].any(), "no batch had a clip with a minimal pair"
    # without the spy, a step runs, is finite, and a D-only step computes no such term
    monkeypatch.undo()
    seen.clear()
    row = tr.step(2)
    assert all(np.isfinite(v) for v in row.values())
    monkeypatch.setattr(T, "image_contrastive_loss", spy)
    tr.step(3, train_g=False)
    assert seen == []


@pytest.mark.parametrize("matching", [True, False])
def test_patch_verdicts_join_the_discriminator_loss_with_and_without_matching(
        tmp_path, dataset, monkeypatch, matching):
    """The discriminators' loss with d_patch: the regions are scored like the whole frames,
    real vs generated, plus real under another clip's caption when matching is on, and add
    d_patch x their loss; the logged D loss is that sum."""
    from t2v_rt.training import trainer as T

    cfg = settings(tmp_path, dataset, arch="stylegan-v", d_patch=0.5, d_patch_side=4,
                   matching=matching, d_width=8, d_dim=16)
    tr = AdversarialTrainer.create(cfg.validate(), dataset[2])
    calls, values = [], []
    real_d_loss = T.d_loss

    def spy(*args):
        calls.append([tuple(a.shape) for a in args])
        values.append(real_d_loss(*args))
        return values[-1]

    monkeypatch.setattr(T, "d_loss", spy)
    row = tr.step(1)                          # not an R1 step: loss_d alone
    n, b = cfg.batch_size * cfg.clip_frames, cfg.batch_size
    frames, videos, regions = [(n,), (n,)], [(b,), (b,)], [(n, 16), (n, 16)]
    if matching:
        frames, videos, regions = (frames + [(n,), (n,)], videos + [(b,), (b,)],
                                   regions + [(n, 16), (n, 16)])
    assert calls == [frames, videos, regions]
    expected = float((values[0] + values[1] + 0.5 * values[2]).detach())
    assert row["d"] == pytest.approx(expected, rel=1e-5)


def test_r1_video_scale_weighs_only_the_video_discriminator(tmp_path, dataset, monkeypatch):
    """r1_video_scale=0 leaves the video discriminator's R1 step as with no R1 at all, and
    the frame discriminator's as with R1, and skips the video R1's double-backward; at the
    default (1) R1 moves both."""
    from t2v_rt.training import trainer as T

    penalties = []
    real_penalty = T.r1_penalty

    def spy(*args):
        penalties.append(1)
        return real_penalty(*args)

    monkeypatch.setattr(T, "r1_penalty", spy)

    def after_r1_step(**kw):
        cfg = settings(tmp_path, dataset, arch="stylegan-v", **kw)
        tr = AdversarialTrainer.create(cfg.validate(), dataset[2])
        penalties.clear()
        tr.step(4)                            # an R1 step (r1_every 4)
        assert len(penalties) == (0 if cfg.r1_gamma == 0 else
                                  1 if cfg.r1_video_scale == 0 else 2)
        return ({k: v.clone() for k, v in tr.FD.state_dict().items()},
                {k: v.clone() for k, v in tr.VD.state_dict().items()})

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    f0, v0 = after_r1_step(r1_gamma=0.0)
    f1, v1 = after_r1_step(r1_gamma=50.0)
    fs, vs = after_r1_step(r1_gamma=50.0, r1_video_scale=0.0)
    assert same(f0, after_r1_step(r1_gamma=0.0)[0])          # the step is deterministic
    assert not same(f1, f0) and not same(v1, v0)
    assert same(fs, f1) and same(vs, v0)
