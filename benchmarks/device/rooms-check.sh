#!/usr/bin/env bash
# Rooms per GPU (issue 18): N virtual rooms against one engine on the real-size model
# (random weights), the figure being the largest N with no underflow and transition
# p95 <= 500 ms.
#
#   device: run(command="bash benchmarks/device/rooms-check.sh", carry=[".whl"], timeout_s=560)
#
# GPU_ROOMS lists the N to try, largest first (default "256 128 64"); it stops at the first
# N that passes. gpu-checks.sh runs it after its engine stage (on the model folder that
# stage built). Writes $OUT/rooms.toml, $OUT/rooms-N.json and log.txt. GPU_CHECKS_TINY=1:
# the same on the tiny model and the CPU (a dry run).
#
# The config: the default batch buckets (1, 2, 4, 8, 16) and a 0.1 s transition margin, as
# benchmarks/rooms-simulated-h200.toml. A room that changes artwork waits for the batch in
# flight, so the largest bucket bounds a transition's wait (with the simulated H200, a
# bucket of 32 raised the 128-room transition p95 and gave no throughput that was needed);
# the margin only covers transport and jitter, as the engine adds the time its start calls
# take. The engine captures every bucket's CUDA graphs before it serves.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-out/rooms-check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
[ -n "${ROOMS_NESTED:-}" ] || exec > >(tee -a "$OUT/log.txt") 2>&1
if [ -d .whl ] && [ -z "${GPU_CHECKS_TINY:-}" ]; then
    if [ ! -d /tmp/site/diffusers ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 1; }
    fi
    export PYTHONPATH="/tmp/site:$PWD"
    PY=python3
else
    export PYTHONPATH="$PWD"
    PY=$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )
fi
MODEL=/tmp/a2m-bench
if [ -n "${GPU_CHECKS_TINY:-}" ]; then
    KIND=tiny DEVICE=cpu DTYPE=float32 BUCKETS="[1, 2, 3, 4]" WINDOW=1.28 OVERLAP=0.32
    TINY=--tiny ROOMS=(${GPU_ROOMS:-2 1}) SECONDS_EACH=15 WARMUP=5
else
    KIND=audioldm2-size DEVICE=cuda DTYPE=float16 BUCKETS="[1, 2, 4, 8, 16]"
    WINDOW=10.24 OVERLAP=1.28 TINY="" ROOMS=(${GPU_ROOMS:-256 128 64}) SECONDS_EACH=40
    WARMUP=10
fi
stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    local began=$SECONDS
    echo "=== $name (limit ${limit}s)" >&2
    timeout --kill-after=10 "$limit" "$@"
    local code=$?
    echo "=== $name: exit $code after $((SECONDS - began)) s" >&2
    return $code
}
if [ ! -f "$MODEL/$KIND/art2mus_model.json" ]; then  # build the model folder once
    stage model 150 $PY benchmarks/engine_gpu.py $TINY --out "$MODEL" --steps 4 --batch 1 \
        --windows 2 --warmup-windows 2 --repeats 1 --stock-steps 0 > /dev/null
fi
sed -e "s|^model = .*|model = \"$MODEL/$KIND\"|" -e "s|^device = .*|device = \"$DEVICE\"|" \
    -e "s|^dtype = .*|dtype = \"$DTYPE\"|" -e "s|^steps = .*|steps = 4|" \
    -e "s|^window_s = .*|window_s = $WINDOW|" -e "s|^overlap_s = .*|overlap_s = $OVERLAP|" \
    -e "s|^threads = .*|threads = 0|" -e "s|^batch_buckets = .*|batch_buckets = $BUCKETS|" \
    -e "s|^transition_margin_s = .*|transition_margin_s = 0.1|" \
    configs/diffusion-tiny.toml > "$OUT/rooms.toml"
for n in "${ROOMS[@]}"; do
    stage "rooms-$n" $((SECONDS_EACH + WARMUP + 150)) $PY -m installation bench rooms \
        --config "$OUT/rooms.toml" --rooms "$n" --seconds "$SECONDS_EACH" --warmup-s "$WARMUP" \
        --json > "$OUT/rooms-$n.json"
    if $PY -c "import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))['passed'] else 1)" \
            "$OUT/rooms-$n.json" 2>/dev/null; then
        echo "rooms: $n passed" >&2
        break
    fi
    echo "rooms: $n did not pass" >&2
done
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null || true
