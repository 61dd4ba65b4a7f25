#!/usr/bin/env bash
# Install this project and its dependencies into the current Python environment.
#
# torch: an unpinned `pip install torch` can pull a multi-GB CUDA build. On a machine without an
# NVIDIA GPU we install the CPU build first (torch==2.13.0, or $TORCH_SPEC; set $TORCH_INDEX_URL to
# use another index, e.g. PyTorch's CPU wheel index). With a GPU, pip resolves torch normally (CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found; pip will install a CUDA build of torch with the project"
  else
    echo "setup: no GPU; installing the CPU build of torch ($TORCH_SPEC)"
    "$PYTHON" -m pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC"
  fi
fi
"$PYTHON" -m pip install -q -e ".[dev]"
"$PYTHON" -c "import torch; print(f'setup: torch {torch.__version__}, cuda available: {torch.cuda.is_available()}')"
