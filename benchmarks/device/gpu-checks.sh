#!/usr/bin/env bash
# One prepared run of the checks that need a GPU, for a lent device machine.
#
#   here:   benchmarks/device/fetch-wheels.sh            (once; fills .whl/)
#   device: run(command="bash benchmarks/device/gpu-checks.sh", carry=[".whl"],
#               timeout_s=560)
#
# Each stage has its own time limit and the script goes on after a failure, so
# one broken stage still leaves the others' figures. Everything lands in $OUT
# (or out/gpu-checks when $OUT is unset), at most 8 files (what a device run brings
# back): log.txt, env.json, gpu-tests.txt, engine-fp16.json, rooms.toml, rooms-N.json.
#
# Sized for a 15-minute device lease (the machine's start included), about 7 min on an
# H200: env 10 s, gpu-tests ~60 s, engine-fp16 ~150 s (the model build; ours at batch
# 1, 4 and 16, median and p95 of 20 windows after 3 warm-up windows; the honest stock
# baseline at batch 1 only: DDIM, 200 steps, CFG, eager fp16 UNet, ~0.1 s a step,
# 3 warm-up steps then all 200 timed, 3 repeats, median), then rooms per GPU
# (rooms-check.sh: 128 rooms, and 64 only where 128 fails, 40 s each after 10 s of
# warm-up; the simulated H200 has 256 collapse and 128 play without underflows, so the
# lease is spent where the card can tell the simulator right or wrong). GPU_CHECKS_FULL=1 adds the bf16, training and torch.compile stages
# (~5 min more) and writes engine-bf16.json, train.json, engine-compiled.json and
# summary.json instead of the rooms files. Stage limits guard against a hang.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-out/gpu-checks}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/log.txt") 2>&1

# GPU_CHECKS_TINY=1 runs the same stages on the tiny model with this machine's
# own packages: a dry run of the script on a CPU.
if [ -d .whl ] && [ -z "${GPU_CHECKS_TINY:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
    # A dry run here uses the project's own virtual environment where there is one.
    if [ -n "${GPU_CHECKS_TINY:-}" ] && [ -x .venv/bin/python3 ]; then
        export PATH="$PWD/.venv/bin:$PATH"
    fi
fi
MODEL=/tmp/a2m-bench   # both benchmarks build (once) and share audioldm2-size/ here
TINY=${GPU_CHECKS_TINY:+--tiny}
HALF=float16 BF16=bfloat16
# Ours: median and p95 of 20 windows after 3 warm-up windows. Stock: 3 warm-up steps, then
# all 200 steps timed, 3 repeats (median), at batch 1 only. On the tiny dry run: few of each.
COUNTS=(--windows 20 --warmup-windows 3 --repeats 3)
STOCK=(--stock-steps 200 --stock-batch 1)
FP16_BATCHES=1,4,16 BF16_BATCHES=1,16
if [ -n "$TINY" ]; then
    HALF=auto BF16=auto FP16_BATCHES=1,2 BF16_BATCHES=1
    COUNTS=(--windows 3 --warmup-windows 2 --repeats 2)
    STOCK=(--stock-steps 200 --stock-timed-steps 2 --stock-batch 1)
fi

stage() {  # stage NAME SECONDS COMMAND...: run with a limit, report how it ended
    local name=$1 limit=$2; shift 2
    local began=$SECONDS
    echo "=== $name (limit ${limit}s)" >&2
    timeout --kill-after=10 "$limit" "$@"
    echo "=== $name: exit $? after $((SECONDS - began)) s" >&2
}

stage env 60 python3 -c "
import json, torch, diffusers, transformers
print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda,
  'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None,
  'diffusers': diffusers.__version__, 'transformers': transformers.__version__}))" \
    | tee "$OUT/env.json"
# Other library versions there may warn where ours do not: warnings do not fail here.
stage gpu-tests 120 python3 -m pytest -q -p no:cacheprovider -m gpu -W ignore::DeprecationWarning \
    -W ignore::FutureWarning -W ignore::UserWarning tests/test_gpu.py \
    | tee "$OUT/gpu-tests.txt"
# The benchmarks print their JSON on stdout and everything else on stderr.
stage engine-fp16 300 python3 benchmarks/engine_gpu.py $TINY --out "$MODEL" --steps 4 \
    --batch $FP16_BATCHES --dtype $HALF "${COUNTS[@]}" "${STOCK[@]}" > "$OUT/engine-fp16.json"
if [ -z "${GPU_CHECKS_FULL:-}" ]; then
    # Rooms per GPU on the model folder built above; its files land in this $OUT.
    ROOMS_TRY=${GPU_ROOMS:-$([ -n "$TINY" ] && echo "2 1" || echo "128 64")}
    stage rooms 420 env OUT="$OUT" ROOMS_NESTED=1 GPU_ROOMS="$ROOMS_TRY" \
        bash benchmarks/device/rooms-check.sh
else
    stage engine-bf16 90 python3 benchmarks/engine_gpu.py $TINY --out "$MODEL" --steps 4 \
        --batch $BF16_BATCHES --dtype $BF16 "${COUNTS[@]}" --stock-steps 0 > "$OUT/engine-bf16.json"
    stage train 120 python3 benchmarks/train_gpu.py $TINY --out "$MODEL" > "$OUT/train.json"
    # The UNet under torch.compile: each bucket compiles at first use (~2.5 min on an H200).
    stage engine-compiled 200 python3 benchmarks/engine_gpu.py $TINY --out "$MODEL" --steps 4 \
        --batch 1 --dtype $HALF --compile default "${COUNTS[@]}" --stock-steps 0 \
        > "$OUT/engine-compiled.json"
    stage summary 30 python3 benchmarks/engine_gpu.py --summarize "$OUT/engine-fp16.json" \
        "$OUT/engine-compiled.json" "$OUT/engine-bf16.json" > "$OUT/summary.json"
fi
cat "$OUT"/engine-*.json "$OUT"/train.json "$OUT"/summary.json "$OUT"/rooms-*.json 2>/dev/null
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv || true
