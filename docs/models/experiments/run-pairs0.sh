#!/usr/bin/env bash
# "pairs0", shipped as stylegan-v-shapes-minilm from 2026-12-04 to 2026-12-05 (replaced by
# r1faint, run-r1light.sh): the recipe of run-stem2.sh with hard
# minimal-pair negatives from the first step instead of from minute 45
# (docs/models/stylegan-v-shapes.md, "Hard pairs from the first step"): minimal_pairs=1,
# minimal_pair_draws=8 throughout; lr_d=0.001 for 45 minutes (in two legs of 20 and 25, the
# corner probe after each), then resumed for 50 at lr_d=0.0003 as run-stem2.sh's second
# phase: 95 minutes of training on both cores. Then the corner probe, the generator probe,
# the discriminators' shape score and a 300-sample eval. Run from the repository root after
# pip install ".[pretrained,torch]" and t2v-rt export-text-encoder.
set -euo pipefail
DATA=${DATA:-shapes5k-long}
RUNS=${RUNS:-runs-pairs0}
. "$(dirname "$0")/probe-and-score.sh"
. "$(dirname "$0")/fixed-stride-recipe.sh"
COMMON+=("${PAIRS0[@]}")
t2v-rt train "${COMMON[@]}" --minutes 20 --set name=pairs0
run=$(ls -d "$RUNS"/*-pairs0)
python docs/models/experiments/corner_probe.py "$(last "$run")"
t2v-rt train --resume "$run" --minutes 25 --steps 100000
python docs/models/experiments/corner_probe.py "$(last "$run")"
python docs/models/experiments/speed_shape_probe.py "$run/generator.safetensors"
hard_pairs_and_score "$run" 50 docs/models/experiments/eval-pairs0.json
python docs/models/experiments/corner_probe.py "$(last "$run")"
# It was shipped as stylegan-v-shapes-minilm with the commands at the end of run-r1light.sh.
