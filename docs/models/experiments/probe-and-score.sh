# Sourced by run-pairs0.sh, run-pairs0-last25.sh, run-pairs0-dsteps.sh, run-pairs0-ic.sh,
# run-patch.sh, run-r1light.sh and run-stem2-more.sh.
# last RUN: the path of RUN's latest checkpoint.
last() { ls "$1"/checkpoint-*.safetensors | tail -1; }
# copy_run RUN DEST: a copy of run folder RUN (its sample videos left out) in DEST, to resume.
copy_run() {
    mkdir -p "$2"
    (cd "$1" && tar cf - --exclude='samples-*' .) | tar xf - -C "$2"
}
# probe_and_score RUN JSON: the generator probe, the frame discriminator's gradient probe on
# RUN's last checkpoint, and a 300-sample eval of RUN's generator into JSON.
probe_and_score() {
    python docs/models/experiments/speed_shape_probe.py "$1/generator.safetensors"
    python docs/models/experiments/corner_gradient_probe.py \
        "$(ls "$1"/checkpoint-*.safetensors | tail -1)"
    t2v-rt eval --model "$1/generator.safetensors" --samples 300 --long-run 0 \
        --backend torch --json "$2"
}
