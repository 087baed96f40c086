#!/usr/bin/env bash
# pairs0's last 25 minutes (as run-pairs0-dsteps.sh) with XMC-GAN's real-fake image
# contrastive loss for the generator (image_contrastive; docs/training.md): each generated
# clip must be nearer, in the frame discriminator's features, the real clip of its caption
# than the batch's other real clips and the real clips of its minimal pairs (a real circle for
# a generated square). The gradient probe found that the whole-frame logit's gradient on the
# generator's squares does not ask for their corners; this is a signal in the 64 directions
# the discriminator reads captions in. docs/models/stylegan-v-shapes.md, "A real-fake image
# contrastive loss in the last 25 minutes":
#   ic    image_contrastive=1 (XMC-GAN's weight), tau 0.1
#   ic4   image_contrastive=4
# Alone on both cores (threads=2), at pairs0's second-phase settings otherwise, then the
# generator probe, the gradient probe and a 300-sample eval. Run from the repository root
# after run-pairs0.sh (RUN names its run folder; its step-14,742 checkpoint must still be
# there). VARIANTS="ic" picks some.
set -euo pipefail
. "$(dirname "$0")/probe-and-score.sh"
RUN=${RUN:-runs-pairs0/00000-pairs0}
OUT=${OUT:-runs-pairs0-ic}
VARIANTS=${VARIANTS:-ic ic4}
declare -A EXTRA=([ic]="--set image_contrastive=1" [ic4]="--set image_contrastive=4")
test ! -e "$OUT" || { echo "$OUT exists; move it away first" >&2; exit 2; }
test "$(ls "$RUN"/checkpoint-*.safetensors | tail -1)" = "$RUN/checkpoint-0014742.safetensors" \
    || { echo "$RUN: its last checkpoint is not step 14,742" >&2; exit 2; }
for variant in $VARIANTS; do
    copy_run "$RUN" "$OUT/$variant"
    # shellcheck disable=SC2086
    t2v-rt train --resume "$OUT/$variant" --minutes 25 --steps 100000 --set threads=2 \
        ${EXTRA[$variant]} > "$OUT/$variant.log" 2>&1
    probe_and_score "$OUT/$variant" "docs/models/experiments/eval-pairs0-$variant.json"
done
