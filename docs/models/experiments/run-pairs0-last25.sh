#!/usr/bin/env bash
# The last 25 minutes of the 2-hour CPU budget, on the run of run-pairs0.sh (95 minutes on
# both cores, step 14,742; docs/models/stylegan-v-shapes.md, "pairs0's last 25 minutes"): two
# copies of its run folder, resumed side by side for 25 minutes, one core each (threads=1),
# with its second phase's settings (minimal pairs, lr_d=0.0003) except:
#   lowlr   both learning rates cut (lr_g=0.0002, lr_d=0.0001) and the EMA's half-life
#           raised to 500 steps: do the squares' ragged edges and one-row spikes, which widen
#           their box, come from the optimiser's noise at lr_g=0.001?
#   ema     the learning rates kept, the EMA's half-life raised to 1,500 steps: does a longer
#           average of the same weights clean the edges?
# Then, alone on both cores (threads=2):
#   fw4     frame_weight=4: the frame discriminator, which tells real squares from rounded ones
#           (corner_probe.py), weighs four times as much in the generator's loss.
#   lrd2    lr_d=0.002: a discriminator that keeps up with the generator's current squares.
# Then the generator probe, the gradient probe and a 300-sample eval of each. Run from the
# repository root after run-pairs0.sh (RUN names its run folder; its last checkpoint must
# still be there).
set -euo pipefail
. "$(dirname "$0")/probe-and-score.sh"
RUN=${RUN:-runs-pairs0/00000-pairs0}
OUT=${OUT:-runs-pairs0-last25}
test ! -e "$OUT" || { echo "$OUT exists; move it away first" >&2; exit 2; }
mkdir -p "$OUT"
declare -A EXTRA=([lowlr]="--set lr_g=0.0002 --set lr_d=0.0001 --set ema_halflife_steps=500"
                  [ema]="--set lr_d=0.0003 --set ema_halflife_steps=1500")
for variant in lowlr ema; do
    copy_run "$RUN" "$OUT/$variant"
    # shellcheck disable=SC2086
    t2v-rt train --resume "$OUT/$variant" --minutes 25 --steps 100000 --set threads=1 \
        ${EXTRA[$variant]} > "$OUT/$variant.log" 2>&1 &
done
wait
copy_run "$RUN" "$OUT/fw4"
t2v-rt train --resume "$OUT/fw4" --minutes 25 --steps 100000 --set threads=2 \
    --set frame_weight=4 > "$OUT/fw4.log" 2>&1
copy_run "$RUN" "$OUT/lrd2"
t2v-rt train --resume "$OUT/lrd2" --minutes 25 --steps 100000 --set threads=2 \
    --set lr_d=0.002 > "$OUT/lrd2.log" 2>&1
for variant in lowlr ema fw4 lrd2; do
    probe_and_score "$OUT/$variant" "docs/models/experiments/eval-pairs0-$variant.json"
done
