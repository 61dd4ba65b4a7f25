#!/usr/bin/env bash
# GPU acceptance run (scripts/gpu_check.py): setup, CUDA tests, benchmarks; <= 8 minutes on one
# H100/H200. `--cpu-dry-run` runs the same sequence at tiny size on CPU. Only the standard library is
# needed to start: the script's first phase is scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m scripts.gpu_check "$@"
