#!/usr/bin/env bash
# The runs of "Minimal pairs for shape" (docs/models/stylegan-v-shapes.md), and how the
# shipped stylegan-v-shapes-minilm was made: the recipe of run-bank-coordinates.sh (fixed
# stride 3 from the first step, MiniLM, contrastive=1, time_modulation=features,
# speed_negatives=1, no augmentation, channels [64,64,32,32,16], coordinates=absolute), two
# runs side by side on the 2-core CPU, one thread each:
# 1. "xy": 90 minutes without minimal pairs (run-bank-coordinates.sh's coordinate run), then
#    resumed for 29 minutes with --set minimal_pairs=1: 119 minutes of training in all. Its
#    EMA generator is the shipped stylegan-v-shapes-minilm (step 9,250);
# 2. "xymp": minimal_pairs=1 from the first step, 100 minutes.
# Run from the repository root after pip install ".[pretrained,torch]" and
# t2v-rt export-text-encoder.
set -euo pipefail
DATA=${DATA:-shapes5k-long}
RUNS=${RUNS:-runs-minimal-pairs}
. "$(dirname "$0")/fixed-stride-recipe.sh"
COMMON+=(--set coordinates=absolute)
t2v-rt train "${COMMON[@]}" --minutes 90 --set name=xy &
t2v-rt train "${COMMON[@]}" --minutes 100 --set name=xymp --set minimal_pairs=1 &
wait
xy=$(ls -d "$RUNS"/*-xy)
t2v-rt train --resume "$xy" --minutes 29 --steps 100000 --set minimal_pairs=1
for run in "$xy" "$(ls -d "$RUNS"/*-xymp)"; do
    t2v-rt eval --model "$run/generator.safetensors" --samples 300 --long-run 0 \
        --backend torch --json "docs/models/experiments/eval-mp-$(basename "$run" | cut -d- -f2-).json"
    python docs/models/experiments/speed_shape_probe.py "$run/generator.safetensors"
    python docs/models/experiments/trained_discriminator_probe.py --pairs \
        "$(ls "$run"/checkpoint-*.safetensors | tail -1)"
done
python docs/models/experiments/hard_negatives.py "$DATA"
# Ship the first (shipped as stylegan-v-shapes-minilm until run-stem2.sh's run replaced it):
# cp "$xy/generator.safetensors" t2v_rt/weights/stylegan-v-shapes-minilm.safetensors
# cp "$xy/generator.json" t2v_rt/weights/stylegan-v-shapes-minilm.json
# t2v-rt export-onnx --model stylegan-v-shapes-minilm --precision fp32 --force \
#     --out t2v_rt/weights/stylegan-v-shapes-minilm-onnx
