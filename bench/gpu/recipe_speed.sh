#!/usr/bin/env bash
# The training step of the shipped recipe (docs/models/experiments/run-r1light.sh as r1mid,
# learned vocabulary: train_shapes.py --print-recipe; its phase 2 only lowers lr_d, the same
# step), one process alone on the GPU, at batches 8, 32, 64, 128. What
# bench/gpu/train_shapes.py's side-by-side runs cannot say (each there had a share of the GPU).
# On the lent GPU, with .whl carried (about 1 minute):
#
#     bash bench/gpu/recipe_speed.sh          # -> $OUT/train_speed_recipe-gpu.json
#
# Here (CPU): STEPS=1 REPEATS=1 BATCHES=16 OUT=/tmp/x bash bench/gpu/recipe_speed.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/gpu/device-env.sh
trap 'rm -rf "$work"' EXIT
# the recipe, as bench/gpu/train_shapes.py trains it
mapfile -t RECIPE < <("$py" bench/gpu/train_shapes.py --print-recipe)
[ ${#RECIPE[@]} -gt 0 ] || { echo "recipe_speed: no recipe from train_shapes.py --print-recipe" >&2; exit 1; }
B=${BATCHES:-8,32,64,128}
first=${B%%,*}; more=${B#"$first"}; more=${more#,}
args=(--arch stylegan-v --steps "${STEPS:-20}" --repeats "${REPEATS:-3}" --batch "$first" --more-batches "$more")
"$py" bench/train_speed.py "${args[@]}" "${RECIPE[@]}" --name train_speed_recipe
