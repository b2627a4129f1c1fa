#!/usr/bin/env bash
# Download the wheels a lent GPU machine needs into .whl/ (git-ignored), for
# CPython 3.12 on x86-64 Linux, the device image's Python. Run here, where PyPI
# is reachable; then carry ".whl" with the device run (see gpu-checks.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl -r benchmarks/device/requirements.txt
du -sh .whl
