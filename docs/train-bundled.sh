#!/usr/bin/env bash
# Retrains the bundled model as it was trained: one run, resumed with the settings that
# changed along the way (the data order is a function of the step, so the segments join up;
# only floating-point summation order can differ). CPU, 2 threads: about 40 minutes.
# docs/train-bundled.json holds the settings of the longest segment; others override some.
set -euo pipefail
C=docs/train-bundled.json
RUN=runs/00000-shapes
test ! -e "$RUN" || { echo "$RUN exists; move it away first" >&2; exit 2; }
old="--set weight_box=false"   # extra loss weight on the shape's pixels only, until step 3500
t2v-rt train --config "$C" $old --set steps=1500 --set lr_g=0.0005 --set pose_weight=1
t2v-rt train --config "$C" --resume "$RUN" $old --set steps=2250 --set lr_g=0.0005 --set pose_weight=5
t2v-rt train --config "$C" --resume "$RUN" $old --set steps=3500
t2v-rt train --config "$C" --resume "$RUN" --set steps=6000      # weight on the whole box
t2v-rt train --config "$C" --resume "$RUN" --set lr_g=0.0001     # to step 6750
cp "$RUN/generator.safetensors" t2v_rt/weights/default.safetensors
cp "$RUN/generator.json" t2v_rt/weights/default.json
