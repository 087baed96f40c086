"""Evaluate a generator against the shapes-world contract: ``t2v-rt eval``.

Draws prompt x seed samples that mix canonical prompts, paraphrases and prompts with
attributes left out; generates ``seconds`` of video at ``fps`` at the model's resolution;
recovers every attribute from the pixels and scores the attributes each prompt names.
Reported separately for seen and held-out colour-shape pairs (a sample is held out when its
prompt names both the colour and the shape of a held-out pair):

- per-attribute accuracy and the share of videos with every named attribute right;
- the same scores for the frames at ``t0 + long_run`` (default 600 s), and the share of
  videos whose recovered attributes there equal those at ``t0``;
- flicker: the shape's frame-to-frame change of colour and size;
- a Frechet distance, in the evaluator's own feature space (``attributes.FEATURES``), between
  the generated videos and the contract renderer's videos of the same prompts and seeds,
  with its sampling floor: the same distance between two rendered sets (other seeds).
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import torch

from t2v_rt.backends.base import Backend
from t2v_rt.console import say
from t2v_rt.models.shapes.attributes import (
    classify,
    features,
    flicker,
    frechet_distance,
    measure,
    score,
)
from t2v_rt.pipeline import Video, frame_times
from t2v_rt.models.shapes.grammar import parse_prompt
from t2v_rt.models.shapes import spec
from t2v_rt.models.shapes.captions import caption
from t2v_rt.models.shapes.render import render
from t2v_rt.models.shapes.scene import Scene, latent_from_seed

KINDS = ("canonical", "paraphrase", "partial")
GROUPS = ("seen", "held_out")


@dataclass(frozen=True)
class Sample:
    prompt: str
    seed: int
    target: dict[str, str | None]   # the attributes the prompt names (None: left out)
    kind: str                       # one of KINDS
    held_out: bool                  # names both halves of a held-out colour-shape pair

    def scene(self, seed: int | None = None) -> Scene:
        """The contract's true scene for this prompt and ``seed`` (default: the sample's)."""
        return Scene.complete(self.target, latent_from_seed(self.seed if seed is None else seed))


def contract_samples(n: int, seed: int = 0, held_out_share: float = 0.25,
                     p_omit: float = 0.4) -> list[Sample]:
    """``n`` samples, cycling canonical / paraphrase / partial prompts.

    Partial prompts leave each attribute out with probability ``p_omit``, at least one out and
    one in.
    About ``held_out_share`` of the samples name a held-out pair. A pure function of
    (n, seed, ...): the first k samples of a draw are the draw of k.
    """
    rng = random.Random(seed)
    held = sorted(spec.HELD_OUT)
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        attrs: dict[str, str | None] = {k: rng.choice(v) for k, v in spec.ATTRIBUTES.items()}
        force_held = rng.random() < held_out_share
        if force_held:
            attrs["colour"], attrs["shape"] = rng.choice(held)
        if kind == "partial":
            keep = {k for k in attrs if rng.random() >= p_omit}
            forced = {"colour", "shape"} if force_held else set()
            keep |= forced
            named = set(attrs) - ({"speed"} if attrs["motion"] == "still" else set())
            if keep >= named:   # leave at least one out (a still shape has no speed to omit)
                keep.remove(rng.choice(sorted(named - forced)))
            keep = keep or {rng.choice(sorted(attrs))}
            attrs = {k: (v if k in keep else None) for k, v in attrs.items()}
        if attrs["motion"] == "still":
            attrs["speed"] = None
        prompt = caption(attrs, rng if kind != "canonical" else None)
        # What the prompt names, as the parser reads it (the source of truth for scoring).
        target = parse_prompt(prompt).attributes
        held_out = bool(target["colour"] and target["shape"]
                        and spec.is_held_out(target["colour"], target["shape"]))
        out.append(Sample(prompt, rng.randrange(2**31), target, kind, held_out))
    return out


# Words no shapes caption ever uses (every one is outside grammar.KNOWN_WORDS, the words the
# caption generator draws from; tested), for each attribute value: the prompts of
# unseen_word_samples, which only a model reading prompts through a pretrained sentence
# encoder can take. Glue words ("a", "an", "and") are the only caption words they keep.
UNSEEN_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "size": {"small": ("minuscule", "teeny", "petite"), "large": ("huge", "giant", "enormous")},
    "colour": {"red": ("crimson", "scarlet"), "green": ("emerald", "lime"),
               "blue": ("azure", "cobalt"), "yellow": ("golden", "lemon"),
               "cyan": ("turquoise", "teal"), "magenta": ("fuchsia", "violet"),
               "orange": ("tangerine", "amber")},
    "shape": {"circle": ("sphere", "orb"), "square": ("cube", "block"),
              "triangle": ("pyramid", "wedge")},
    "motion": {"left-right": ("drifting side to side", "swaying sideways"),
               "up-down": ("rising and falling", "bobbing upward and downward"),
               "diagonal": ("sliding from corner to corner", "gliding corner to corner"),
               "circle": ("orbiting", "revolving around"),
               "still": ("sitting motionless", "resting")},
    "speed": {"slow": ("leisurely", "gently", "lazily"), "fast": ("rapidly", "swiftly", "briskly")},
    "background": {"black": ("against a pitch dark backdrop", "against an ebony backdrop"),
                   "white": ("against a snowy backdrop", "against an ivory backdrop"),
                   "gray": ("against a slate backdrop", "against an ashen backdrop")},
}
GLUE_WORDS = frozenset({"a", "an", "and"})


def unseen_word_prompt(attrs: dict[str, str | None], rng: random.Random) -> str:
    """A prompt naming ``attrs`` (None: left out) in words no caption uses: "a crimson sphere
    drifting side to side"."""
    words = ["a"]
    for name in ("size", "colour", "shape"):
        if attrs[name]:
            words.append(rng.choice(UNSEEN_WORDS[name][attrs[name]]))
    if not attrs["shape"]:
        words.append("thing")
    if attrs["motion"]:
        words.append(rng.choice(UNSEEN_WORDS["motion"][attrs["motion"]]))
    if attrs["speed"] and attrs["motion"] != "still":
        words.append(rng.choice(UNSEEN_WORDS["speed"][attrs["speed"]]))
    if attrs["background"]:
        words.append(rng.choice(UNSEEN_WORDS["background"][attrs["background"]]))
    if words[1][0] in "aeiou":
        words[0] = "an"
    return " ".join(words)


