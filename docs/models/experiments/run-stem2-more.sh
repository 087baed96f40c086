#!/usr/bin/env bash
# The last 25 minutes of the 2-hour CPU budget, on the run of run-stem2.sh (95 minutes, step
# 14,387; docs/models/stylegan-v-shapes.md, "The last 25 minutes"): three copies of its run
# folder, each resumed for 25 minutes with its second phase's settings (minimal_pairs=1,
# minimal_pair_draws=8, lr_d=0.0003, both cores), one after the other:
#   more   as it was (the control);
#   r1low  the R1 weight cut tenfold (r1_gamma=0.1), so the discriminators may answer to a
#          corner's few pixels;
#   lrg2   the generator's learning rate doubled (lr_g=0.002), so it may follow them faster.
# Then, for the run at 95 minutes and each copy, the corner probe of the frame discriminator;
# for each copy, the generator probe and a 300-sample eval. Run from the repository root after
# run-stem2.sh (RUN names its run folder; its last checkpoint must still be there).
set -euo pipefail
. "$(dirname "$0")/probe-and-score.sh"
RUN=${RUN:-runs-stem2/00000-stem2}
OUT=${OUT:-runs-stem2-more}
test ! -e "$OUT" || { echo "$OUT exists; move it away first" >&2; exit 2; }
mkdir -p "$OUT"
declare -A EXTRA=([more]="" [r1low]="--set r1_gamma=0.1" [lrg2]="--set lr_g=0.002")
for variant in more r1low lrg2; do
    cp -r "$RUN" "$OUT/$variant"
    # shellcheck disable=SC2086
    t2v-rt train --resume "$OUT/$variant" --minutes 25 --steps 100000 \
        --set minimal_pairs=1 --set minimal_pair_draws=8 --set lr_d=0.0003 ${EXTRA[$variant]}
done
python docs/models/experiments/corner_probe.py "$(last "$RUN")"
for variant in more r1low lrg2; do
    python docs/models/experiments/corner_probe.py "$(last "$OUT/$variant")"
    python docs/models/experiments/speed_shape_probe.py "$OUT/$variant/generator.safetensors"
    t2v-rt eval --model "$OUT/$variant/generator.safetensors" --samples 300 --long-run 0 \
        --backend torch --json "docs/models/experiments/eval-stem2-$variant.json"
done
