#!/usr/bin/env bash
# The runs of "A full-resolution stem for the frame discriminator"
# (docs/models/stylegan-v-shapes.md): the coordinate recipe of run-minimal-pairs.sh ("xy")
# with --set d_stem=1 from the first step, on the 2-core CPU, one thread each:
#   stem:     80 minutes at lr_d=0.001, then resumed for 30 with minimal_pairs=1,
#             minimal_pair_draws=8, lr_d=0.0003 (the best resume of "Hard minimal pairs for
#             shape", C): 110 minutes of training;
#   stemslow: the same with lr_d=0.0003 from the first step, side by side with the first; it
#             was stopped at 47 minutes (step 4,489) to free its core.
# Then the generator probe after each part, the discriminators' shape score per pair of
# shape words, and a 300-sample eval. Run from the repository root after
# pip install ".[pretrained,torch]" and t2v-rt export-text-encoder.
set -euo pipefail
DATA=${DATA:-shapes5k-long}
RUNS=${RUNS:-runs-stem}
. "$(dirname "$0")/fixed-stride-recipe.sh"
COMMON+=(--set coordinates=absolute --set d_stem=1)
t2v-rt train "${COMMON[@]}" --minutes 80 --set name=stem &
t2v-rt train "${COMMON[@]}" --minutes 47 --set name=stemslow --set lr_d=0.0003 &
wait
run=$(ls -d "$RUNS"/*-stem)
python docs/models/experiments/speed_shape_probe.py "$(ls -d "$RUNS"/*-stemslow)/generator.safetensors"
python docs/models/experiments/speed_shape_probe.py "$run/generator.safetensors"
hard_pairs_and_score "$run" 30 docs/models/experiments/eval-stem.json
