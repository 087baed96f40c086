#!/usr/bin/env bash
# The files a device run returned (the run call's files_at) into bench/results/, the GPU's
# name in each file name: backends-gpu.json -> backends-h200.json, record.json ->
# gpu_kit-h200.json, tests.xml -> gpu_kit_tests-h200.xml, logs.txt -> gpu_kit-h200.log.
#
#     bash bench/gpu/collect.sh FILES_AT [--into DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 bench/gpu/kit.py collect "$@"
