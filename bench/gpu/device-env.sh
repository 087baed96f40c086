# Sourced by bench/gpu/recipe_speed.sh and cuda_check.sh (bash): the environment of a short
# run on a lent GPU without the kit (bench/gpu/kit.py does the same for its steps). Sets `py`
# (PYTHON, default python3) and `work` (a temporary folder); installs the carried wheels when
# PyAV is missing; maps the package as the wheel lays it out (kernels/ inside t2v_rt/); exports
# PYTHONPATH, T2V_RT_RESULTS=$OUT, T2V_RT_CACHE and T2V_RT_COMMIT (the commit of .whl/COMMIT
# when the source digest matches it: the device's copy of the tree can carry a stale .git).
py=${PYTHON:-python3}
work=$(mktemp -d)
: "${OUT:?set OUT (the device tool sets it)}"
if [ -d .whl ] && ! "$py" -c "import av" 2>/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$work/site" .whl/*.whl || exit 1
fi
mkdir -p "$work/t2v" && cp -r t2v_rt "$work/t2v/" && cp -r kernels "$work/t2v/t2v_rt/kernels"
export PYTHONPATH="$work/t2v:$work/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 \
       T2V_RT_RESULTS="$OUT" T2V_RT_CACHE="$work/cache"
T2V_RT_COMMIT=${T2V_RT_COMMIT:-$("$py" bench/gpu/kit.py commit)}; export T2V_RT_COMMIT
