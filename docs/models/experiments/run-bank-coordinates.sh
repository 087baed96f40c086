#!/usr/bin/env bash
# The runs of "A caption bank, then coordinates, for shape" (docs/models/stylegan-v-shapes.md):
# the recipe of run-depth-width.sh (fixed stride 3 from the first step, MiniLM, contrastive=1,
# time_modulation=features, speed_negatives=1, no augmentation, channels [64,64,32,32,16]),
# two runs side by side on the 2-core CPU, one thread each:
# 1. contrastive_bank=1024 (1,024 captions of random data clips join the batch's 8 as
#    contrastive negatives), one conv per resolution and two (block_convs=2); stopped after
#    35 minutes (steps 2,726 and 2,091), when their samples were still fragments;
# 2. coordinates=absolute (CoordConv in every 3x3 modulated conv): one conv per resolution,
#    90 minutes; beside it, block_convs=2, whose seed 0 went black by step 1,000 (stopped at
#    1,217) and whose seed 1 then ran 70 minutes.
# Run from the repository root after pip install ".[pretrained,torch]" and
# t2v-rt export-text-encoder.
set -euo pipefail
DATA=${DATA:-shapes5k-long}
RUNS=${RUNS:-runs-bank-coordinates}
. "$(dirname "$0")/fixed-stride-recipe.sh"
t2v-rt train "${COMMON[@]}" --minutes 35 --set contrastive_bank=1024 --set name=bankdeep \
    --set block_convs=2 &
t2v-rt train "${COMMON[@]}" --minutes 35 --set contrastive_bank=1024 --set name=bank &
wait
t2v-rt train "${COMMON[@]}" --minutes 90 --set coordinates=absolute --set name=xy &
t2v-rt train "${COMMON[@]}" --minutes 20 --set coordinates=absolute --set name=xydeep \
    --set block_convs=2
t2v-rt train "${COMMON[@]}" --minutes 70 --set coordinates=absolute --set name=xydeep-s1 \
    --set block_convs=2 --set seed=1
wait
for name in xy xydeep-s1; do
    run=$(ls -d "$RUNS"/*-"$name")
    t2v-rt eval --model "$run/generator.safetensors" --samples 300 --long-run 0 \
        --backend torch --json "docs/models/experiments/eval-$name.json"
    python docs/models/experiments/speed_shape_probe.py "$run/generator.safetensors"
done
for name in bank bankdeep xy xydeep-s1; do
    run=$(ls -d "$RUNS"/*-"$name")
    python docs/models/experiments/trained_discriminator_probe.py \
        "$(ls "$run"/checkpoint-*.safetensors | tail -1)"
done