def unseen_word_samples(n: int, seed: int = 0, held_out_share: float = 0.25,
                        p_omit: float = 0.4) -> list[Sample]:
    """``n`` samples whose prompts use no word of the captions (``UNSEEN_WORDS``), alternating
    prompts naming every attribute (kind "paraphrase") and prompts leaving some out ("partial",
    as :func:`contract_samples`); about ``held_out_share`` name a held-out colour-shape pair. The
    target is the attributes drawn (no grammar can read these prompts)."""
    rng = random.Random(seed)
    held = sorted(spec.HELD_OUT)
    out = []
    for i in range(n):
        kind = ("paraphrase", "partial")[i % 2]
        attrs: dict[str, str | None] = {k: rng.choice(v) for k, v in spec.ATTRIBUTES.items()}
        force_held = rng.random() < held_out_share
        if force_held:
            attrs["colour"], attrs["shape"] = rng.choice(held)
        if attrs["motion"] == "still":
            attrs["speed"] = None
        if kind == "partial":
            forced = {"colour", "shape"} if force_held else set()
            named = [k for k, v in attrs.items() if v is not None]
            keep = {k for k in named if k in forced or rng.random() >= p_omit}
            if keep >= set(named):
                keep.discard(rng.choice(sorted(set(named) - forced)))
            keep = keep or {rng.choice(named)}
            attrs = {k: (v if k in keep else None) for k, v in attrs.items()}
            if attrs["speed"] and not attrs["motion"]:
                attrs["speed"] = None       # a speed alone has no words of its own here
                if not any(attrs.values()):
                    attrs["colour"] = rng.choice(spec.ATTRIBUTES["colour"])
        held_out = bool(attrs["colour"] and attrs["shape"]
                        and spec.is_held_out(attrs["colour"], attrs["shape"]))
        out.append(Sample(unseen_word_prompt(attrs, rng), rng.randrange(2**31), dict(attrs),
                          kind, held_out))
    return out


