#!/usr/bin/env bash
# The training step of the shipped recipe (docs/models/experiments/run-stem2.sh, learned
# vocabulary), one process alone on the GPU, at batches 8, 32, 64, 128: phase 1 and phase 2
# (minimal pairs). What bench/gpu/train_shapes.py's side-by-side runs cannot say (each there
# had a share of the GPU). On the lent GPU, with .whl carried (about 2 minutes):
#
#     bash bench/gpu/recipe_speed.sh          # -> $OUT/train_speed_recipe{,_pairs}-gpu.json
#
# Here (CPU): STEPS=1 REPEATS=1 BATCHES=16 OUT=/tmp/x bash bench/gpu/recipe_speed.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-python3}
if [ -d .whl ] && ! "$py" -c "import av" 2>/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} T2V_RT_RESULTS=${OUT:?set OUT} PYTHONUNBUFFERED=1
# The device's copy of the tree can carry a stale .git: the commit of .whl/COMMIT when the
# source digest matches it (refresh it with bash bench/gpu/fetch-wheels.sh before the call).
T2V_RT_COMMIT=${T2V_RT_COMMIT:-$("$py" bench/gpu/kit.py commit)}; export T2V_RT_COMMIT
RECIPE=(--set latent_dim=32 --set text_dim=32 --set w_dim=64 --set motion_dim=32
        --set lr_g=0.001 --set lr_d=0.001 --set frames=36 --set clip_frames=6 --set min_stride=3
        --set max_stride=3 --set contrastive=1 --set time_modulation=features
        --set speed_negatives=1 --set augment=false --set 'channels=[64,64,32,32,16]'
        --set coordinates=absolute --set d_stem=2)
B=${BATCHES:-8,32,64,128}
first=${B%%,*}; more=${B#"$first"}; more=${more#,}
args=(--arch stylegan-v --steps "${STEPS:-20}" --repeats "${REPEATS:-3}" --batch "$first" --more-batches "$more")
"$py" bench/train_speed.py "${args[@]}" "${RECIPE[@]}" --name train_speed_recipe
"$py" bench/train_speed.py "${args[@]}" "${RECIPE[@]}" --set minimal_pairs=1 \
    --set minimal_pair_draws=8 --set lr_d=0.0003 --name train_speed_recipe_pairs
