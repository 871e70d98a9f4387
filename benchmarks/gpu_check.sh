#!/usr/bin/env bash
# The GPU acceptance command (one H100/H200, at most 8 minutes): attention backends vs sdpa in bf16, the compiled
# core's graph breaks, text-hrm-B / sudoku-extreme-hrm / text-hrm-XL derived to 1 GPU with save and resume, and
# tokens/s, MFU (paper App. A) and peak memory of the XL stack; a PASS/FAIL table and JSON (runs/gpu_check.json).
# Without a GPU it says so and dry-runs the same checks on the CPU at tiny sizes. Exit code 1 if a check FAILs.
# Usage: bash benchmarks/gpu_check.sh [--json runs/gpu_check.json] [other gpu_check.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/hrmkit-inductor}"
exec timeout 480 "$PY" benchmarks/gpu_check.py --budget-s 420 "$@"