PROMPT_SETS = {"contract": contract_samples, "unseen-words": unseen_word_samples}


# A source of videos: (sample, times [T] float64 s) -> [T, 3, S, S] RGB in [0, 1].
Source = Callable[[Sample, torch.Tensor], torch.Tensor]


def model_source(backend: Backend) -> Source:
    """Videos generated by ``backend`` for the sample's prompt and seed."""
    def generate(sample: Sample, times: torch.Tensor) -> torch.Tensor:
        video = torch.as_tensor(Video(backend, sample.prompt, sample.seed).frames_at(times))
        return ((video.float().cpu() + 1) / 2).clamp(0, 1)
    return generate


def renderer_source(size: int = 64) -> Source:
    """The contract renderer's video of the sample's prompt and seed: the ideal model."""
    def generate(sample: Sample, times: torch.Tensor) -> torch.Tensor:
        return render(sample.scene(), times, size)
    return generate


def streamed_source(source: Source, size: int, fps: float, crf: int = 23) -> Source:
    """``source``'s videos as a viewer of ``t2v-rt stream --size SIZE`` gets them: scaled to
    ``size`` (bilinear) and encoded by the product's H.264 sink (yuv420p, MPEG-TS), decoded."""
    import io

    import av
    import numpy as np

    from t2v_rt.encode.sink import VideoSink

    rate = Fraction(fps).limit_denominator(1001)

    def generate(sample: Sample, times: torch.Tensor) -> torch.Tensor:
        video = source(sample, times)
        rgb = (video * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        buf = io.BytesIO()
        sink = VideoSink(buf, "mpegts", rate, size, crf=crf)
        sink.write(rgb)
        sink.close()
        buf.seek(0)
        with av.open(buf) as inp:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in inp.decode(video=0)])
        return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    return generate


def _reference_seed(seed: int) -> int:
    """Another seed for the rendered set that measures the Frechet distance's sampling floor."""
    return random.Random(f"reference:{seed}").randrange(2**31)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _tally() -> dict:
    return {"scores": defaultdict(lambda: [0, 0]), "all": [0, 0]}


def _add(tally: dict, ok: dict[str, bool]) -> None:
    for name, right in ok.items():
        tally["scores"][name][0] += int(right)
        tally["scores"][name][1] += 1
    tally["all"][0] += int(all(ok.values()))
    tally["all"][1] += 1


def _summary(tally: dict) -> dict:
    r, t = tally["all"]
    scores = sorted(tally["scores"].items())
    return {"videos": t,
            "accuracy": {k: r_ / t_ for k, (r_, t_) in scores if t_},
            "all_attributes": r / t if t else None,
            "counts": {k: [r_, t_] for k, (r_, t_) in scores}}   # [right, scored]


