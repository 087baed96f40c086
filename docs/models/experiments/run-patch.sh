#!/usr/bin/env bash
# "patch": pairs0's recipe (run-pairs0.sh: stem2 with hard minimal pairs from the first step)
# with text-aware per-region verdicts in the frame discriminator (d_patch=1 on its 16x16 map:
# regions of 14 pixels, 4 apart; docs/training.md). The gradient probe found that pairs0's
# whole-frame verdict does not ask for a rounded square's corners (model card, "pairs0's last
# 25 minutes"); a region's verdict weighs a corner among what that region holds.
# lr_d=0.001 for 45 minutes, then resumed for 50 at lr_d=0.0003 (pairs0's phases): 95 minutes
# on both cores, the last 25 of the 2 hours left. Legs: PHASE=1 (45 min), PHASE=2 (50 min,
# then the probes and a 300-sample eval); both (the default) one after the other; PHASE=3
# afterwards spends those last 25 minutes on the same run (120 in all), then the same probes.
# Run from the repository root after pip install ".[pretrained,torch]" and
# t2v-rt export-text-encoder.
set -euo pipefail
. "$(dirname "$0")/probe-and-score.sh"
DATA=${DATA:-shapes5k-long}
RUNS=${RUNS:-runs-patch}
PHASE=${PHASE:-both}
if [ "$PHASE" = 1 ] || [ "$PHASE" = both ]; then
    . "$(dirname "$0")/fixed-stride-recipe.sh"
    COMMON+=("${PAIRS0[@]}" --set d_patch=1)
    t2v-rt train "${COMMON[@]}" --minutes 45 --set name=patch
fi
if [ "$PHASE" = 2 ] || [ "$PHASE" = both ]; then
    run=$(ls -d "$RUNS"/*-patch)
    t2v-rt train --resume "$run" --minutes 50 --steps 100000 --set lr_d=0.0003
    python docs/models/experiments/corner_probe.py "$(last "$run")"
    probe_and_score "$run" docs/models/experiments/eval-patch.json
fi
if [ "$PHASE" = 3 ]; then
    run=$(ls -d "$RUNS"/*-patch)
    t2v-rt train --resume "$run" --minutes 25 --steps 100000
    python docs/models/experiments/corner_probe.py "$(last "$run")"
    probe_and_score "$run" docs/models/experiments/eval-patch-120.json
fi
