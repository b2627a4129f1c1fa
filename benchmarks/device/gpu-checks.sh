#!/usr/bin/env bash
# One prepared run of every check that needs a GPU, for a lent device machine.
#
#   here:   benchmarks/device/fetch-wheels.sh            (once; fills .whl/)
#   device: run(command="bash benchmarks/device/gpu-checks.sh", carry=[".whl"],
#               timeout_s=560)
#
# Each stage has its own time limit and the script goes on after a failure, so
# one broken stage still leaves the others' figures. Everything lands in $OUT
# (or out/gpu-checks when $OUT is unset): log.txt, env.json, gpu-tests.txt,
# engine-fp16.json, engine-bf16.json, train.json, engine-compiled.json.
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
fi
MODEL=/tmp/a2m-bench   # both benchmarks build (once) and share audioldm2-size/ here
TINY=${GPU_CHECKS_TINY:+--tiny}
HALF=float16 BF16=bfloat16
if [ -n "$TINY" ]; then HALF=auto BF16=auto; fi

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
stage engine-fp16 200 python3 benchmarks/engine_gpu.py $TINY --out "$MODEL" --steps 4 \
    --batch 1,4,16 --dtype $HALF > "$OUT/engine-fp16.json"
stage engine-bf16 90 python3 benchmarks/engine_gpu.py $TINY --out "$MODEL" --steps 4 \
    --batch 1,16 --dtype $BF16 > "$OUT/engine-bf16.json"
stage train 120 python3 benchmarks/train_gpu.py $TINY --out "$MODEL" > "$OUT/train.json"
# The UNet under torch.compile: each bucket compiles at first use (~2.5 min on an H200).
stage engine-compiled 200 python3 benchmarks/engine_gpu.py $TINY --out "$MODEL" --steps 4 \
    --batch 1 --dtype $HALF --compile default > "$OUT/engine-compiled.json"
cat "$OUT"/engine-*.json "$OUT/train.json"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv || true
