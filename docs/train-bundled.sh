#!/usr/bin/env bash
# Retrains the bundled model exactly as it was trained: one run, resumed with the settings
# that changed along the way (the data order is a function of the step, so the segments
# join up; only floating-point summation order can differ). CPU, 2 threads: ~60 min.
set -euo pipefail
C=docs/train-bundled.json
RUN=runs/00000-shapes
test ! -e "$RUN" || { echo "$RUN exists; move it away first" >&2; exit 2; }
t2v-rt train --config "$C" --set steps=1750 --set pose_weight=0   # reconstruction only, no pose target
t2v-rt train --config "$C" --resume "$RUN" --set steps=2250 --set pose_weight=1
t2v-rt train --config "$C" --resume "$RUN" --set steps=3000     # pose_weight 5 from here on
t2v-rt train --config "$C" --resume "$RUN"                      # adversarial terms from step 5000
cp "$RUN/generator.safetensors" t2v_rt/weights/default.safetensors
cp "$RUN/generator.json" t2v_rt/weights/default.json
