#!/bin/bash
# Submit a sweep file as a Slurm job array, one array task per line, after checking every line.
#
#   [VARIABLES] slurm/submit_sweep.sh [sbatch options] SWEEP_FILE [train.py overrides for every task]
#   DEVICE=cpu NPROC_PER_NODE=1 slurm/submit_sweep.sh --cpus-per-task=1 slurm/examples/lr_sweep.txt model=gpt2-test
#   DEVICE=cuda slurm/submit_sweep.sh --gpus-per-node=8 --time=12:00:00 my_sweep.txt model=gpt2
#
# sbatch options come first and must be written --option=value. Variables: as slurm/sweep_array.sbatch
# (DEVICE, NPROC_PER_NODE, RUNS_DIR, SWEEP_NAME, PYTHON, ...). Prints the array job id.

set -euo pipefail
ORTHOGPT_SCRIPT=slurm/submit_sweep.sh
ORTHOGPT_DIR=${ORTHOGPT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
source "$ORTHOGPT_DIR/slurm/common.sh"

sbatch_opts=()
while [ $# -gt 0 ] && [[ $1 == -* ]]; do
    sbatch_opts+=("$1")
    shift
done
[ $# -ge 1 ] || orthogpt_fail "usage: $ORTHOGPT_SCRIPT [sbatch --options=...] SWEEP_FILE [overrides...]"
SWEEP_FILE=$(realpath "$1")
shift
[ -f "$SWEEP_FILE" ] || orthogpt_fail "sweep file $SWEEP_FILE not found"

# The variables the array tasks need, checked here so a mistake costs no queue time
require_var DEVICE "cpu or cuda (e.g. DEVICE=cuda $ORTHOGPT_SCRIPT ...)"
nodes=1
for opt in "${sbatch_opts[@]}"; do
    case "$opt" in
        --nodes=*) nodes=${opt#--nodes=} ;;
        --gpus-per-node=*) [ "$DEVICE" = cuda ] && NPROC_PER_NODE=${NPROC_PER_NODE:-${opt#--gpus-per-node=}} ;;
    esac
done
require_var NPROC_PER_NODE "training processes per node (with DEVICE=cuda, --gpus-per-node=N sets it)"
PYTHON=${PYTHON:-python3}

"$PYTHON" "$ORTHOGPT_DIR/slurm/check_sweep.py" --world-size "$((nodes * NPROC_PER_NODE))" "$SWEEP_FILE" "$@" >&2 ||
    exit 1
count=$(orthogpt_sweep_lines "$SWEEP_FILE" | wc -l)
export SWEEP_FILE NPROC_PER_NODE ORTHOGPT_DIR
cd "$ORTHOGPT_DIR"
sbatch --parsable --array="0-$((count - 1))" "${sbatch_opts[@]}" "$ORTHOGPT_DIR/slurm/sweep_array.sbatch" "$@"
