# Shared by slurm/*.sbatch (sourced, not run). One job = one run directory, stable across requeues:
# srun starts one torchrun agent per node, torchrun starts NPROC_PER_NODE training processes, and a
# pre-timeout signal to the batch shell becomes "checkpoint, stop, requeue, resume".
#
# Why a stop file and not signals to the workers: torchrun's agent dies on SIGUSR1 (no handler) and
# answers SIGTERM by killing its workers, so a signal sent down srun -> torchrun never gives the
# workers time to checkpoint. Instead sbatch sends the signal to this shell only (--signal=B:USR1@N),
# the trap below touches <run_dir>/STOP, and every rank sees it at its next step
# (trainer/preemption.py: StopRequest.poll), saves a checkpoint and exits 0. Then this shell requeues
# the job; the requeued job has the same $SLURM_JOB_ID, hence the same run directory, and resumes
# from the newest complete checkpoint (trainer.resume=auto).

orthogpt_fail() {
    echo "$ORTHOGPT_SCRIPT: $*" >&2
    exit 2
}

# require_var NAME "what it is / how to set it": stop with a message naming NAME when it is unset or empty
require_var() {
    [ -n "${!1:-}" ] || orthogpt_fail "required variable $1 is not set: $2"
}

orthogpt_check_common() {
    [ -n "${SLURM_JOB_ID:-}" ] || orthogpt_fail "not inside a Slurm job; submit it with sbatch"
    require_var DEVICE "cpu or cuda (e.g. DEVICE=cuda sbatch ...)"
    case "$DEVICE" in
        cpu|cuda) ;;
        *) orthogpt_fail "DEVICE must be cpu or cuda, got '$DEVICE'" ;;
    esac
    if [ "$DEVICE" = cuda ] && [ -z "${NPROC_PER_NODE:-}" ] && [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then
        NPROC_PER_NODE=$SLURM_GPUS_ON_NODE  # one process per GPU that sbatch --gpus-per-node gave us
    fi
    require_var NPROC_PER_NODE "training processes per node (GPUs per node on GPU nodes, e.g. NPROC_PER_NODE=8)"
    [[ "$NPROC_PER_NODE" =~ ^[1-9][0-9]*$ ]] || orthogpt_fail "NPROC_PER_NODE must be a positive integer, got '$NPROC_PER_NODE'"
    PYTHON=${PYTHON:-python3}
    command -v "$PYTHON" >/dev/null || orthogpt_fail "PYTHON=$PYTHON is not an executable on this node"
    local arg
    for arg in "$@"; do
        case "$arg" in
            hydra.run.dir=*|trainer.resume=*|device=*)
                orthogpt_fail "'$arg': this script sets ${arg%%=*} itself (run dir from RUNS_DIR, resume=auto, device from DEVICE)" ;;
        esac
    done
}

# The override sets of a sweep file, one per output line: blank lines and '#' comment lines skipped.
# Overrides on a line are separated by whitespace (no quoting); slurm/check_sweep.py reads it alike.
orthogpt_sweep_lines() {
    grep -v -E '^[[:space:]]*(#|$)' "$1" || true
}

# Called by bash when the batch shell gets the pre-timeout signal (--signal=B:USR1@N), or by hand:
# scancel --signal=USR1 --batch <jobid>
orthogpt_on_preempt() {
    ORTHOGPT_PREEMPTED=1
    echo "[slurm] $(date '+%F %T') got SIGUSR1: asking training to checkpoint and stop ($RUN_DIR/STOP)"
    touch "$RUN_DIR/STOP"
}

# orthogpt_train RUN_DIR [train.py overrides...]: srun + torchrun on every node of the allocation,
# with preemption handling. Returns the exit code of srun; does not return when it requeues the job.
orthogpt_train() {
    RUN_DIR=$1
    shift
    local nodes=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
    local head_node
    head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    # Same port for every node of the job, different for jobs sharing a node
    local port=${RDZV_PORT:-$((29500 + SLURM_JOB_ID % 10000))}
    mkdir -p "$RUN_DIR"
    rm -f "$RUN_DIR/STOP"  # a stop request belongs to the attempt that received it, not this one
    export ORTHOGPT_RUN_STAMP=$SLURM_JOB_ID PYTHONUNBUFFERED=1
    ORTHOGPT_PREEMPTED=0
    trap orthogpt_on_preempt USR1

    echo "[slurm] $(date '+%F %T') job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}): $nodes node(s) x" \
         "$NPROC_PER_NODE process(es) on $DEVICE, rendezvous $head_node:$port, run dir $RUN_DIR"
    # One torchrun per node (--ntasks-per-node=1); every agent meets the others at the head node.
    # --kill-on-bad-exit: a node whose torchrun fails takes the step down instead of leaving the
    # other nodes waiting in a collective until the timeout.
    srun --ntasks="$nodes" --ntasks-per-node=1 --kill-on-bad-exit=1 \
        "$PYTHON" -m torch.distributed.run \
            --nnodes="$nodes" --nproc-per-node="$NPROC_PER_NODE" \
            --rdzv-backend=c10d --rdzv-endpoint="$head_node:$port" --rdzv-id="$SLURM_JOB_ID" \
            --max-restarts="${MAX_RESTARTS:-0}" \
            "$ORTHOGPT_DIR/train.py" \
            device="$DEVICE" hydra.run.dir="$RUN_DIR" trainer.resume=auto "$@" &
    local pid=$!
    # bash runs a trap only between commands: wait in the background so the trap runs at once
    # (wait returns early, >128), then wait again until srun really ends.
    while kill -0 "$pid" 2>/dev/null; do
        wait "$pid"
    done
    wait "$pid"
    local rc=$?
    trap - USR1

    if [ "$ORTHOGPT_PREEMPTED" = 1 ] && [ -f "$RUN_DIR/summary.json" ]; then
        # The signal came as the last step ran: the run is complete (only a finished run writes a summary)
        echo "[slurm] $(date '+%F %T') training finished (exit $rc) before the stop request; not requeueing"
    elif [ "$ORTHOGPT_PREEMPTED" = 1 ]; then
        # Requeue whatever srun returned: a failed stop still resumes from the last good checkpoint.
        echo "[slurm] $(date '+%F %T') training stopped (exit $rc); requeueing job $SLURM_JOB_ID"
        scontrol requeue "$SLURM_JOB_ID" || orthogpt_fail "scontrol requeue $SLURM_JOB_ID failed (submitted with --no-requeue?)"
        sleep 60  # slurmctld ends this shell as part of the requeue
        exit 0
    fi
    echo "[slurm] $(date '+%F %T') training exited with $rc"
    return "$rc"
}
