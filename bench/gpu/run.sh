#!/usr/bin/env bash
# The GPU kit in one command (issue #13; bench/gpu/README.md). On a lent GPU machine, in the
# repository root of the working tree's copy, with .whl carried:
#
#     bash bench/gpu/run.sh                 # results into $OUT, summary table last, <= 8 min
#
# Here, on a CPU machine: bash bench/gpu/run.sh --dry-run [--out DIR] (the rehearsal: the same
# install and steps in their CPU forms), or --plan (the steps, time boxes, wheels, $OUT rules;
# runs nothing). Everything is done by bench/gpu/kit.py (standard library only).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
export PYTHONUNBUFFERED=1
py="${T2V_RT_KIT_PYTHON:-python3}"
# The rehearsal runs under this checkout's virtual environment where there is one (the
# device's plain python3 is the one that holds PyTorch there).
case " $* " in
  *" --dry-run "*|*" --plan "*) [ -z "${T2V_RT_KIT_PYTHON:-}" ] && [ -x .venv/bin/python ] && py=.venv/bin/python ;;
esac
exec "$py" bench/gpu/kit.py "$@"
