"""Which hard caption negatives isolate one attribute (docs/training.md, ``minimal_pairs``;
docs/models/stylegan-v-shapes.md, "Minimal pairs for shape").

For 500 random captions of a rendered shapes folder, compares two ways of finding the
captions of *other* clips that are closest to a clip's own:

- nearest in the sentence encoder's space (all-MiniLM-L6-v2, cosine; the 1, 8 and 64
  nearest), as embedding-based hard-negative mining would pick them;
- minimal pairs (t2v_rt.training.negatives.MinimalPairs): captions that differ in one word,
  leaving out the substitutions the data shows to be paraphrases; one drawn per caption.

and reports, from the renderer's ground truth (meta.json, read here only to score), which
scene attributes the negative's clip differs in: "same scene" is a false negative, "shape
only" the negative that teaches shape. About a minute on the 2-core CPU.

    python docs/models/experiments/hard_negatives.py shapes5k-long
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np

from t2v_rt.generators.text import pretrained_front_end
from t2v_rt.training.negatives import MinimalPairs
from t2v_rt.training.trainer import CaptionTokens

KEYS = ("shape", "colour", "size", "motion", "speed", "background")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="a folder written by t2v-rt dataset render-shapes")
    ap.add_argument("--queries", type=int, default=500)
    args = ap.parse_args()
    folder = Path(args.data)
    meta = {c["video"]: c for c in json.loads((folder / "meta.json").read_text())["clips"]}
    with open(folder / "captions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    videos = list(dict.fromkeys(r["video"] for r in rows))
    clip_of = {v: i for i, v in enumerate(videos)}
    caps = [r["caption"] for r in rows]
    clip = np.array([clip_of[r["video"]] for r in rows])
    scene = [meta[v] for v in videos]
    table = [[] for _ in videos]
    for c, i in zip(caps, clip):
        table[i].append(c)

    def differs(i: int, j: int) -> tuple[str, ...]:
        return tuple(k for k in KEYS if scene[i][k] != scene[j][k])

    def report(name: str, found: Counter, n: int) -> None:
        print(f"{name}: shape only {found[('shape',)] / n:.3f}, same scene {found[()] / n:.3f}"
              f" ({n} negatives); most common: "
              + ", ".join(f"{'+'.join(k) or 'same scene'} {v / n:.3f}"
                          for k, v in found.most_common(4)))

    # the captions as the trainer embeds them for a MiniLM generator
    tokens = CaptionTokens(pretrained_front_end("all-MiniLM-L6-v2"))
    emb = np.concatenate([tokens(caps[i:i + 256]).numpy() for i in range(0, len(caps), 256)])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    text = np.array(caps)
    queries = np.random.default_rng(0).choice(len(caps), args.queries, replace=False)
    for k in (1, 8, 64):
        found: Counter = Counter()
        for q in queries:
            sim = emb @ emb[q]
            sim[(clip == clip[q]) | (text == caps[q])] = -np.inf
            for j in np.argsort(-sim)[:k]:
                found[differs(clip[q], clip[j])] += 1
        report(f"MiniLM nearest {k}", found, k * len(queries))
    pairs = MinimalPairs(table)
    rng = np.random.default_rng(0)
    found = Counter()
    have = 0
    for q in queries:
        other, _, has = pairs.draw(rng, [caps[q]])
        if has[0]:
            have += 1
            found[differs(clip[q], int(other[0]))] += 1
    print(f"minimal pairs: {len(pairs)} of {len(set(caps))} caption texts have one; "
          f"{have} of {len(queries)} queries")
    report("minimal pair", found, have)


if __name__ == "__main__":
    main()