def evaluate(source: Source, samples: list[Sample], fps: float = 15.0, seconds: float = 2.0,
             long_run: float = 600.0, reference_size: int = 64, progress: bool = True) -> dict:
    """Score ``source`` on ``samples``; see the module's docstring for what is measured.

    ``long_run`` 0 skips the second clip. The rendered reference videos (Frechet distance,
    flicker) are drawn at ``reference_size``: the features are in frame units. Progress goes
    to stderr.
    """
    n_frames = round(fps * seconds)
    times = torch.from_numpy(frame_times(0, n_frames, Fraction(fps).limit_denominator(1001)))
    tallies = {g: _tally() for g in GROUPS}
    kinds = {k: _tally() for k in KINDS}
    late = {g: _tally() for g in GROUPS}
    agree = [0, 0]
    flick: dict[str, list[float]] = {"colour": [], "size": []}
    ref_flick: dict[str, list[float]] = {"colour": [], "size": []}
    feats, ref_feats, floor_feats = [], [], []
    start = time.time()
    for i, s in enumerate(samples):
        m = measure(source(s, times), times)
        recovered = classify(m)
        ok = score(recovered, s.target)
        group = "held_out" if s.held_out else "seen"
        _add(tallies[group], ok)
        _add(kinds[s.kind], ok)
        feats.append(features(m))
        f = flicker(m)
        if f is not None:
            for k in flick:
                flick[k].append(f[k])
        ref = measure(render(s.scene(), times, reference_size), times)
        ref_feats.append(features(ref))
        f = flicker(ref)
        if f is not None:
            for k in ref_flick:
                ref_flick[k].append(f[k])
        floor = measure(render(s.scene(_reference_seed(s.seed)), times, reference_size), times)
        floor_feats.append(features(floor))
        if long_run:
            late_times = times + long_run
            recovered_late = classify(measure(source(s, late_times), late_times))
            _add(late[group], score(recovered_late, s.target))
            agree[0] += int(recovered_late == recovered)
            agree[1] += 1
        if progress and ((i + 1) % 25 == 0 or i + 1 == len(samples)):
            el = time.time() - start
            say(f"eval {i + 1}/{len(samples)} | {el:.0f} s | ETA "
                f"{el / (i + 1) * (len(samples) - i - 1):.0f} s")
    result: dict = {
        "samples": len(samples), "fps": fps, "seconds": seconds,
        "mix": {k: sum(s.kind == k for s in samples) for k in KINDS},
        "groups": {g: _summary(tallies[g]) for g in GROUPS},
        "kinds": {k: _summary(kinds[k]) for k in KINDS},
        "flicker": {"generated": {k: _mean(v) for k, v in flick.items()},
                    "rendered": {k: _mean(v) for k, v in ref_flick.items()}},
    }
    if len(samples) >= 2:
        result["frechet"] = {"generated_vs_rendered": frechet_distance(torch.stack(feats),
                                                                       torch.stack(ref_feats)),
                             "rendered_vs_rendered": frechet_distance(torch.stack(floor_feats),
                                                                      torch.stack(ref_feats))}
    if long_run:
        result["long_run"] = {"t0": long_run, "groups": {g: _summary(late[g]) for g in GROUPS},
                              "same_attributes": agree[0] / agree[1] if agree[1] else None}
    return result


def _row(label: str, g: dict, width: int) -> str:
    cells = [g["accuracy"].get(n) for n in spec.ATTRIBUTES] + [g["all_attributes"]]
    return f"{label:<16}{g['videos']:>7}" + "".join(
        f"{'-' if c is None else f'{100 * c:.1f}%':>{width}}" for c in cells)


def format_table(result: dict) -> str:
    names = list(spec.ATTRIBUTES) + ["all"]
    width = max(len(n) for n in names) + 2
    lines = [f"{'group':<16}{'videos':>7}" + "".join(f"{n:>{width}}" for n in names)]
    for group, g in result["groups"].items():
        lines.append(_row(group, g, width))
    for kind, g in result.get("kinds", {}).items():
        if g["videos"]:
            lines.append(_row(f"  {kind}", g, width))
    if "long_run" in result:
        lr = result["long_run"]
        for group, g in lr["groups"].items():
            lines.append(_row(f"{group} @{lr['t0']:g}s", g, width))
        lines.append(f"same attributes at t = {lr['t0']:g} s as at t = 0: "
                     f"{100 * lr['same_attributes']:.1f}% of videos")
    fl = result.get("flicker")
    if fl and fl["generated"]["colour"] is not None:
        gen, ref = fl["generated"], fl["rendered"]
        lines.append(f"flicker (mean frame-to-frame change): colour {gen['colour']:.2f}/255, "
                     f"size {100 * gen['size']:.2f}%  (renderer: {ref['colour']:.2f}/255, "
                     f"{100 * ref['size']:.2f}%)")
    if "frechet" in result:
        fr = result["frechet"]
        lines.append(f"Frechet distance to rendered videos (evaluator features): "
                     f"{fr['generated_vs_rendered']:.4f}  (renderer vs renderer, other seeds: "
                     f"{fr['rendered_vs_rendered']:.4f})")
    return "\n".join(lines)


def to_json(result: dict) -> str:
    return json.dumps(result, indent=2)
