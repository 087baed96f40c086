# Sourced by run-bank-coordinates.sh and run-minimal-pairs.sh (set DATA and RUNS first):
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
