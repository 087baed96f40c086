"""Evaluate a generator against the shapes-world contract: ``t2v-rt eval``.

Draws prompt x seed samples, generates ``seconds`` of video at ``fps`` at the model's
resolution, recovers every attribute from the pixels and scores the attributes each prompt
names. Seen and held-out colour-shape pairs are reported separately.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

from t2v_rt.backends.base import Backend
from t2v_rt.eval.attributes import recover_attributes, score
from t2v_rt.pipeline import Video, frame_times
from t2v_rt.world import spec
from t2v_rt.world.captions import caption


@dataclass
class Sample:
    prompt: str
    seed: int
    target: dict[str, str | None]
    held_out: bool


def canonical_samples(n: int, seed: int = 0, held_out_share: float = 0.25) -> list[Sample]:
    """``n`` canonical prompts (every attribute given), about ``held_out_share`` held out."""
    rng = random.Random(seed)
    out = []
    held = sorted(spec.HELD_OUT)
    for i in range(n):
        attrs = {k: rng.choice(v) for k, v in spec.ATTRIBUTES.items()}
        if rng.random() < held_out_share:
            attrs["colour"], attrs["shape"] = rng.choice(held)
        if attrs["motion"] == "still":
            attrs["speed"] = None
        out.append(Sample(caption(attrs), rng.randrange(2**31), attrs,
                          spec.is_held_out(attrs["colour"], attrs["shape"])))
    return out


def evaluate(backend: Backend, samples: list[Sample], fps: float = 15.0, seconds: float = 2.0,
             progress: bool = True) -> dict:
    from fractions import Fraction

    n_frames = round(fps * seconds)
    times = frame_times(0, n_frames, Fraction(fps).limit_denominator(1001))
    tallies: dict[str, dict[str, list[int]]] = {"seen": defaultdict(lambda: [0, 0]),
                                                "held_out": defaultdict(lambda: [0, 0])}
    all_right = {"seen": [0, 0], "held_out": [0, 0]}
    start = time.time()
    for i, s in enumerate(samples):
        video = (Video(backend, s.prompt, s.seed).frames_at(times).float().cpu() + 1) / 2
        ok = score(recover_attributes(video, times), s.target)
        group = "held_out" if s.held_out else "seen"
        for name, right in ok.items():
            tallies[group][name][0] += int(right)
            tallies[group][name][1] += 1
        all_right[group][0] += int(all(ok.values()))
        all_right[group][1] += 1
        if progress and ((i + 1) % 25 == 0 or i + 1 == len(samples)):
            el = time.time() - start
            print(f"eval {i + 1}/{len(samples)} | {el:.0f} s | ETA "
                  f"{el / (i + 1) * (len(samples) - i - 1):.0f} s", file=sys.stderr, flush=True)
    result: dict = {"samples": len(samples), "fps": fps, "seconds": seconds, "groups": {}}
    for group in ("seen", "held_out"):
        accs = {k: r / t for k, (r, t) in sorted(tallies[group].items()) if t}
        r, t = all_right[group]
        result["groups"][group] = {"videos": t, "accuracy": accs,
                                   "all_attributes": r / t if t else None}
    return result


def format_table(result: dict) -> str:
    names = list(spec.ATTRIBUTES) + ["all"]
    width = max(len(n) for n in names) + 2
    lines = [f"{'group':<10}{'videos':>7}" + "".join(f"{n:>{width}}" for n in names)]
    for group, g in result["groups"].items():
        cells = [g["accuracy"].get(n) for n in spec.ATTRIBUTES] + [g["all_attributes"]]
        lines.append(f"{group:<10}{g['videos']:>7}" + "".join(
            f"{'-' if c is None else f'{100 * c:.1f}%':>{width}}" for c in cells))
    return "\n".join(lines)


def to_json(result: dict) -> str:
    return json.dumps(result, indent=2)

