#!/usr/bin/env bash
# PyTorch inference on CUDA, in about a minute on a lent GPU (after bench/gpu/fetch-wheels.sh
# here; the device tool's run with carry [".whl"]):
#
#     bash bench/gpu/cuda_check.sh         # -> $OUT: cuda_parity-gpu.json, stream-cuda.mkv,
#                                          #    eval-cuda-stylegan-v-shapes.json, cuda_check.log
#
# 1. bench/gpu/cuda_parity.py: the torch backend on CUDA (fp32, fp16, bf16) against the CPU;
# 2. `t2v-rt stream --model stylegan-v-shapes --backend torch` (the backend on CUDA, x264),
#    60 frames to a file, decoded back with PyAV and counted;
# 3. `t2v-rt eval --model stylegan-v-shapes --backend torch --samples 100 --long-run 0` on
#    CUDA: the same seeded samples as that command on the CPU, to be compared back here.
# Here (CPU): OUT=/tmp/x bash bench/gpu/cuda_check.sh --cpu (the same steps on the CPU).
set -uo pipefail
cd "$(dirname "$0")/../.."
dev=cuda; [ "${1:-}" = --cpu ] && dev=cpu
out=$OUT
. bench/gpu/device-env.sh
rc=0
{
    echo "== cuda_parity ($dev)"
    "$py" bench/gpu/cuda_parity.py --device "$dev" || rc=1
    echo "== stream"
    "$py" -m t2v_rt stream "a large red circle moving left and right slowly" \
        --model stylegan-v-shapes --backend torch --frames 60 --no-realtime \
        > "$out/stream-$dev.mkv" || rc=1
    "$py" -c "import av, sys; c = av.open(sys.argv[1]); n = sum(1 for _ in c.decode(video=0)); \
print(f'decoded {n} frames'); sys.exit(0 if n == 60 else 1)" "$out/stream-$dev.mkv" || rc=1
    echo "== eval"
    "$py" -m t2v_rt eval --model stylegan-v-shapes --backend torch --samples 100 --long-run 0 \
        --json "$out/eval-$dev-stylegan-v-shapes.json" || rc=1
} > "$out/cuda_check.log" 2>&1
cat "$out/cuda_check.log"
rm -rf "$work"
echo "cuda_check: exit $rc"
exit $rc
