#!/usr/bin/env bash
# The two runs of "Depth or width for shape" (docs/models/stylegan-v-shapes.md): the fixed-stride
# recipe of run-fixed-stride.sh at a fixed stride of 3 from the first step, MiniLM, with a
# generator either twice as deep (block_convs=2: a second 3x3 modulated conv at every
# resolution above 4x4) or wider at 16..64 px (channels [64,64,64,32,32]); 70 minutes, then
# resumed for 50 more (2 h in all; the card's runs stopped at steps 7,828 and 7,758). Two runs
# side by side on the 2-core CPU, one thread each.
# Run from the repository root after pip install ".[pretrained,torch]" and
# t2v-rt export-text-encoder.
set -euo pipefail
DATA=${DATA:-shapes5k-long}
RUNS=${RUNS:-runs-depth-width}
test ! -e "$RUNS" || { echo "$RUNS exists; move it away first" >&2; exit 2; }
test -e "$DATA" || t2v-rt dataset render-shapes "$DATA" --clips 5000 --seconds 2.4

COMMON=(--data "$DATA" --arch stylegan-v --run-dir "$RUNS" --minutes 70 --steps 100000
        --set threads=1 --set latent_dim=32 --set text_dim=32
        --set w_dim=64 --set motion_dim=32 --set lr_g=0.001 --set lr_d=0.001
        --set frames=36 --set clip_frames=6 --set min_stride=3 --set max_stride=3
        --set contrastive=1 --set time_modulation=features --set speed_negatives=1
        --set augment=false --set text_encoder=all-MiniLM-L6-v2)
t2v-rt train "${COMMON[@]}" --set name=wide --set 'channels=[64,64,64,32,32]' &
t2v-rt train "${COMMON[@]}" --set name=deep --set 'channels=[64,64,32,32,16]' \
    --set block_convs=2 &
wait
for name in wide deep; do
    run=$(ls -d "$RUNS"/*-"$name")
    t2v-rt train --resume "$run" --run-dir "$RUNS" --minutes 50 --steps 100000 &
done
wait
for name in wide deep; do
    run=$(ls -d "$RUNS"/*-"$name")
    t2v-rt eval --model "$run/generator.safetensors" --samples 300 --long-run 0 \
        --backend torch --json "docs/models/experiments/eval-$name-2h.json"
    python docs/models/experiments/speed_shape_probe.py "$run/generator.safetensors"
done
