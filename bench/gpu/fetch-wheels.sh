#!/usr/bin/env bash
# The carried folder of the GPU kit: the wheels of bench/gpu/wheels.txt (cp312, manylinux,
# x86_64, no dependencies) into .whl/ (git-ignored), each checked against its size and sha256,
# unlisted wheels removed, the NVENC headers (Debian: libffmpeg-nvenc-dev) copied to
# .whl/include/ffnvcodec/, the commit written to .whl/COMMIT, the total checked (<= 60 MiB).
# Quick when the wheels are there: run it right before the device call (it refreshes COMMIT).
#
#     bash bench/gpu/fetch-wheels.sh [--headers DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
exec "$py" bench/gpu/kit.py fetch "$@"
