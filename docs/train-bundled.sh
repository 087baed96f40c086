#!/usr/bin/env bash
# Retrains the bundled model as it was trained: one run, resumed once when the choice head's
# extra captions joined (the data order is a function of the step, so the segments join up;
# only floating-point summation order can differ). CPU, 2 threads: about 45 minutes.
# docs/train-bundled.json holds the settings of the longer segment.
set -euo pipefail
C=docs/train-bundled.json
RUN=runs/00000-shapes
test ! -e "$RUN" || { echo "$RUN exists; move it away first" >&2; exit 2; }
t2v-rt train --config "$C" --set steps=1500 --set choice_batch=0 --set lr_decay_steps=0
t2v-rt train --config "$C" --resume "$RUN"        # to step 7500, the last 3000 decaying lr
cp "$RUN/generator.safetensors" t2v_rt/weights/default.safetensors
cp "$RUN/generator.json" t2v_rt/weights/default.json
