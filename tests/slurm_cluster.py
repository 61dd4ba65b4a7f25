"""A throw-away single-node Slurm cluster for tests: munged + slurmctld + slurmd on this host.

Everything lives in one scratch directory (config, state, spool, logs, munge key and socket), so the
cluster neither reads nor touches /etc/slurm or a system munged. Clients find it through $SLURM_CONF,
which `LocalSlurm.env()` sets. Needs root (slurmd launches jobs as the submitting user) and the Debian
packages slurm-wlm and munge; `ensure_slurm_installed()` installs them with apt-get when missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")


def missing_binaries() -> list[str]:
    return [b for b in SLURM_BINARIES if shutil.which(b) is None]


def ensure_slurm_installed() -> str | None:
    """None when Slurm is usable here, else the reason it is not (for pytest.skip)."""
    if sys.platform != "linux":
        return "a local Slurm cluster needs Linux"
    if os.geteuid() != 0:
        return "a local Slurm cluster needs root (slurmd starts jobs as the submitting user)"
    if not missing_binaries():
        return None
    if shutil.which("apt-get") is None:
        return f"Slurm is not installed ({', '.join(missing_binaries())} missing) and apt-get is unavailable"
    print("[slurm] installing slurm-wlm and munge with apt-get (first run only)...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
        print(f"[slurm] $ {' '.join(cmd)}", flush=True)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            return f"`{' '.join(cmd)}` failed (exit {done.returncode}): {done.stderr.strip()[-500:]}"
    if missing_binaries():
        return f"after apt-get install, still missing: {', '.join(missing_binaries())}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_memory_mb() -> int:
    with open("/proc/meminfo") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    return max(kb // 1024 - 512, 512)  # leave slurmd a margin, or it marks the node invalid


class LocalSlurm:
    """Start with `start()`, stop with `stop()`; `run(cmd)` runs a client command against it."""

    def __init__(self, root: Path, cpus: int | None = None) -> None:
        self.root = Path(root)
        self.node = socket.gethostname()
        self.cpus = cpus or os.cpu_count() or 1
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen] = {}

    # ------------------------------------------------------------------------------ config
    def write_config(self) -> None:
        r = self.root
        for sub in ("munge", "state", "spool", "log"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)  # munged refuses a key or socket directory others can write
        key = r / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            os.chmod(key, 0o400)
        self.conf.write_text(f"""\
# Written by tests/slurm_cluster.py: one node, no cgroups, no accounting.
ClusterName=orthogpt-test
SlurmctldHost={self.node}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job may start again cred_expire + 1 s after the requeue (default 120 s)
AuthInfo=socket={self.munge_socket},cred_expire=5
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
# sched_interval: how often pending jobs (e.g. a requeued one whose wait is over) are looked at (default 60 s)
SchedulerParameters=sched_interval=2
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
KillWait=10
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=60
SlurmdTimeout=60
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={_node_memory_mb()} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
""")

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # ------------------------------------------------------------------------------ daemons
    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "ab")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                            start_new_session=True)

    def start(self, timeout: float = 60) -> None:
        self.write_config()
        r = self.root
        self._spawn("munged", [
            "munged", "--foreground", "--force", f"--socket={self.munge_socket}",
            f"--key-file={r}/munge/munge.key", f"--pid-file={r}/munge/munged.pid",
            f"--log-file={r}/log/munged.log", f"--seed-file={r}/munge/munged.seed",
        ])
        self._wait(lambda: self.munge_socket.exists(), timeout, "munged did not create its socket")
        # -i: ignore state from an earlier cluster in this directory; -D: stay in the foreground
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self.run(["scontrol", "ping"], check=False).stdout.count("UP") > 0,
                   timeout, "slurmctld did not answer scontrol ping")
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node])
        self._wait(self.node_idle, timeout, "the node did not become idle")

    def node_state(self) -> str:
        out = self.run(["sinfo", "-h", "-n", self.node, "-o", "%T"], check=False).stdout
        return out.strip().lower()

    def node_idle(self) -> bool:
        return self.node_state() == "idle"

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while starting\n{self.logs()}")
            if ready():
                return
            time.sleep(0.3)
        raise RuntimeError(f"{what} within {timeout:.0f} s\n{self.logs()}")

    def logs(self, tail: int = 30) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        if self.procs:
            self.run(["scancel", "--full", "--state=RUNNING"], check=False, timeout=10)
            self.run(["scancel", "--state=PENDING"], check=False, timeout=10)
        for name in ("slurmd", "slurmctld", "munged"):  # reverse start order
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ------------------------------------------------------------------------------ clients
    def run(self, cmd: list[str], check: bool = True, timeout: float = 30,
            env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**self.env(), **(env or {})}, cwd=cwd)
        if check and done.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done

    def sbatch(self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
        out = self.run(["sbatch", "--parsable", *args], env=env, cwd=cwd).stdout.strip()
        return int(out.split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...); {} once the job is purged."""
        out = self.run(["scontrol", "-o", "show", "job", str(job_id)], check=False).stdout
        fields = {}
        for token in out.split():
            key, sep, value = token.partition("=")
            if sep:
                fields[key] = value
        return fields

    def wait_state(self, job_id: int, states: set[str], timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} not in {sorted(states)} after {timeout:.0f} s: {info}\n{self.logs()}")
