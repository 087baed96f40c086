#!/usr/bin/env bash
# pairs0's last 25 minutes (as run-pairs0-last25.sh) with a stronger discriminator, at the
# learning rates of pairs0's second phase (lr_d=0.0003); docs/models/stylegan-v-shapes.md,
# "A stronger discriminator in the last 25 minutes":
#   d2   d_steps=2: the discriminator, which scores the generator's round squares about as
#        real as real squares (corner_gradient_probe.py), gets a second update on a fresh
#        batch before each generator update; lrd2 (a faster lr_d) broke the model instead.
#   r1   r1_gamma=0.1 (1 before): R1 penalises the discriminator's gradient on real frames,
#        the signal that would ask for a corner; StyleGAN2-ADA's rule of thumb for 64x64 at a
#        batch of 8 is 0.0002 x 64^2 / 8 = 0.1.
#   c3   both, and frame_weight=4 (run-pairs0-last25.sh's fw4): every lever at once.
# Alone on both cores (threads=2), then the generator probe, the gradient probe and a
# 300-sample eval. Run from the repository root after run-pairs0.sh (RUN names its run
# folder; its step-14,742 checkpoint must still be there). VARIANTS="d2" picks some.
set -euo pipefail
. "$(dirname "$0")/probe-and-score.sh"
RUN=${RUN:-runs-pairs0/00000-pairs0}
OUT=${OUT:-runs-pairs0-dsteps}
VARIANTS=${VARIANTS:-d2 r1 c3}
declare -A EXTRA=([d2]="--set d_steps=2" [r1]="--set r1_gamma=0.1"
                  [c3]="--set d_steps=2 --set r1_gamma=0.1 --set frame_weight=4")
test ! -e "$OUT" || { echo "$OUT exists; move it away first" >&2; exit 2; }
mkdir -p "$OUT"
for variant in $VARIANTS; do
    copy_run "$RUN" "$OUT/$variant"
    # The copy's latest checkpoint must be pairs0's last (step 14,742), not a later one.
    test "$(ls "$OUT/$variant"/checkpoint-*.safetensors | tail -1)" = \
        "$OUT/$variant/checkpoint-0014742.safetensors" \
        || { echo "$RUN: its last checkpoint is not step 14,742" >&2; exit 2; }
    # shellcheck disable=SC2086
    t2v-rt train --resume "$OUT/$variant" --minutes 25 --steps 100000 --set threads=2 \
        ${EXTRA[$variant]} > "$OUT/$variant.log" 2>&1
    probe_and_score "$OUT/$variant" "docs/models/experiments/eval-pairs0-$variant.json"
done
