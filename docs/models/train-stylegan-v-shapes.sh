#!/usr/bin/env bash
# Reproduces the bundled model `stylegan-v-shapes` (docs/models/stylegan-v-shapes.md) through
# the public path: render the data, train, ship, score. CPU: about 2 minutes to render, 1 to
# decode the training cache, 95 minutes of training (one thread; the card's run shared the
# 2-core machine with the pretrained-encoder run), about 10 to score. Run from the repository root.
set -euo pipefail
DATA=${DATA:-shapes5k}
RUNS=${RUNS:-runs-stylegan-v-shapes}
test ! -e "$RUNS" || { echo "$RUNS exists; move it away first" >&2; exit 2; }

t2v-rt dataset render-shapes "$DATA" --clips 5000          # seed 0, 64x64, 15 fps, 16 frames
t2v-rt dataset check "$DATA"
t2v-rt train --data "$DATA" --arch stylegan-v --minutes 95 --steps 100000 --run-dir "$RUNS" \
    --set threads=1 --set 'channels=[64,64,32,32,16]' --set latent_dim=32 --set text_dim=32 \
    --set w_dim=64 --set motion_dim=32 --set lr_g=0.001 --set lr_d=0.001
RUN=$(ls -d "$RUNS"/*-stylegan-v | tail -1)

# ship it (what the repository's t2v_rt/weights/stylegan-v-shapes* are), then score it
cp "$RUN/generator.safetensors" t2v_rt/weights/stylegan-v-shapes.safetensors
cp "$RUN/generator.json" t2v_rt/weights/stylegan-v-shapes.json
t2v-rt export-onnx --model stylegan-v-shapes --precision fp32 --force \
    --out t2v_rt/weights/stylegan-v-shapes-onnx
t2v-rt eval --model stylegan-v-shapes --samples 600 --json docs/models/eval-stylegan-v-shapes.json
python docs/make_figures.py --model stylegan-v-shapes --out docs/models/stylegan-v-shapes-strip.png
