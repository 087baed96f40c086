#!/usr/bin/env bash
# Retrains the bundled model as it was trained: one run of docs/train-bundled.json.
# CPU, 2 threads: about 50 minutes. Progress on stderr; checkpoints every 500 steps
# (`t2v-rt train --config docs/train-bundled.json --resume runs/00000-shapes` resumes).
set -euo pipefail
C=docs/train-bundled.json
RUN=runs/00000-shapes
test ! -e "$RUN" || { echo "$RUN exists; move it away first" >&2; exit 2; }
t2v-rt train --config "$C"
cp "$RUN/generator.safetensors" t2v_rt/weights/default.safetensors
cp "$RUN/generator.json" t2v_rt/weights/default.json
