#!/usr/bin/env bash
# Rooms per GPU (issue 18): the largest N of virtual rooms one engine serves with no
# underflow and transition p95 <= 500 ms, on the real-size model (random weights).
#
#   device: run(command="bash benchmarks/device/rooms-check.sh", carry=[".whl"], timeout_s=560)
#
# Separate from gpu-checks.sh (which fills its own 10 minutes). Writes $OUT/rooms-*.json
# and log.txt. GPU_CHECKS_TINY=1: the same on the tiny model and the CPU (a dry run).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-out/rooms-check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/log.txt") 2>&1
if [ -d .whl ] && [ -z "${GPU_CHECKS_TINY:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH="/tmp/site:$PWD"
    PY=python3
else
    export PYTHONPATH="$PWD"
    PY=$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )
fi
MODEL=/tmp/a2m-bench
if [ -n "${GPU_CHECKS_TINY:-}" ]; then
    KIND=tiny DEVICE=cpu DTYPE=float32 BUCKETS="[1, 2, 3, 4]" WINDOW=1.28 OVERLAP=0.32
    TINY=--tiny ROOMS=(2 4) SECONDS_EACH=15
else
    KIND=audioldm2-size DEVICE=cuda DTYPE=float16 BUCKETS="[1, 4, 16, 64, 128, 256]"
    WINDOW=10.24 OVERLAP=1.28 TINY="" ROOMS=(64 128 256) SECONDS_EACH=60
fi
stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    local began=$SECONDS
    echo "=== $name (limit ${limit}s)" >&2
    timeout --kill-after=10 "$limit" "$@"
    echo "=== $name: exit $? after $((SECONDS - began)) s" >&2
}
# Builds the model folder once (and times one small window as a sanity check).
stage model 150 $PY benchmarks/engine_gpu.py $TINY --out "$MODEL" --steps 4 --batch 1 \
    --windows 2 --warmup-windows 2 --repeats 1 --stock-steps 0 > "$OUT/model.json"
sed -e "s|^model = .*|model = \"$MODEL/$KIND\"|" -e "s|^device = .*|device = \"$DEVICE\"|" \
    -e "s|^dtype = .*|dtype = \"$DTYPE\"|" -e "s|^steps = .*|steps = 4|" \
    -e "s|^window_s = .*|window_s = $WINDOW|" -e "s|^overlap_s = .*|overlap_s = $OVERLAP|" \
    -e "s|^threads = .*|threads = 0|" -e "s|^batch_buckets = .*|batch_buckets = $BUCKETS|" \
    configs/diffusion-tiny.toml > "$OUT/rooms.toml"
for n in "${ROOMS[@]}"; do
    stage "rooms-$n" $((SECONDS_EACH + 120)) $PY -m installation bench rooms \
        --config "$OUT/rooms.toml" --rooms "$n" --seconds "$SECONDS_EACH" --warmup-s 10 \
        --json > "$OUT/rooms-$n.json"
done
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv || true
