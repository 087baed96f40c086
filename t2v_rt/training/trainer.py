"""``t2v-rt train --data DIR --arch ARCH``: adversarial training of any registered architecture
on a folder of captioned videos, with no paired targets.

Per step (``batch_size`` clips):

1. data: ``batch_size`` real clips and one caption each (:meth:`TrainingSet.sample`, numpy
   generator), of which ``clip_frames`` frames at a random stride (``min_stride`` to
   ``max_stride`` data frames, one per step) are kept (the same times for the generated clips);
2. generator: tokens (the generator's own front end over the caption), z ~ N(0, 1), then
   through the generator interface only: ``style(tokens, z)``, then per-frame features at the
   clip's times (continuous: ``config.time_features`` of random start offsets plus the frame
   times; recurrent: ``initial_state`` then one ``step`` per frame at the native rate, which
   is the data's rate) and ``synthesize``. Loss: non-saturating, against a text-aware frame
   discriminator (with ``d_stem`` > 0, full-resolution stride-1 convs before its trunk; with
   ``d_patch`` > 0, also its verdicts per region, weighted by it) and a text-aware video
   discriminator (:mod:`.discriminators`; with ``d_velocity``, it reads each neighbour
   difference divided by its time gap, a rate that is the same at every stride); with
   ``image_contrastive`` > 0, also the real-fake image contrastive loss in the frame
   discriminator's features (each generated clip nearer the real clip of its caption than the
   other real clips of the batch and of the minimal pairs:
   :func:`.losses.image_contrastive_loss`);
3. discriminators: real vs generated vs real-with-another-clip's-caption (matching-aware),
   each region too with ``d_patch`` > 0 (weighted by it), R1 on the reals every ``r1_every``
   steps (lazy, scaled up by it; the video discriminator's times ``r1_video_scale``); with
   ``d_steps`` n > 1, n - 1 updates of the discriminators alone on fresh batches come first;
   with ``contrastive`` > 0,
   also the image-caption contrastive loss over the batch (:func:`.losses.contrastive_loss`:
   every other caption of the batch is a negative, for D on the real clips and for G on its
   own; with ``contrastive_bank`` > 0, also that many captions of random data clips, drawn
   each step; with ``minimal_pairs`` > 0, also a caption of another clip that differs from
   each clip's own in one word, :mod:`.negatives`), which the projection discriminators
   compute from the features they already have; with ``minimal_pairs`` > 0, each real clip
   under that one-word-different caption is also a fake for both discriminators (with
   ``minimal_pair_draws`` k > 1: under the one of k such captions each finds most plausible,
   :func:`hardest`; the contrastive negatives keep the first);
   with ``speed_negatives`` > 0, the real clips of the step played at twice or half their
   speed (another stride, shown with the true stride's times) count as fakes for the video
   discriminator under their own caption, so it must judge the speed its caption and the
   frames' times imply, not only the kind of motion (clips that do not move are left out);
   with ``speed_ranking`` > 0, the generator's own clip played at twice or half its speed
   (the same video, z and caption, at other times: :meth:`AdversarialTrainer.warped_times`)
   must score lower under its caption in the video discriminator than the clip at its true
   speed (:func:`.losses.ranking_loss`, over the clips whose real clip moves). Whatever else
   the clip shows is the same in both, so the ranking's gradient comes from the motion's
   rate alone (it did not keep slow prompts slow in the one shapes run with it: the whole
   logit already ranked the generator's one speed first; docs/training.md). With
   ``speed_ranking_term`` "caption", only the caption's term of the two logits is ranked,
   so the unconditional verdict (which may prefer the generator's own rate whatever the
   caption) cancels too (slow prompts stayed fast with it as well: the caption's term,
   too, ranked the generator's one speed first). With "centred", that term less its mean
   over the batch's captions, ``<phi, code - mean code>``: the part of the verdict that every
   caption shares cancels as well, and what is left is how much more the clip's own caption
   prefers its speed than the batch's captions do on average (a model-agnostic stand-in for
   the speed word's share, the only part that ranked the slower copy of a slow clip first;
   slow prompts stayed fast with it too: centred on the batch, the term still ranked the
   generator's one speed first).
   With "pair", the caption's term less its value under one of the clip's minimal-pair
   captions, ``<phi, code - partner>``: of its ``minimal_pair_draws`` candidates, the one
   under which the real clip at its stride beats itself at twice or half of it by most
   (:func:`speed_partner`), so the word the two captions differ in is the one the data's
   speeds tell apart (found from the data, not from a grammar), and clips for which no
   candidate ranks the real speed first are not ranked (slow prompts stayed fast with it
   as well: at the end it was even between the generator's one speed and the slower copy);
4. EMA of the generator (the one exported and sampled).

Both see the clips through DiffAugment when ``augment`` (translation and cutout only, which
keep colours and directions: :mod:`.losses`). Adam with betas (0, 0.99) (StyleGAN2); bf16
autocast on CUDA. The architecture's config gets the data's resolution, its learned
vocabulary (``vocab``: the words of the captions, most frequent first, so the stream refuses
any other word with a suggestion) and, for a recurrent model, the data's frame rate as its
native rate; ``channels`` are fitted to the resolution when the preset's do not match. With a
pretrained text encoder (``--set text_encoder=all-MiniLM-L6-v2``) no vocabulary is learnt:
each distinct caption is embedded once (frozen, a table), the generator's style network and
both discriminators read that embedding, and the model streams prompts with any words.

Runs, checkpoints (G, G_ema, both discriminators, both optimisers, the step and both random
generators' states: a resume continues bit for bit), Ctrl-C, progress and samples work as for
the shapes trainer (:mod:`t2v_rt.training.runs`).
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from t2v_rt.errors import ConfigError, UsageError
from t2v_rt.generators.config import bounded
from t2v_rt.training import runs
from t2v_rt.training.discriminators import (
    MIN_RESOLUTION, FrameDiscriminator, VideoDiscriminator, trunk_sides,
)
from t2v_rt.training.losses import (
    augment,
    augment_params,
    contrastive_loss,
    d_loss,
    ema_beta,
    ema_update,
    g_loss,
    image_contrastive_loss,
    negatives_loss,
    r1_penalty,
    ranking_loss,
)
from t2v_rt.training.negatives import MinimalPairs
from t2v_rt.training.runs import MAX_STEPS, TrainInterrupted, log
from t2v_rt.training.settings import (
    NAME_RE,
    Settings,
    check_setting,
    flag,
    parse_value,
    read_json_file,
    show,
    text,
)

MAX_WEIGHT = 1e6
# A data clip moves (and has a speed to change) when some pair of neighbouring frames differs
# by more than SPEED_CHANGE (in [-1, 1] units: 25/255) in at least SPEED_PIXELS pixels;
# H.264 noise on a still scene stays below that.
SPEED_CHANGE, SPEED_PIXELS = 0.2, 4
# batch_size x clip_frames x resolution^2: what one step generates. 2^30 pixels (12 GiB of
# float32 RGB per copy) is far beyond any run this trainer is for.
MAX_PIXELS_PER_STEP = 1 << 30
MAX_VOCAB = 50_000           # a config's word list holds at most this many
NUMPY_STATE_BYTES = 512      # the numpy generator's state, JSON, padded (a fixed tensor shape)

# The default run ends in about an hour: 20000 steps of stylegan-v's tiny preset at 64x64 take
# about 53 min on the 2-core CPU machine (0.16 s a step, bench/train_speed.py; mocogan 0.11 s:
# 36 min), and a 60-minute budget ends it, saved and resumable, on a slower or busier machine
# (docs/training.md).
DEFAULT_STEPS = 20000
DEFAULT_MINUTES = 60.0


def stride_bounds(cfg: AdversarialConfig, t_data: int) -> tuple[int, int]:
    """The strides (lowest, highest) :meth:`AdversarialTrainer.plan` draws from: min_stride to
    max_stride, the top capped so that ``clip_frames`` frames fit a clip of ``t_data``."""
    top = max(1, min(cfg.max_stride, (t_data - 1) // max(cfg.clip_frames - 1, 1)))
    return min(cfg.min_stride, top), top


def aliasing_warning(min_stride: int, max_stride: int, fps: float,
                     clip_frames: int) -> str | None:
    """A warning when every clip the video discriminator sees is sampled at one rate below the
    data's, else None: at a fixed stride s > 1 it sees frames s / fps seconds apart and no
    closer, so a motion at frequency f is, to it, the same as one at |f - n fps / s| for any
    whole n (at stride 3 of 15 fps, 4 Hz passes for 1 Hz played backwards; `tests/
    test_training.py` shows it on stylegan-v's time features). A generator can then draw a
    motion at the wrong speed unseen, from a fast time feature or from slower ones its layers
    combine (docs/models/stylegan-v-shapes.md, r1mid-p05-s1), and the full-rate video shows
    it. Strides drawn from a range (min_stride < max_stride: consecutive strides have no
    common factor) leave no such rate, but cost speed in its place: both 2-hour runs at
    strides 2 and 3 (r1mid-st23-s0 and -s1, the shipped recipe's seed and another) drew no
    alias and drew slow prompts fast too, as strides 1 to 6 did before the fixed stride, and so
    did five more at strides 2 and 3 with speed rankings or ``d_velocity``.
    ``min_stride`` and ``max_stride`` are the strides the trainer really draws (capped by the
    data)."""
    if clip_frames < 2 or min_stride != max_stride or min_stride < 2 or fps <= 0:
        return None
    rate = fps / min_stride
    example = f" ({rate - 1:g} Hz passes for 1 Hz)" if rate > 2 else ""
    return (f"warning: at a fixed stride of {min_stride} ({fps:g} fps data) the video "
            f"discriminator sees frames {1 / rate:.3g} s apart and no closer, so motion at "
            f"f Hz and at |f - n x {rate:g}| Hz look alike to it{example}: the generator can "
            f"draw a wrong speed unseen; a range of strides (min_stride < max_stride, e.g. "
            f"--set min_stride={min_stride - 1}) leaves no such blind spot but, in the "
            f"shapes runs, cost the speed word instead (docs/training.md, min_stride)")


@dataclass
class AdversarialConfig(Settings):
    """Every setting of ``t2v-rt train --data``, with its type and bounds; saved as the run's
    config.json (with ``model`` then holding the whole generator config, so a resume builds
    exactly the same model)."""

    data: str = text("", "folder", "the captioned video folder (t2v_rt.data)")
    arch: str = text("stylegan-v", "arch", "the architecture (t2v-rt models)")
    preset: str = text("tiny", "preset", "the architecture's starting config")
    model: dict = field(default_factory=dict)         # config overrides (see check_value)
    run_dir: str = text("runs", "path", "numbered run folders are made inside")
    name: str = text("", "name", "the run folders' name after the number (default: arch)")
    size: int = bounded(64, MIN_RESOLUTION, 1024, "frame side the data is read at = resolution")
    frames: int = bounded(16, 2, 1024, "frames of each data clip")
    fps: float = bounded(0.0, 0.0, 240.0, "frame rate the data is read at (0: the data's own)")
    cache_dir: str = text("", "folder", "the decoded data's cache (empty: t2v_rt.data's)")
    max_vocab: int = bounded(10_000, 1, MAX_VOCAB, "the learned vocabulary's most frequent words")
    steps: int = bounded(DEFAULT_STEPS, 1, MAX_STEPS, "total steps")
    minutes: float = bounded(DEFAULT_MINUTES, 0.0, 1e7, "stop (saved, resumable) after this "
                                                        "much wall time; 0: no limit")
    batch_size: int = bounded(8, 1, 4096, "clips per step")
    clip_frames: int = bounded(4, 2, 64, "frames of each clip the discriminators see")
    max_stride: int = bounded(4, 1, 64, "those frames are this many data frames apart at most")
    # A stride that changes from step to step hides speed from the video discriminator: with
    # speed-swapped captions as negatives on real clips (no augmentation), it was right 53 %
    # of the time after 1,000 steps at strides 1..6 and 94 % at a fixed stride of 3
    # (docs/models/experiments/discriminator_probe.py); min_stride = max_stride fixes it.
    min_stride: int = bounded(1, 1, 64, "and at least this many (min_stride = max_stride: "
                                        "always the same spacing)")
    time_horizon: float = bounded(60.0, 0.0, 1e6, "continuous models: start times drawn in "
                                                  "[0, this) seconds")
    # 1e-3: at 2e-3 the proof run (docs/models/stylegan-v-shapes.md) diverged at step 350 (R1
    # 1,810) and drew one prompt-independent picture by step 750; Adam's step is relative to
    # weights initialised N(0, 1 / fan_in), not StyleGAN's equalised unit ones.
    lr_g: float = bounded(1e-3, 0.0, 1.0, "Adam learning rate of the generator")
    lr_d: float = bounded(1e-3, 0.0, 1.0, "Adam learning rate of both discriminators")
    r1_gamma: float = bounded(1.0, 0.0, MAX_WEIGHT, "R1 weight (gamma / 2 x |grad|^2)")
    r1_every: int = bounded(4, 1, MAX_STEPS, "lazy R1: every this many steps, scaled up by it")
    # Shape is read from single frames and speed only across them: at r1_gamma=0.003 the
    # shapes run drew small squares and lost speed (docs/models/stylegan-v-shapes.md,
    # "A three-hundredth of the R1 weight"), so the video discriminator's R1 can differ.
    r1_video_scale: float = bounded(1.0, 0.0, MAX_WEIGHT, "the video discriminator's R1 "
                                    "weight as a multiple of r1_gamma (1: the same, 0: off)")
    matching: bool = flag(True, "real clips with another clip's caption count as fakes")
    contrastive: float = bounded(0.0, 0.0, MAX_WEIGHT, "weight of the image-caption "
                                 "contrastive loss over the batch (0: off)")
    contrastive_bank: int = bounded(0, 0, 65_536, "contrastive: this many more captions of "
                                    "random data clips as negatives each step (0: the batch's only)")
    minimal_pairs: float = bounded(0.0, 0.0, MAX_WEIGHT, "weight of minimal-pair negatives: "
                                   "each real clip under another clip's caption that differs "
                                   "from its own in one word (0: off)")
    minimal_pair_draws: int = bounded(1, 1, 64, "minimal pairs: candidates drawn per clip; "
                                      "each discriminator is scored under the one it finds "
                                      "most plausible (hard negatives; 1: a uniform draw)")
    frame_weight: float = bounded(1.0, 0.0, MAX_WEIGHT, "weight of the frame "
                                  "discriminator's terms (adversarial and contrastive) in the "
                                  "generator's loss; the video discriminator's are 1")
    # Two-timescale alternatives: a faster lr_d broke the shapes run (lr_d=0.002, model card
    # "pairs0's last 25 minutes"); more discriminator updates per generator update, each on a
    # fresh batch at the same lr, is the other (WGAN's n_critic, for a non-saturating loss).
    d_steps: int = bounded(1, 1, 16, "discriminator updates per generator update: the extra "
                           "ones on fresh batches (real clips, the generator's clips under "
                           "no_grad) before the generator's, same lr")
    image_contrastive: float = bounded(0.0, 0.0, MAX_WEIGHT, "generator: weight of the "
                                       "real-fake image contrastive loss (XMC-GAN) in the "
                                       "frame discriminator's features: each generated clip "
                                       "nearer the real clip of its caption than the batch's "
                                       "other real clips and, with minimal_pairs, the real "
                                       "clips whose caption differs in one word; not "
                                       "scaled by frame_weight (0: off)")
    image_contrastive_tau: float = bounded(0.1, 1e-3, 10.0, "image_contrastive: the "
                                           "temperature of its cosine similarities")
    speed_negatives: float = bounded(0.0, 0.0, MAX_WEIGHT, "weight of real clips played at "
                                     "twice or half their speed, as fakes for the video "
                                     "discriminator (0: off)")
    speed_ranking: float = bounded(0.0, 0.0, MAX_WEIGHT, "generator: weight of the speed "
                                   "ranking: its own clip should score higher under its "
                                   "caption in the video discriminator than the same clip "
                                   "played at twice or half the speed (0: off)")
    speed_ranking_term: str = text("logit", "choice", "speed ranking: what is ranked, the "
                                   "whole logit (logit), only its caption term <phi, code> "
                                   "(caption), where the unconditional verdict cancels, "
                                   "that term less its mean over the batch's captions "
                                   "(centred), where what every caption shares cancels too, "
                                   "or less its value under the minimal-pair caption under "
                                   "which the real clip's own speed wins by most (pair; "
                                   "needs minimal_pairs)",
                                   ("logit", "caption", "centred", "pair"))
    augment: bool = flag(True, "DiffAugment: translation and cutout (colour, direction kept)")
    translate: float = bounded(0.125, 0.0, 0.5, "translation: up to this share of the side")
    cutout: float = bounded(0.25, 0.0, 1.0, "cutout: a square of this share of the side")
    d_width: int = bounded(16, 1, 1024, "discriminators' channels at full resolution")
    d_max_width: int = bounded(256, 1, 4096, "discriminators' widest channels")
    d_dim: int = bounded(64, 1, 4096, "discriminators' feature and caption embedding width")
    d_stem: int = bounded(0, 0, 4, "frame discriminator: stride-1 3x3 convs of d_width "
                          "channels at full resolution before its stride-2 trunk (0: none)")
    d_patch: float = bounded(0.0, 0.0, MAX_WEIGHT, "frame discriminator: weight of its "
                             "per-region verdicts (text-aware, on its trunk's map of side "
                             "d_patch_side) in both players' losses (0: off)")
    d_patch_side: int = bounded(16, 1, 512, "the side of the trunk's map the per-region "
                                "verdicts are taken at (16: at 64 x 64 with d_stem=2, regions "
                                "of 14 pixels)")
    d_velocity: bool = flag(False, "video discriminator: each neighbour difference divided "
                            "by its time gap in units of the largest stride's gap (a rate of "
                            "change, the same for one motion at every stride; off: the "
                            "differences as they are, beside the time channels)")
    ema_halflife_steps: float = bounded(100.0, 1e-3, 1e9)
    ema_rampup: float = bounded(0.05, 0.0, 1.0, "early half-life: at most this x the steps "
                                                "so far (0: none)")
    seed: int = bounded(0, 0, 2**63 - 1)
    device: str = text("auto", "choice", "auto | cpu | cuda", ("auto", "cpu", "cuda"))
    threads: int = bounded(0, 0, 1024, "CPU threads, 0: torch's default")
    log_every: int = bounded(25, 1, MAX_STEPS)
    sample_every: int = bounded(500, 0, MAX_STEPS, "0: no sample videos")
    sample_prompts: int = bounded(8, 1, 64, "captions of the sample videos")
    sample_seconds: float = bounded(2.0, 0.1, 60.0)
    checkpoint_every: int = bounded(250, 1, MAX_STEPS)

    @classmethod
    def check_value(cls, f, value: Any, source: str) -> Any:
        if f.name == "model":
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise ConfigError(f"{source}: 'model' must be an object of the architecture's "
                                  f"config fields, got {show(value)}")
            return {k: v for k, v in value.items() if k != "architecture"}
        if f.name == "name" and value == "":
            return value
        return check_setting(f, value, source)

    def check(self, source: str = "training config") -> None:
        pixels = self.batch_size * self.clip_frames * self.size ** 2
        if pixels > MAX_PIXELS_PER_STEP:
            raise ConfigError(f"{source}: batch_size {self.batch_size} x clip_frames "
                              f"{self.clip_frames} x {self.size}^2 pixels is {pixels} pixels a "
                              f"step, more than {MAX_PIXELS_PER_STEP}; lower batch_size")
        if self.min_stride > self.max_stride:
            raise ConfigError(f"{source}: min_stride ({self.min_stride}) must not exceed "
                              f"max_stride ({self.max_stride})")
        if self.clip_frames > self.frames:
            raise ConfigError(f"{source}: clip_frames ({self.clip_frames}) must not exceed "
                              f"frames ({self.frames}), the frames of each data clip")
        if self.d_patch > 0 and self.size >= MIN_RESOLUTION:
            sides = trunk_sides(self.size, self.d_width, self.d_max_width)
            if self.d_patch_side not in sides:
                raise ConfigError(f"{source}: d_patch_side {self.d_patch_side} is not the side "
                                  f"of one of the frame discriminator's maps at size "
                                  f"{self.size}: use one of {', '.join(map(str, sides))}")
        if self.speed_ranking > 0 and self.speed_ranking_term == "pair" and (
                self.minimal_pairs <= 0):
            raise ConfigError(f"{source}: speed_ranking_term 'pair' ranks against minimal-pair "
                              "captions: set minimal_pairs above 0")
        if self.name and not NAME_RE.fullmatch(self.name):
            raise ConfigError(f"{source}: 'name' names the run folders: 1 to 64 letters, digits, "
                              "'.', '_' or '-', starting with a letter or digit")

    @property
    def run_name(self) -> str:
        return self.name or self.arch


def is_adversarial_config(data: Any) -> bool:
    """Whether a run folder's config.json is this trainer's (it names an architecture)."""
    return isinstance(data, dict) and "steps" in data and "arch" in data


def is_adversarial_file(path: str | Path) -> bool:
    """Whether ``path`` is a readable JSON file of this trainer's settings (anything else is
    left to the shapes trainer, which says what is wrong with it)."""
    try:
        with open(path, "rb") as fh:
            return is_adversarial_config(json.loads(fh.read(1 << 20).decode("utf-8")))
    except (OSError, ValueError):
        return False


def _has_config(run: Path) -> bool:
    return is_adversarial_config(runs.read_run_config(run))


def run_config_path(run: Path) -> Path | None:
    """The newest settings of a run folder: its last ``config-from-STEP.json``, else its
    ``config.json``; None when it has neither."""
    resumed = sorted(run.glob("config-from-*.json"))
    if resumed:
        return resumed[-1]
    path = run / "config.json"
    return path if path.is_file() else None


def resumable_config(resume: str) -> AdversarialConfig | None:
    """The settings a ``--resume`` target was trained with, when they are this trainer's
    (else None: the shapes trainer's run, or no settings beside it)."""
    rp = Path(resume)
    folder = rp if rp.is_dir() else rp.parent
    path = run_config_path(folder)
    if path is None:
        return None
    try:
        data = read_json_file(path, f"--resume {path}")
    except UsageError:
        return None            # not readable as settings: the shapes trainer says what is wrong
    if not is_adversarial_config(data):
        return None
    return AdversarialConfig.from_dict(data, f"--resume {path}")


def build_config(config_file: str | Path | None = None, options: dict[str, Any] | None = None,
                 items: list[str] = (), resume: str | None = None) -> AdversarialConfig:
    """The settings of a run: ``config_file`` (or, resuming without one, the run's own), then
    ``options`` (command-line options, None left out), then ``--set KEY=VALUE`` ``items``: a
    training setting, or else a field of the architecture's config (``model``)."""
    if config_file is not None:
        from t2v_rt.training.settings import read_settings

        cfg = read_settings(AdversarialConfig, config_file)
    else:
        cfg = (resumable_config(resume) if resume else None) or AdversarialConfig()
    for key, value in (options or {}).items():
        if value is not None:
            cfg.set(key, value, f"--{key.replace('_', '-')}")
    apply_model_settings(cfg, list(items))
    return cfg


def apply_model_settings(cfg: AdversarialConfig, items: list[str]) -> None:
    """``--set KEY=VALUE``: a training setting by that name, else a field of the
    architecture's config (checked with the whole config when the model is built)."""
    from t2v_rt.generators.registry import get

    known = {f.name: f for f in fields(cfg)}
    for item in items:
        key, eq, value_text = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--set {item[:60]}: expected KEY=VALUE")
        source = f"--set {key}"
        if key in known and key != "model":
            cfg.set(key, parse_value(known[key], key, value_text, source), source)
            continue
        model_fields = {f.name for f in fields(get(cfg.arch).config_class)}
        if key not in model_fields:
            raise ConfigError(f"--set {item[:60]}: '{key[:40]}' is neither a training setting "
                              f"({', '.join(k for k in known if k != 'model')}) nor a field of "
                              f"the '{cfg.arch}' config ({', '.join(sorted(model_fields))})")
        try:
            value = json.loads(value_text)
        except ValueError:
            value = value_text
        cfg.model = {**cfg.model, key: value}


# --- the data ------------------------------------------------------------------------------

def open_data(cfg: AdversarialConfig, fps: float | None = None):
    """The training set of ``cfg.data`` (:func:`t2v_rt.data.open_training_set`)."""
    try:
        from t2v_rt.data import open_training_set
    except ImportError as e:
        raise UsageError(f"t2v-rt train --data needs the data package (t2v_rt.data): {e}") from None
    want = fps if fps is not None else (cfg.fps or None)
    return open_training_set(cfg.data, frames=cfg.frames, size=cfg.size, fps=want,
                             cache_dir=cfg.cache_dir or None, log=log)


def learned_vocabulary(ts, limit: int) -> list[str]:
    """The data's words a config can hold (lower-case ASCII letters, at most 32), most frequent
    first, at most ``limit``."""
    words = [w for w in ts.vocabulary
             if isinstance(w, str) and 0 < len(w) <= 32 and w.isascii() and w.isalpha()
             and w == w.lower()]
    return list(dict.fromkeys(words))[:limit]


def _caption_words(caption: str) -> list[str]:
    import re

    return re.findall(r"[a-z]+", caption.lower())


def _fitted_channels(channels: list[int]) -> list[list[int]]:
    """Candidate ``channels`` lists of every length from one preset's list: shorter ones drop
    its first (low-resolution) entries, longer ones repeat its first entry in front."""
    out = []
    for n in range(1, 10):
        out.append(channels[-n:] if n <= len(channels) else
                   [channels[0]] * (n - len(channels)) + list(channels))
    return out


def model_config(cfg: AdversarialConfig, ts):
    """The generator config: the preset, then what the data fixes (resolution, vocabulary,
    token axis, a recurrent model's rate), then ``cfg.model``; ``channels`` fitted to the
    resolution when the preset's do not match and ``cfg.model`` does not set them."""
    from t2v_rt.generators.io import parse_config
    from t2v_rt.generators.registry import get

    arch = get(cfg.arch)
    cls = arch.config_class
    names = {f.name for f in fields(cls)}
    presets = {"default": {}, **arch.presets}
    if cfg.preset not in presets:
        raise UsageError(f"architecture '{cfg.arch}' has no preset '{cfg.preset}'; presets: "
                         f"{', '.join(presets)}")
    derived: dict[str, Any] = {"resolution": int(ts.clips.shape[2])}
    # A pretrained text encoder reads any prompt: no vocabulary is learnt (vocab and max_tokens
    # keep the config's defaults, unused).
    encoder = {**presets[cfg.preset], **cfg.model}.get("text_encoder")
    if "vocab" in names and not encoder:
        vocab = learned_vocabulary(ts, cfg.max_vocab)
        if not vocab:
            raise UsageError(f"--data {cfg.data}: the captions hold no words to learn")
        derived["vocab"] = vocab
    if "max_tokens" in names and not encoder:
        longest = max((len(_caption_words(c)) for cs in ts.captions for c in cs), default=1)
        derived["max_tokens"] = min(77, max(16, longest))
    if cls.FORM == "recurrent" and "fps" in names:
        derived["fps"] = min(120, max(1, int(round(float(ts.fps)))))
    data = {**presets[cfg.preset], **derived, **cfg.model}
    source = f"config of '{cfg.arch}'"
    try:
        return parse_config({"architecture": cfg.arch, **data}, source)
    except ConfigError as first:
        if "channels" not in names or "channels" in cfg.model:
            raise
        base = data.get("channels") or next(f.default_factory() for f in fields(cls)
                                             if f.name == "channels")
        for candidate in _fitted_channels(list(base)):
            try:
                config = parse_config({"architecture": cfg.arch, **data, "channels": candidate},
                                      source)
            except ConfigError:
                continue
            log(f"channels fitted to resolution {derived['resolution']}: {candidate} (set them "
                "with --set 'channels=[...]')")
            return config
        raise first from None


MAX_CACHED_EMBEDDINGS = 200_000     # distinct captions kept embedded (300 MB at 384 wide)


def _caption_prompt(caption: str) -> str:
    """A caption as a pretrained encoder reads it: characters a prompt may not have become
    spaces, cut to a prompt's length (a caption is data: it never stops the run)."""
    from t2v_rt.generators.text import MAX_PROMPT_CHARS

    text = re.sub(r"[^\x20-\x7e]", " ", caption)[:MAX_PROMPT_CHARS].strip()
    return text or "a video"


class CaptionTokens:
    """Captions -> the generator's text input through its front end. A word-list front end
    (:class:`~t2v_rt.generators.text.VocabularyFrontEnd`) drops words outside its vocabulary
    and cuts a caption to its token axis (a caption is data, not a prompt: one rare word must
    not stop the run); a pretrained encoder's (``text_input`` "text_embedding") embeds each
    distinct caption once, in a table, and gives float32 [B, E] rows; any other front end
    reads each caption as a prompt."""

    def __init__(self, front_end):
        from t2v_rt.generators.text import VocabularyFrontEnd

        self.front_end = front_end
        self.words = ({w: i + 1 for i, w in enumerate(front_end.words)}
                      if isinstance(front_end, VocabularyFrontEnd) else None)
        self.embedded = getattr(front_end, "text_input", "tokens") == "text_embedding"
        self.cache: dict[str, np.ndarray] = {}

    def _embeddings(self, captions: list[str]) -> torch.Tensor:
        new = list(dict.fromkeys(c for c in captions if c not in self.cache))
        rows: dict[str, np.ndarray] = {}
        if new:
            e = np.asarray(self.front_end.features([_caption_prompt(c) for c in new]),
                           dtype=np.float32)
            rows = dict(zip(new, e))
            if len(self.cache) + len(rows) <= MAX_CACHED_EMBEDDINGS:
                self.cache.update(rows)
        dim = getattr(self.front_end, "dim", 0)
        if not captions:
            return torch.zeros((0, dim), dtype=torch.float32)
        return torch.from_numpy(np.stack([rows[c] if c in rows else self.cache[c]
                                          for c in captions]))

    def __call__(self, captions: list[str]) -> torch.Tensor:
        if self.embedded:
            return self._embeddings(captions)
        out = np.zeros((len(captions), self.front_end.max_tokens), dtype=np.int64)
        for i, c in enumerate(captions):
            row = self.cache.get(c)
            if row is None:
                if self.words is not None:
                    ids = [self.words[w] for w in _caption_words(c) if w in self.words]
                    row = np.asarray(ids[: self.front_end.max_tokens], dtype=np.int64)
                else:
                    try:
                        row = self.front_end.encode([c])[0]
                    except UsageError as e:
                        raise UsageError(f"a caption of the data cannot be read by this "
                                         f"architecture's front end: {e}") from None
                if len(self.cache) < 1_000_000:
                    self.cache[c] = row
            out[i, : len(row)] = row
        return torch.from_numpy(out)


def _to_float(clips: np.ndarray) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> float32 [B, T, 3, H, W] in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(clips)).permute(0, 1, 4, 2, 3)
    return x.float() / 127.5 - 1.0


def moving_clips(clips: torch.Tensor) -> torch.Tensor:
    """[B, T, 3, H, W] in [-1, 1] -> [B] bool: whether some pair of neighbouring frames differs
    by more than SPEED_CHANGE in at least SPEED_PIXELS pixels."""
    changed = ((clips[:, 1:] - clips[:, :-1]).abs() > SPEED_CHANGE).any(dim=2)
    return changed.flatten(2).sum(dim=2).amax(dim=1) >= SPEED_PIXELS


def sample_prompts(ts, n: int) -> list[str]:
    """The first ``n`` distinct captions of the data, in its order (the samples' prompts)."""
    out: list[str] = []
    for cs in ts.captions:
        for c in cs[:1]:
            if c.strip() and c not in out:
                out.append(c)
        if len(out) >= n:
            break
    return out


# --- the trainer ---------------------------------------------------------------------------

@dataclass
class AdversarialTrainer:
    """Everything one step touches; :meth:`step` is one step (see the module docstring)."""

    cfg: AdversarialConfig
    device: torch.device
    data: Any
    G: torch.nn.Module
    G_ema: torch.nn.Module
    FD: FrameDiscriminator
    VD: VideoDiscriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    tokens: CaptionTokens
    gen: torch.Generator                 # every torch draw of the schedule (CPU)
    rng: np.random.Generator             # the data's draws
    pairs: MinimalPairs | None = None    # minimal-pair captions (minimal_pairs > 0)

    @classmethod
    def create(cls, cfg: AdversarialConfig, data=None) -> AdversarialTrainer:
        """The trainer of ``cfg`` (``data``: an opened training set, else ``cfg.data``'s)."""
        from t2v_rt.generators.registry import get

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                              else ("cpu" if cfg.device == "auto" else cfg.device))
        ts = data if data is not None else open_data(cfg)
        config = model_config(cfg, ts)
        native = config.native_fps
        if native is not None and abs(float(native) - float(ts.fps)) > 1e-6:
            if data is not None:
                raise UsageError(f"the data is at {float(ts.fps):g} fps and this recurrent "
                                 f"model steps at {float(native):g} fps; read the data at its "
                                 "rate (--fps)")
            log(f"reading the data at {float(native):g} fps, the model's native rate")
            ts = open_data(cfg, float(native))
        if config.resolution != int(ts.clips.shape[2]):
            raise UsageError(f"the model is {config.resolution}x{config.resolution} and the data "
                             f"is read at {ts.clips.shape[2]}x{ts.clips.shape[2]}; read it at the "
                             f"model's resolution (--set size={config.resolution})")
        t_data = int(ts.clips.shape[1])
        if t_data < cfg.clip_frames:
            raise UsageError(f"--data {cfg.data}: clips of {t_data} frames, fewer than "
                             f"clip_frames ({cfg.clip_frames})")
        warning = aliasing_warning(*stride_bounds(cfg, t_data), float(ts.fps), cfg.clip_frames)
        if warning:
            log(warning)
        torch.manual_seed(cfg.seed)
        G = get(config.ARCH).generator_class(config).to(device).train()
        G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        front = config.front_end()
        vocab_size = front.vocab_size
        # a pretrained encoder's captions: the discriminators project the same embedding
        width = front.dim if front.text_input == "text_embedding" else 0
        res = config.resolution
        FD = FrameDiscriminator(res, vocab_size, cfg.d_width, cfg.d_max_width, cfg.d_dim,
                                width, cfg.d_stem,
                                cfg.d_patch_side if cfg.d_patch > 0 else 0).to(device)
        unit = stride_bounds(cfg, t_data)[1] / float(ts.fps) if cfg.d_velocity else 0.0
        VD = VideoDiscriminator(cfg.clip_frames, res, vocab_size, cfg.d_width, cfg.d_max_width,
                                cfg.d_dim, width, unit).to(device)
        opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(0.0, 0.99), eps=1e-8)
        opt_d = torch.optim.Adam(list(FD.parameters()) + list(VD.parameters()), lr=cfg.lr_d,
                                 betas=(0.0, 0.99), eps=1e-8)
        gen = torch.Generator().manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        pairs = None
        if cfg.minimal_pairs > 0:
            pairs = MinimalPairs(ts.captions)
            log(f"minimal pairs: {len(pairs)} caption texts have a caption of another clip that "
                "differs in one word")
        return cls(cfg, device, ts, G, G_ema, FD, VD, opt_g, opt_d,
                   CaptionTokens(front), gen, rng, pairs)

    @property
    def config(self):
        return self.G.config

    @property
    def fps(self) -> float:
        return float(self.data.fps)

    # --- checkpoints --------------------------------------------------------------------

    MODULES = ("G", "G_ema", "FD", "VD")
    OPTIMIZERS = ("opt_g", "opt_d")

    def state(self, step: int) -> dict[str, torch.Tensor]:
        flat = {"step": torch.tensor(step), "rng.torch": self.gen.get_state(),
                "rng.numpy": _numpy_state(self.rng)}
        for prefix in self.MODULES + self.OPTIMIZERS:
            flat.update(runs.flat_state(prefix, getattr(self, prefix)))
        return flat

    def load(self, flat: dict[str, torch.Tensor]) -> int:
        """Restore from a checkpoint's tensors; returns its step."""
        for prefix in self.MODULES:
            getattr(self, prefix).load_state_dict(runs.sub(flat, prefix))
        for prefix in self.OPTIMIZERS:
            runs.load_opt(getattr(self, prefix), prefix, flat)
        self.gen.set_state(flat["rng.torch"])
        self.rng.bit_generator.state = json.loads(bytes(flat["rng.numpy"].tolist()).decode())
        return int(flat["step"].item())

    def load_checkpoint(self, path: Path, config_hint: str) -> tuple[int, dict[str, str]]:
        flat, meta = runs.load_checkpoint(
            path, {p: getattr(self, p) for p in self.MODULES},
            {p: getattr(self, p) for p in self.OPTIMIZERS},
            {"rng.torch": tuple(self.gen.get_state().shape), "rng.numpy": (NUMPY_STATE_BYTES,)},
            config_hint)
        try:
            return self.load(flat), meta
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            raise UsageError(f"--resume {path} is not a readable checkpoint of this trainer "
                             f"({type(e).__name__}: {str(e)[:100]}); pass a checkpoint-*."
                             "safetensors written by t2v-rt train --data, or its run folder") from None

    # --- one step -----------------------------------------------------------------------

    def plan(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, list[int], torch.Tensor]:
        """Which frames of the data clips are used and when the generated ones are: (frame
        indices [Tc], times after the first [Tc] in seconds (float64), the first step of a
        recurrent model, start times [B] of a continuous one)."""
        cfg, t_data = self.cfg, int(self.data.clips.shape[1])
        tc = cfg.clip_frames
        low, top = stride_bounds(cfg, t_data)
        stride = int(torch.randint(low, top + 1, (1,), generator=self.gen))
        span = (tc - 1) * stride
        first = int(torch.randint(0, t_data - span, (1,), generator=self.gen))
        idx = torch.arange(tc) * stride
        rel = idx.double() / self.fps
        step0 = first                                   # recurrent: the window's first step
        starts = torch.rand(batch, generator=self.gen, dtype=torch.float64) * cfg.time_horizon
        return idx + first, rel, [step0 + int(i) for i in idx], starts

    def warped(self, frame_idx: torch.Tensor) -> torch.Tensor | None:
        """Frame indices [Tc] of the same clips played at twice or half the speed of
        ``frame_idx`` (the stride doubled, else halved, drawn afresh where in the clip), or
        None when neither fits the data clips (a speed negative needs them)."""
        t_data, tc = int(self.data.clips.shape[1]), len(frame_idx)
        stride = int(frame_idx[1] - frame_idx[0])
        choices = [s for s in (2 * stride, stride // 2 if stride % 2 == 0 else 0)
                   if s >= 1 and (tc - 1) * s < t_data]
        if not choices:
            return None
        s = choices[int(torch.randint(0, len(choices), (1,), generator=self.gen))]
        first = int(torch.randint(0, t_data - (tc - 1) * s, (1,), generator=self.gen))
        return first + torch.arange(tc) * s

    def speed_factors(self, steps: list[int]) -> list[float]:
        """The factors a generated clip can be played at by :meth:`played_at`: 2 always (a
        recurrent generator runs longer), 1/2 where it fits (a recurrent model steps at the
        data's rate, so only with even step offsets from ``steps[0]``)."""
        if self.G.form == "continuous" or all((s - steps[0]) % 2 == 0 for s in steps):
            return [2.0, 0.5]
        return [2.0]

    @staticmethod
    def played_at(rel: torch.Tensor, steps: list[int], f: float) -> tuple[torch.Tensor, list[int]]:
        """The times (after the first, [Tc]) and recurrent steps of the clips of ``rel`` and
        ``steps`` played at ``f`` times their speed: the same start, the times scaled."""
        return rel * f, [steps[0] + int((s - steps[0]) * f) for s in steps]

    def warped_times(self, rel: torch.Tensor, steps: list[int]) -> tuple[torch.Tensor, list[int]]:
        """:meth:`played_at` one of the :meth:`speed_factors`, drawn: the generated clips at
        twice or half their speed (the speed ranking)."""
        choices = self.speed_factors(steps)
        f = choices[int(torch.randint(0, len(choices), (1,), generator=self.gen))]
        return self.played_at(rel, steps, f)

    def fake(self, tokens: torch.Tensor, z: torch.Tensor, rel: torch.Tensor,
             steps: list[int], starts: torch.Tensor) -> torch.Tensor:
        """Generated clips [B, Tc, 3, R, R] through the generator interface (see the module
        docstring)."""
        G, b, tc = self.G, tokens.shape[0], len(steps)
        w = G.style(tokens, z)          # tokens: token ids, or caption embeddings
        if G.form == "continuous":
            times = (starts[:, None] + rel[None, :]).reshape(-1).numpy()
            feats = torch.as_tensor(self.config.time_features(times), device=w.device)
        else:
            state, keep, want = G.initial_state(w), [], set(steps)
            for s in range(max(steps) + 1):
                f, state = G.step(w, state)
                if s in want:
                    keep.append(f)
            feats = torch.stack(keep, dim=1).reshape(b * tc, -1)
        frames = G.synthesize(w.repeat_interleave(tc, dim=0), feats.to(w.dtype))
        return frames.reshape(b, tc, *frames.shape[1:])

    def step(self, step: int, train_g: bool = True) -> dict[str, float]:
        """One step (data, generator, discriminators, EMA); returns its numbers. With
        ``train_g`` false, a discriminator update only: the generator's clips are made without
        gradient, and neither the generator, its optimiser nor the EMA changes (``d_steps``)."""
        cfg, device = self.cfg, self.device
        G, FD, VD = self.G, self.FD, self.VD
        b = cfg.batch_size
        clip_ids, clips, captions = self.data.draw(self.rng, b)
        frame_idx, rel, steps, starts = self.plan(b)
        real = _to_float(np.asarray(clips)[:, frame_idx.numpy()]).to(device)   # [B, Tc, 3, R, R]
        tokens = self.tokens(list(captions)).to(device)
        z = torch.randn(b, self.config.latent_dim, generator=self.gen).to(device)
        tc = cfg.clip_frames
        times = rel.float().to(device).expand(b, -1)
        rep = lambda x: x.repeat_interleave(tc, dim=0)  # noqa: E731
        aug_fake = augment_params(b, real.shape[-1], self.gen, cfg.translate, cfg.cutout)
        aug_real = augment_params(b, real.shape[-1], self.gen, cfg.translate, cfg.cutout)
        aug = (lambda x, p: augment(x, p)) if cfg.augment else (lambda x, p: x)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

        speed = None
        rank_pair = cfg.speed_ranking > 0 and cfg.speed_ranking_term == "pair"
        if (cfg.speed_negatives > 0 or rank_pair) and tc > 1:
            # The same real clips at twice or half their speed, shown with the true clip's
            # times: their motion no longer fits the caption (or is faster than any data).
            # Clips with no motion have no speed to change and are left out. (The speed
            # ranking's "pair" term reads them too, to choose its contrast caption.)
            warp_idx = self.warped(frame_idx)
            if warp_idx is not None:
                speed = _to_float(np.asarray(clips)[:, warp_idx.numpy()]).to(device)
                speed_moving = moving_clips(speed)
        pairs = cand_tokens = None
        if cfg.minimal_pairs > 0 and self.pairs is not None:
            # Each clip's caption with one word changed, from another clip (.negatives).
            # k candidates each (minimal_pair_draws); the contrastive negatives take the first
            # (a uniform draw), each discriminator's minimal-pair loss the hardest for it.
            k = cfg.minimal_pair_draws
            cand_ids, cand_captions, has = self.pairs.draw_many(self.rng, list(captions), k)
            pair_ids = cand_ids[:, 0]
            if has.any():
                pairs = torch.from_numpy(has).to(device)                        # [B] bool
                cand_tokens = self.tokens(cand_captions).to(device)             # [B * k, ...]
                pair_tokens = cand_tokens[::k]
        contrast = cfg.contrastive > 0 and b > 1
        if contrast:
            # Negatives: the batch's captions, then (contrastive_bank) captions of random data
            # clips, then the minimal pairs; any of the same clip or the same text as a clip's
            # own is not one of its.
            ids, columns = torch.from_numpy(clip_ids), tokens
            if cfg.contrastive_bank > 0:
                bank_ids, bank_captions = self.data.draw_captions(self.rng, cfg.contrastive_bank)
                ids = torch.cat([ids, torch.from_numpy(bank_ids)])
                columns = torch.cat([columns, self.tokens(bank_captions).to(device)])
            if pairs is not None:
                ids = torch.cat([ids, torch.from_numpy(pair_ids[has])])
                columns = torch.cat([columns, pair_tokens[pairs]])
            same = not_negatives(tokens, columns, ids.to(device))               # [B, C]
            owner_v = torch.arange(b, device=device)
            owner_f = owner_v.repeat_interleave(tc)

        # Generator: fool both discriminators (and, with contrastive, fit its own caption
        # better than the batch's other captions, in their eyes).
        G.train().requires_grad_(train_g)
        FD.requires_grad_(False)
        VD.requires_grad_(False)
        image_real = None
        if train_g and cfg.image_contrastive > 0 and b > 1:
            # The real clips each generated clip is scored against, in the frame
            # discriminator's features (mean over a clip's frames): the batch's, then the
            # real clips of the minimal pairs, shown through a fresh augmentation.
            others, other_tokens = aug(real, aug_real), tokens
            other_ids = torch.from_numpy(clip_ids)
            if pairs is not None:
                ids_p = pair_ids[has]
                pr_clips = np.stack([self.data.clips[int(i), frame_idx.numpy()]
                                     for i in ids_p])
                pr_real = _to_float(pr_clips).to(device)
                pr_aug = augment_params(len(ids_p), real.shape[-1], self.gen, cfg.translate,
                                        cfg.cutout)
                others = torch.cat([others, aug(pr_real, pr_aug)])
                other_ids = torch.cat([other_ids, torch.from_numpy(ids_p)])
                other_tokens = torch.cat([tokens, pair_tokens[pairs]])
            with torch.no_grad(), autocast:
                n_o = others.shape[0]
                image_real = FD.features(FD.prepare(others.flatten(0, 1))).view(n_o, tc, -1)
                image_real = image_real.float().mean(dim=1)
            image_same = not_negatives(tokens, other_tokens, other_ids.to(device))
        with autocast, torch.set_grad_enabled(train_g):
            fake = self.fake(tokens, z, rel, steps, starts)
        loss_g = None
        if train_g:
            with autocast:
                fa = aug(fake, aug_fake)
                f_feat, f_patches = FD.features_and_patches(FD.prepare(fa.flatten(0, 1)))
                v_feat = VD.features(VD.prepare(fa, times))
                f_text, v_text = FD.caption(tokens), VD.caption(tokens)
                f_loss = g_loss(FD.project(f_feat, rep(f_text)))
                if f_patches is not None:
                    f_loss = f_loss + cfg.d_patch * g_loss(
                        FD.project_patches(f_patches, rep(f_text)))
                v_true = VD.project(v_feat, v_text)
                loss_g = cfg.frame_weight * f_loss + g_loss(v_true)
                if cfg.speed_ranking > 0 and tc > 1:
                    # The same generated clips at twice or half their speed, shown with the
                    # true times: ranked below the true speed, where the caption's real clip
                    # moves (a still caption has no speed to rank).
                    rel_w, steps_w = self.warped_times(rel, steps)
                    other = self.fake(tokens, z, rel_w, steps_w, starts)
                    o_feat = VD.features(VD.prepare(aug(other, aug_fake), times))
                    mask = moving_clips(real)
                    if rank_pair:
                        # <phi, code - partner>: the caption against the one of its minimal
                        # pairs under which the real clip at its speed beats itself at
                        # another by most (the word that names the speed, where one does);
                        # rows where no partner ranks the real clip's speed first are left out
                        warped = None if speed is None else aug(speed, aug_real)
                        partner, won = code_of_pair(VD, aug(real, aug_real), warped, times,
                                                    v_text, cand_tokens, pairs)
                        code = v_text - partner
                        r_true, r_other = VD.caption_term(v_feat, code), VD.caption_term(
                            o_feat, code)
                        mask = mask & (won > 0)
                    elif cfg.speed_ranking_term in ("caption", "centred"):
                        # <phi, code> only: how much better the caption fits each clip;
                        # centred, <phi, code - mean code>: how much better than the batch's
                        # captions fit it on average
                        code = v_text
                        if cfg.speed_ranking_term == "centred":
                            code = v_text - v_text.mean(dim=0, keepdim=True)
                        r_true, r_other = VD.caption_term(v_feat, code), VD.caption_term(
                            o_feat, code)
                    else:
                        r_true, r_other = v_true, VD.project(o_feat, v_text)
                    loss_g = loss_g + cfg.speed_ranking * ranking_loss(r_true, r_other, mask)
                if contrast:
                    loss_g = loss_g + cfg.contrastive * (
                        cfg.frame_weight * contrastive_loss(f_feat, FD.caption(columns),
                                                            owner_f, same)
                        + contrastive_loss(v_feat, VD.caption(columns), owner_v, same))
                if image_real is not None:
                    loss_g = loss_g + cfg.image_contrastive * image_contrastive_loss(
                        f_feat.view(b, tc, -1).float().mean(dim=1), image_real, image_same,
                        cfg.image_contrastive_tau)
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()

        # Discriminators: real vs generated (vs real with another clip's caption), lazy R1.
        FD.requires_grad_(True)
        VD.requires_grad_(True)
        do_r1 = cfg.r1_gamma > 0 and step % cfg.r1_every == 0
        real_in = real.detach().requires_grad_(do_r1)
        with autocast:
            ra, fa = aug(real_in, aug_real), aug(fake.detach(), aug_fake)
            fr_feat, fr_patches = FD.features_and_patches(FD.prepare(ra.flatten(0, 1)))
            vr_feat = VD.features(VD.prepare(ra, times))
            f_text, v_text = FD.caption(tokens), VD.caption(tokens)
            fr, vr = FD.project(fr_feat, rep(f_text)), VD.project(vr_feat, v_text)
            ff_feat, ff_patches = FD.features_and_patches(FD.prepare(fa.flatten(0, 1)))
            ff = FD.project(ff_feat, rep(f_text))
            vf = VD(fa, times, tokens)
            if cfg.matching and b > 1:
                # The real clips' features under another clip's caption: no second trunk pass.
                wrong = tokens.roll(1, dims=0)
                differs = (wrong != tokens).flatten(1).any(dim=1)
                fm = FD.project(fr_feat, rep(f_text.roll(1, dims=0)))
                vm = VD.project(vr_feat, v_text.roll(1, dims=0))
                loss_d = (d_loss(fr, ff, fm, rep(differs)) + d_loss(vr, vf, vm, differs))
            else:
                loss_d = d_loss(fr, ff) + d_loss(vr, vf)
            if fr_patches is not None:
                # Each region of a real frame, of a generated one, and of a real one under
                # another clip's caption (matching), as the whole frames are.
                pr = FD.project_patches(fr_patches, rep(f_text))
                pf = FD.project_patches(ff_patches, rep(f_text))
                if cfg.matching and b > 1:
                    pm = FD.project_patches(fr_patches, rep(f_text.roll(1, dims=0)))
                    patch_d = d_loss(pr, pf, pm, rep(differs)[:, None].expand_as(pm))
                else:
                    patch_d = d_loss(pr, pf)
                loss_d = loss_d + cfg.d_patch * patch_d
            if contrast:
                loss_d = loss_d + cfg.contrastive * (
                    contrastive_loss(fr_feat, FD.caption(columns), owner_f, same)
                    + contrastive_loss(vr_feat, VD.caption(columns), owner_v, same))
            if speed is not None and cfg.speed_negatives > 0:
                vs = VD.project(VD.features(VD.prepare(aug(speed, aug_real), times)), v_text)
                loss_d = loss_d + cfg.speed_negatives * negatives_loss(vs, speed_moving)
            if pairs is not None:
                # The real clips under a minimal pair of their caption: fakes for both.
                f_pair = hardest(fr_feat.view(b, tc, -1), FD.caption(cand_tokens))
                v_pair = hardest(vr_feat.unsqueeze(1), VD.caption(cand_tokens))
                fp = FD.project(fr_feat, rep(f_pair))
                vp = VD.project(vr_feat, v_pair)
                loss_d = loss_d + cfg.minimal_pairs * (negatives_loss(fp, rep(pairs))
                                                       + negatives_loss(vp, pairs))
        loss = loss_d
        r1 = torch.zeros(())
        if do_r1:
            # the frame discriminator's whole verdict: the frame's logit and, with patches,
            # the mean of its regions' (weighted as in the loss)
            f_all = fr if fr_patches is None else fr + cfg.d_patch * pr.mean(dim=1)
            r1_f = r1_penalty(f_all, real_in)
            # r1_video_scale=0: no second double-backward for a term weighted by 0
            r1_v = r1_penalty(vr, real_in) if cfg.r1_video_scale > 0 else torch.zeros(())
            r1 = r1_f + r1_v
            loss = loss + cfg.r1_gamma / 2 * (r1_f + cfg.r1_video_scale * r1_v) * cfg.r1_every
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()

        with torch.no_grad():
            acc = 0.5 * (float((fr > 0).float().mean()) + float((ff < 0).float().mean()))
        out = {"d": float(loss_d.detach()), "d_acc": acc}
        if loss_g is not None:
            ema_update(self.G_ema, G, ema_beta(step, cfg.ema_halflife_steps, cfg.ema_rampup))
            out["g"] = float(loss_g.detach())
        if do_r1:
            out["r1"] = float(r1.detach())
        return out


def speed_partner(real: torch.Tensor, warped: torch.Tensor, code: torch.Tensor,
                  candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The speed ranking's contrast caption ("pair"): of each clip's k candidate codes
    ``candidates`` [B * k, dim] (its minimal pairs, row-major), the one under which the real
    clip at its own speed beats the same clip at another by most, relative to its own caption
    ``code`` [B, dim]: argmax over j of ``<real - warped, code - candidate_j>``, where ``real``
    and ``warped`` [B, dim] are the video discriminator's features of the two. Returns the
    chosen codes [B, dim] and their margins [B] (0 where every candidate is the caption
    itself: no partner). Chosen without gradient; nothing in the shapes world's grammar is
    read: the word that names the speed is found because the data's speeds differ."""
    b = code.shape[0]
    with torch.no_grad():
        cands = candidates.view(b, -1, candidates.shape[-1]).float()            # [B, k, dim]
        margins = torch.einsum("bd,bkd->bk", (real - warped).float(),
                               code.float()[:, None] - cands)
        won, pick = margins.max(dim=1)
        return cands[torch.arange(b, device=cands.device), pick], won


def code_of_pair(VD, real: torch.Tensor, warped: torch.Tensor | None, times: torch.Tensor,
                 code: torch.Tensor, cand_tokens: torch.Tensor | None,
                 has: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`speed_partner` of a step's real clips [B, Tc, 3, R, R] and the same clips at
    another speed (``warped``; None where no other stride fits the data), from their features
    in ``VD`` and the minimal pairs' tokens ``cand_tokens`` ([B * k, ...]; None, with ``has``
    None, where no clip of the batch has one). Without either, the caption itself with margin
    0 for every clip (no ranking)."""
    if warped is None or cand_tokens is None:
        return code.detach(), torch.zeros(code.shape[0], device=code.device)
    with torch.no_grad():
        feats = VD.features(VD.prepare(torch.cat([real, warped]), times.repeat(2, 1)))
        partner, won = speed_partner(*feats.chunk(2), code, VD.caption(cand_tokens))
    return partner, torch.where(has, won, torch.zeros_like(won))


def hardest(feat: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The caption code [B, dim] each clip's real features ``feat`` [B, T, dim] (T frames or 1
    clip) score highest, on average over T, among its k candidates ``codes`` [B * k, dim]
    (row-major, as :meth:`.negatives.MinimalPairs.draw_many` gives them). A projection
    discriminator's logit is ``out(phi) + <phi, code>``, so the candidate with the largest
    mean ``<phi, code>`` is the most plausible; chosen without gradient, then returned with
    its gradient (the loss trains the caption embedding on the chosen one). With k = 1, the
    codes themselves."""
    b = feat.shape[0]
    codes = codes.view(b, -1, codes.shape[-1])                                  # [B, k, dim]
    with torch.no_grad():
        pick = torch.einsum("btd,bkd->bk", feat.float(), codes.float()).argmax(dim=1)
    return codes[torch.arange(b, device=codes.device), pick]


def not_negatives(tokens: torch.Tensor, columns: torch.Tensor, clip_ids: torch.Tensor) -> torch.Tensor:
    """Which contrastive captions are no negatives of which batch clip: [B, C] bool, true where
    caption column j (``columns`` [C, ...], the batch's B ``tokens`` first) is the same text
    as clip i's own, or a caption of the same data clip (``clip_ids`` [C], int64)."""
    b = tokens.shape[0]
    return ((tokens[:, None] == columns[None]).flatten(2).all(dim=2)
            | (clip_ids[:b, None] == clip_ids[None]))


def text_of(config) -> str:
    """What the model reads prompts with, for the run's first line."""
    encoder = getattr(config, "text_encoder", None)
    return (f"text encoder {encoder}" if encoder
            else f"{len(getattr(config, 'vocab', ()))} words")


def _numpy_state(rng: np.random.Generator) -> torch.Tensor:
    data = json.dumps(rng.bit_generator.state).encode()
    if len(data) > NUMPY_STATE_BYTES:
        raise RuntimeError(f"numpy generator state of {len(data)} bytes")
    return torch.tensor(list(data.ljust(NUMPY_STATE_BYTES)), dtype=torch.uint8)


# --- samples -------------------------------------------------------------------------------

@torch.no_grad()
def write_samples(g, prompts: list[str], tokens: torch.Tensor, path: Path, fps: float,
                  seconds: float, device: torch.device) -> None:
    """A grid video of ``prompts`` (seed i for prompt i, as ``t2v-rt stream --seed i``),
    ``seconds`` at ``fps`` (a recurrent model: its native rate), rows of 4."""
    from t2v_rt.encode.sink import VideoSink

    n = len(prompts)
    rate = float(g.config.native_fps or fps)
    count = max(1, int(round(seconds * rate)))
    z = torch.stack([torch.from_numpy(np.asarray(g.config.latent(i))) for i in range(n)])
    times = torch.arange(count, dtype=torch.float64) / rate
    frames = g(tokens.to(device), z.to(device), times.numpy()).float().cpu()   # [n, T, 3, R, R]
    cols = min(4, n)
    rows = math.ceil(n / cols)
    r = frames.shape[-1]
    grid = torch.zeros(count, 3, rows * r, cols * r)
    for i in range(n):
        y, x = divmod(i, cols)
        grid[:, :, y * r:(y + 1) * r, x * r:(x + 1) * r] = frames[i]
    h, w = grid.shape[-2:]
    grid = torch.nn.functional.pad(grid, (0, w % 2, 0, h % 2), value=-1.0)    # even for H.264
    video = ((grid.clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).permute(0, 2, 3, 1)
    sink = VideoSink(path, "mp4", Fraction(rate).limit_denominator(1001),
                     (video.shape[2], video.shape[1]))
    try:
        sink.write(video.numpy())
    finally:
        sink.close()


# --- the run -------------------------------------------------------------------------------

def train(cfg: AdversarialConfig, resume: str | None = None, dry_run: bool = False,
          stop: Callable[[], bool] | None = None, data=None) -> Path:
    """Train; returns the run folder. ``resume``, ``stop``, the files and the failures are as
    :func:`t2v_rt.models.shapes.train.train`'s; ``data``: an opened training set (tests),
    else ``cfg.data`` is opened. With ``cfg.minutes``, the run stops (saved) after that much
    wall time and can be resumed for the remaining steps."""
    from t2v_rt.generators.registry import get

    cfg = cfg.validate()
    if not cfg.data and data is None:
        raise UsageError("t2v-rt train --arch needs --data DIR, a folder of captioned videos "
                         "(t2v-rt dataset render-shapes DIR makes one)")
    cfg.name = cfg.run_name
    if cfg.data:
        cfg.data = str(Path(cfg.data).resolve())
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' asked for, but PyTorch sees no CUDA GPU; use --device "
                         "cpu (or auto)")
    arch = get(cfg.arch)                       # an unknown name: one line, before any work
    presets = {"default": {}, **arch.presets}
    if cfg.preset not in presets:
        raise UsageError(f"architecture '{cfg.arch}' has no preset '{cfg.preset}'; presets: "
                         f"{', '.join(presets)}")
    target = runs.resume_target(resume, _has_config) if resume else None
    tr = AdversarialTrainer.create(cfg, data)
    # The run's config.json holds the whole generator config: a resume builds the same model.
    cfg.model = {k: v for k, v in tr.config.to_dict().items() if k != "architecture"}
    prompts = sample_prompts(tr.data, cfg.sample_prompts)

    def describe(run: runs.Run) -> str:
        n_g = sum(p.numel() for p in tr.G.parameters())
        n_d = sum(p.numel() for m in (tr.FD, tr.VD) for p in m.parameters())
        ts, c = tr.data, tr.config
        return (f"run {run.path} | device {tr.device} | {c.ARCH} generator {n_g / 1e6:.2f}M "
                f"params, discriminators {n_d / 1e6:.2f}M | data {ts.clips.shape[0]} clips x "
                f"{ts.clips.shape[1]} frames, {c.resolution}x{c.resolution} at "
                f"{float(ts.fps):g} fps, {text_of(c)} | {cfg.steps} "
                f"steps of {cfg.batch_size} clips x {cfg.clip_frames} frames"
                + (f", at most {cfg.minutes:g} min" if cfg.minutes else ""))

    def load(ckpt: Path) -> tuple[int, dict]:
        return tr.load_checkpoint(ckpt, f"t2v-rt train --resume {ckpt.parent}")

    def loop(run: runs.Run, start: int) -> None:
        _train_steps(tr, cfg, run, start, stop, prompts)

    def make_run(path, new, record, cfg_, start):
        return runs.Run(path, new, record, cfg_, start,
                        resume_command=lambda r: f"t2v-rt train --resume {r.path}")

    return runs.run_training(
        tr, cfg, resume, target, dry_run, stop, load=load, describe=describe, loop=loop,
        oom_hint=f"lower batch_size (now {cfg.batch_size}) or clip_frames (now "
                 f"{cfg.clip_frames})", make_run=make_run)


def _train_steps(tr: AdversarialTrainer, cfg: AdversarialConfig, run: runs.Run, start: int,
                 stop: Callable[[], bool] | None, prompts: list[str]) -> None:
    """The loop: steps, metrics, checkpoints, samples, the time budget."""
    progress = runs.Progress(start)
    t0 = time.time()
    stats: dict[str, float] = {}
    counts: dict[str, int] = {}
    sample_tokens = tr.tokens(prompts) if prompts else None
    if prompts and cfg.sample_every and run.new:
        run.write(run.path / "samples.txt",
                  ("\n".join(f"{i}: {p}" for i, p in enumerate(prompts)) + "\n").encode(),
                  "the samples' prompts")
    for step in range(start, cfg.steps):
        if stop is not None and stop():
            raise runs.Stop
        for d_only in [True] * (cfg.d_steps - 1) + [False]:
            for k, v in tr.step(step, train_g=not d_only).items():
                stats[k] = stats.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
        done = run.done = step + 1
        out_of_time = bool(cfg.minutes) and time.time() - t0 >= cfg.minutes * 60
        last = done == cfg.steps or out_of_time
        if done % cfg.log_every == 0 or last:
            rate = progress.rate(done)
            mean = {k: v / counts[k] for k, v in stats.items()}
            run.append_metrics({"step": done, "steps_per_s": rate,
                                "clips_per_s": rate * cfg.batch_size, **mean})
            left = (cfg.steps - done) / max(rate, 1e-9)
            if cfg.minutes:
                left = min(left, max(0.0, cfg.minutes * 60 - (time.time() - t0)))
            r1 = f" | R1 {mean['r1']:.3f}" if "r1" in mean else ""
            log(f"step {done}/{cfg.steps} | G {mean['g']:.3f} | D {mean['d']:.3f} (right "
                f"{100 * mean['d_acc']:.0f}%){r1} | {rate:.2f} steps/s, "
                f"{rate * cfg.batch_size:.1f} clips/s | ETA {runs.eta(left)}")
            stats.clear()
            counts.clear()
        if done % cfg.checkpoint_every == 0 or last:
            run.save(tr, done)
        if prompts and cfg.sample_every and (done % cfg.sample_every == 0 or last):
            run.write_with(run.path / f"samples-{done:07d}.mp4",
                           lambda tmp: write_samples(tr.G_ema, prompts, sample_tokens, tmp,
                                                     tr.fps, cfg.sample_seconds, tr.device),
                           "sample video")
        if out_of_time and done < cfg.steps:
            log(f"time budget of {cfg.minutes:g} min reached at step {done} of {cfg.steps}: "
                f"saved; {run.resume_hint()}")
            return


__all__ = ["DEFAULT_STEPS", "AdversarialConfig", "AdversarialTrainer", "CaptionTokens",
           "TrainInterrupted", "build_config", "hardest", "is_adversarial_config",
           "learned_vocabulary", "model_config", "not_negatives", "resumable_config",
           "sample_prompts", "train", "write_samples"]
