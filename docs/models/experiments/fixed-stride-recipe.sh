# Sourced by run-bank-coordinates.sh, run-minimal-pairs.sh and run-stem*.sh (set DATA and RUNS first):
# refuses an existing $RUNS, renders $DATA if missing, and sets COMMON, the `t2v-rt train`
# arguments of the fixed-stride recipe (stride 3 from the first step, MiniLM, contrastive=1,
# time_modulation=features, speed_negatives=1, no augmentation, channels [64,64,32,32,16]).
test ! -e "$RUNS" || { echo "$RUNS exists; move it away first" >&2; exit 2; }
test -e "$DATA" || t2v-rt dataset render-shapes "$DATA" --clips 5000 --seconds 2.4

COMMON=(--data "$DATA" --arch stylegan-v --run-dir "$RUNS" --steps 100000
        --set threads=1 --set latent_dim=32 --set text_dim=32
        --set w_dim=64 --set motion_dim=32 --set lr_g=0.001 --set lr_d=0.001
        --set frames=36 --set clip_frames=6 --set min_stride=3 --set max_stride=3
        --set contrastive=1 --set time_modulation=features --set speed_negatives=1
        --set augment=false --set text_encoder=all-MiniLM-L6-v2
        --set 'channels=[64,64,32,32,16]')

# pairs0's additions to COMMON (run-pairs0.sh; also the base of run-patch.sh and
# run-r1light.sh): coordinate inputs, a two-conv full-resolution stem in the frame
# discriminator, both cores, hard minimal pairs from the first step.
PAIRS0=(--set coordinates=absolute --set d_stem=2 --set threads=2
        --set minimal_pairs=1 --set minimal_pair_draws=8)

# hard_pairs_and_score RUN MINUTES JSON: the second phase of run-stem*.sh (RUN resumed for
# MINUTES with minimal_pairs=1, minimal_pair_draws=8, lr_d=0.0003), then the generator probe,
# the discriminators' shape score per pair of shape words and a 300-sample eval into JSON.
hard_pairs_and_score() {
    t2v-rt train --resume "$1" --minutes "$2" --steps 100000 \
        --set minimal_pairs=1 --set minimal_pair_draws=8 --set lr_d=0.0003
    python docs/models/experiments/speed_shape_probe.py "$1/generator.safetensors"
    python docs/models/experiments/trained_discriminator_probe.py --pairs \
        "$(ls "$1"/checkpoint-*.safetensors | tail -1)"
    t2v-rt eval --model "$1/generator.safetensors" --samples 300 --long-run 0 \
        --backend torch --json "$3"
}
