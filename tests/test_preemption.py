"""trainer.preemption.StopRequest: real signals, the stop file, and agreement of 2 gloo ranks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from trainer.distributed import DistContext
from trainer.preemption import STOP_FILE_NAME, StopRequest, stop_file_for

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ one process
@pytest.mark.parametrize("signame", ["SIGUSR1", "SIGUSR2", "SIGTERM"])
def test_real_signal_to_a_subprocess_is_reported_not_fatal(signame):
    """The handler only records: the process keeps running, and poll names the signal and the rank."""
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import time
            from trainer.distributed import DistContext
            from trainer.preemption import StopRequest
            stop = StopRequest(None).install()
            print("ready", flush=True)
            deadline = time.monotonic() + 30
            while (reason := stop.poll(DistContext())) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            print(reason, flush=True)
        """)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(getattr(signal, signame))
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 0  # the signal did not kill it: the loop gets to checkpoint
    assert out.strip() == f"signal {signame} on rank 0"


def test_install_and_uninstall_restore_previous_handlers():
    before = signal.getsignal(signal.SIGUSR1)
    stop = StopRequest(None, signals=("SIGUSR1",)).install()
    assert signal.getsignal(signal.SIGUSR1) == stop._handle
    assert signal.getsignal(signal.SIGTERM) != stop._handle  # only the signals asked for
    os.kill(os.getpid(), signal.SIGUSR1)
    assert stop.poll(DistContext()) == "signal SIGUSR1 on rank 0"
    stop.uninstall()
    assert signal.getsignal(signal.SIGUSR1) == before


def test_uninstall_hands_the_signal_to_a_python_handler_it_displaced():
    """E.g. submitit's pre-timeout handler (requeue + exit) runs after the stop checkpoint, not mid-step."""
    calls = []
    before = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        stop = StopRequest(None).install()
        os.kill(os.getpid(), signal.SIGUSR2)
        assert calls == [] and stop.poll(DistContext()) == "signal SIGUSR2 on rank 0"
        stop.uninstall()
        assert calls == [signal.SIGUSR2]
        stop.uninstall()  # idempotent: nothing installed, nothing handed over twice
        assert calls == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_default_action_is_not_replayed_after_the_stop():
    """SIGTERM's default action would kill the process after its checkpoint: it exits 0 instead."""
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import os, signal
            from trainer.distributed import DistContext
            from trainer.preemption import PREEMPTED_EXIT_CODE, StopRequest
            stop = StopRequest(None).install()
            os.kill(os.getpid(), signal.SIGTERM)
            print(stop.poll(DistContext()), flush=True)
            stop.uninstall()
            raise SystemExit(PREEMPTED_EXIT_CODE)
        """)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert (child.returncode, child.stdout.strip()) == (0, "signal SIGTERM on rank 0"), child.stderr


def test_no_request_polls_none(tmp_path):
    stop = StopRequest(tmp_path / STOP_FILE_NAME)
    assert [stop.poll(DistContext()) for _ in range(3)] == [None, None, None]


def test_stop_file_is_reported_once_and_consumed(tmp_path):
    stop_file = stop_file_for(tmp_path)
    assert stop_file == tmp_path / "STOP"  # the path slurm/train.sbatch touches
    stop = StopRequest(stop_file)
    assert stop.poll(DistContext()) is None
    stop_file.touch()
    assert stop.poll(DistContext()) == f"stop file {stop_file}"
    assert not stop_file.exists()  # a resumed run does not stop again at once
    assert stop.poll(DistContext()) is None


def test_unknown_signal_name_is_refused():
    with pytest.raises(ValueError, match="unknown signal name 'SIGNOPE'"):
        StopRequest(None, signals=("SIGUSR1", "SIGNOPE"))


# ------------------------------------------------------------------------------ 2 gloo ranks
def _rank_polls(rank: int, world: int, init_file: str, stop_file: str, plan: dict, results) -> None:
    """Poll every step; at its planned step a rank signals itself or touches the stop file."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ctx = DistContext(rank=rank, world_size=world)
        stop = StopRequest(Path(stop_file)).install()
        reasons = []
        for step in range(8):
            action = plan.get((rank, step))
            if action == "touch":
                Path(stop_file).touch()
            elif action is not None:
                os.kill(os.getpid(), getattr(signal, action))
            dist.barrier()  # this step's actions happen before any rank polls: a deterministic test
            reasons.append(stop.poll(ctx))
        stop.uninstall()
        results[rank] = reasons
    finally:
        dist.destroy_process_group()


def _run_two_ranks(tmp_path: Path, plan: dict) -> list[list[str | None]]:
    world = 2
    results = mp.Manager().dict()
    mp.spawn(_rank_polls, args=(world, str(tmp_path / "init"), str(tmp_path / "STOP"), plan, results),
             nprocs=world, join=True)
    return [results[r] for r in range(world)]


@pytest.mark.distributed
def test_two_ranks_agree_on_the_step_and_the_reason(tmp_path):
    # step 3: only rank 1 is signalled; step 5: the stop file appears (rank 1 creates it, rank 0 looks);
    # step 6: different signals on the two ranks -> both report the same one (highest number wins)
    plan = {(1, 3): "SIGUSR1", (1, 5): "touch", (0, 6): "SIGUSR1", (1, 6): "SIGTERM"}
    rank0, rank1 = _run_two_ranks(tmp_path, plan)
    assert rank0 == rank1
    stop_file = tmp_path / "STOP"
    assert rank0[:3] == [None, None, None]
    assert rank0[3] == "signal SIGUSR1 on rank 1"
    # the flag stays set once a signal arrived: a loop that ignored the first request is asked again
    assert rank0[4] == "signal SIGUSR1 on rank 1"
    assert rank0[6] == "signal SIGTERM on rank 1"  # SIGTERM (15) > SIGUSR1 (10)
    assert not stop_file.exists()  # seen at step 5 (reported under the signal) and consumed


@pytest.mark.distributed
def test_two_ranks_see_a_stop_file_at_the_same_step(tmp_path):
    rank0, rank1 = _run_two_ranks(tmp_path, {(1, 2): "touch"})
    expected = [None, None] + [f"stop file {tmp_path / 'STOP'}"] + [None] * 5
    assert rank0 == rank1 == expected
