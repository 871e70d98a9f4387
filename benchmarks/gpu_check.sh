#!/usr/bin/env bash
# One prepared single-GPU run (H100/H200, under 10 minutes): tokens/s, MFU (paper App. A) and peak memory of
# HRM-Text L and XL, bf16, compiled, with every usable attention backend. Without a GPU it says so and dry-runs
# on the CPU. Usage: bash benchmarks/gpu_check.sh [--json runs/gpu_check.json] [other gpu_check.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/hrmkit-inductor}"
exec timeout 590 "$PY" benchmarks/gpu_check.py --budget-s 480 "$@"
