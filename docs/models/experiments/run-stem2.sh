#!/usr/bin/env bash
# The run "stem2" of "A full-resolution stem for the frame discriminator"
# (docs/models/stylegan-v-shapes.md), shipped as stylegan-v-shapes-minilm until pairs0 (run-pairs0.sh): the recipe of
# run-stem.sh with a deeper stem (--set d_stem=2), as one run using both cores of the 2-core
# CPU (--set threads=2) instead of two runs side by side, and a longer second phase: 45
# minutes at lr_d=0.001, then resumed for 50 with minimal_pairs=1, minimal_pair_draws=8,
# lr_d=0.0003: 95 minutes of training.
# Then the generator probe after each phase, the discriminators' shape score per pair of
# shape words, and a 300-sample eval. Run from the repository root after
# pip install ".[pretrained,torch]" and t2v-rt export-text-encoder.
set -euo pipefail
DATA=${DATA:-shapes5k-long}
RUNS=${RUNS:-runs-stem2}
. "$(dirname "$0")/fixed-stride-recipe.sh"
COMMON+=(--set coordinates=absolute --set d_stem=2 --set threads=2)
t2v-rt train "${COMMON[@]}" --minutes 45 --set name=stem2
run=$(ls -d "$RUNS"/*-stem2)
python docs/models/experiments/speed_shape_probe.py "$run/generator.safetensors"
hard_pairs_and_score "$run" 50 docs/models/experiments/eval-stem2.json
# How it was shipped as stylegan-v-shapes-minilm (until pairs0, run-pairs0.sh, replaced it):
# cp "$run/generator.safetensors" t2v_rt/weights/stylegan-v-shapes-minilm.safetensors
# cp "$run/generator.json" t2v_rt/weights/stylegan-v-shapes-minilm.json
# t2v-rt export-onnx --model stylegan-v-shapes-minilm --precision fp32 --force \
#     --out t2v_rt/weights/stylegan-v-shapes-minilm-onnx
# t2v-rt eval --model stylegan-v-shapes-minilm --samples 600 \
#     --json docs/models/eval-stylegan-v-shapes-minilm.json
# t2v-rt eval --model stylegan-v-shapes-minilm --prompts unseen-words --samples 300 \
#     --long-run 0 --json docs/models/eval-stylegan-v-shapes-minilm-unseen-words.json
# python docs/make_figures.py --model stylegan-v-shapes-minilm \
#     --out docs/models/stylegan-v-shapes-minilm-strip.png
