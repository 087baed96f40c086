#!/usr/bin/env bash
# The runs of "Hard minimal pairs for shape" (docs/models/stylegan-v-shapes.md): the 90-minute
# coordinate run ("xy" of run-bank-coordinates.sh, step 7,557 here), copied and each copy
# resumed for 30 minutes (120 in all, the issue's CPU budget) four ways, two side by side on
# the 2-core CPU, one thread each:
#   A: minimal_pairs=1, minimal_pair_draws=8;   B: minimal_pairs=2, minimal_pair_draws=32;
#   C: A with lr_d=0.0003;                      D: B with lr_d=0.0003;
# then E: C resumed for 30 more minutes (150 in all); F: A with lr_d=0.0001 (probes only).
# Then each one's generator probe, its discriminators' shape score per pair of shape words,
# and a 300-sample eval; and the discriminator-capacity diagnostic at two learning rates.
# Run from the repository root after pip install ".[pretrained,torch]" and
# t2v-rt export-text-encoder; XY is that run's folder, as its 90 minutes left it
# (run-minimal-pairs.sh resumes its own copy in place).
set -euo pipefail
DATA=${DATA:-shapes5k-long}
RUNS=${RUNS:-runs-hard-pairs}
XY=${XY:?set XY to the 90-minute coordinate run folder (run-bank-coordinates.sh, name xy)}
test ! -e "$RUNS" || { echo "$RUNS exists; move it away first" >&2; exit 2; }
mkdir -p "$RUNS"
for name in A B C D; do
    cp -r "$XY" "$RUNS/$name"
    rm -f "$RUNS/$name"/samples-*.mp4
done
go() { t2v-rt train --resume "$RUNS/$1" --minutes 30 --steps 100000 --set minimal_pairs="$2" \
           --set minimal_pair_draws="$3" --set lr_d="$4"; }
go A 1 8 0.001 & go B 2 32 0.001 & wait
go C 1 8 0.0003 & go D 2 32 0.0003 & wait
cp -r "$RUNS/C" "$RUNS/E"
rm -f "$RUNS/E"/samples-*.mp4
cp -r "$XY" "$RUNS/F"
rm -f "$RUNS/F"/samples-*.mp4
t2v-rt train --resume "$RUNS/E" --minutes 30 --steps 100000 & go F 1 8 0.0001 & wait
for name in E F; do
    python docs/models/experiments/speed_shape_probe.py "$RUNS/$name/generator.safetensors"
    python docs/models/experiments/trained_discriminator_probe.py --pairs \
        "$(ls "$RUNS/$name"/checkpoint-*.safetensors | tail -1)"
done
for name in A B C D; do
    run=$RUNS/$name
    python docs/models/experiments/speed_shape_probe.py "$run/generator.safetensors"
    python docs/models/experiments/trained_discriminator_probe.py --pairs \
        "$(ls "$run"/checkpoint-*.safetensors | tail -1)"
    t2v-rt eval --model "$run/generator.safetensors" --samples 300 --long-run 0 \
        --backend torch --json "docs/models/experiments/eval-hard-pairs-$name.json"
done
for lr in 0.001 0.0003; do
    for seed in 0 1; do
        python docs/models/experiments/discriminator_capacity.py "$DATA" --lr "$lr" --seed "$seed"
    done
done
