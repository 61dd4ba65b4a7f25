"""Entry point: ``python train.py model=gpt2-tiny optim=muon trainer.max_steps=200`` (or ``orthogpt-train``).

Thin on purpose: compose the config (Hydra), build and validate the typed tree once, check the
checkpoint to resume, start the processes, and hand over to trainer.loop. A mistake in the config
prints one message naming the key and the fix and exits with status 2, once per launch (rank 0), with
no traceback; set ORTHOGPT_DEBUG=1 (or HYDRA_FULL_ERROR=1) to see one.
"""

from __future__ import annotations

import os

# Intel MKL (torch's CPU BLAS) may pick different code paths from run to run (memory alignment,
# threading), which changes fp32 results in the last bits and breaks exact resume. STRICT conditional
# numerical reproducibility removes that at no measured cost (BENCHMARKS.md); set before torch loads.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

import io  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from data.user_errors import USER_ERROR_EXIT, DataError, debugging, exit_on_user_error  # noqa: E402,F401
from trainer.checkpoint import CheckpointError  # noqa: E402
from trainer.config import build_config, check_launch_environment  # noqa: E402
from trainer.distributed import init_distributed, launcher_world, shutdown  # noqa: E402
from trainer.dry_run import DRY_RUN_OVERRIDE, print_plan, validate_flag  # noqa: E402
from trainer.init_from import plan_start  # noqa: E402
from trainer.resume import finished_message, remaining_steps, resolve_resume, summary_written  # noqa: E402
from trainer.run_dir import (  # noqa: E402
    agree_on_run_dir,
    drop_empty_launch_dir,
    earlier_runs,
    hold_run,
    register_resolvers,
    remove_empty_dirs,
)

register_resolvers()  # ${run_stamp:} in configs/train.yaml

class QuietComposition:
    """On ranks > 0, hold back stderr while Hydra composes the config: every rank composes the same
    config, so a composition error (an unknown option, say) is printed once, by rank 0. Released (and
    whatever was held written out) as soon as the task function runs."""

    def __init__(self, rank: int) -> None:
        self.held = io.StringIO() if rank > 0 and not debugging() else None
        self.stderr = sys.stderr
        if self.held is not None:
            sys.stderr = self.held

    @property
    def holding(self) -> bool:
        return self.held is not None and sys.stderr is self.held

    def release(self) -> None:
        if self.holding:
            sys.stderr = self.stderr
            sys.stderr.write(self.held.getvalue())


quiet = QuietComposition(launcher_world()[0])


def refuse(err: BaseException, rank: int, launch_dir: Path) -> None:
    """A start refused before any work: the launch's own empty directory goes too (default layout)."""
    if rank == 0 and not debugging():
        drop_empty_launch_dir(launch_dir)
    exit_on_user_error(err, rank)


@hydra.main(version_base=None, config_path=str(Path(__file__).resolve().parent / "configs"), config_name="train")
def main(cfg: DictConfig) -> float | None:
    quiet.release()
    rank, world_size, _ = launcher_world()
    launch_dir = Path(HydraConfig.get().runtime.output_dir)
    overrides = list(OmegaConf.to_container(HydraConfig.get().overrides.task))
    try:  # before any process group, data or model work, and before the run directory is touched
        config = build_config(cfg, world_size)
        # every rank, silently; the Trainer asks again to load. In the default layout (a new runs/<name>/<stamp>
        # per launch) true / auto find the newest earlier run of the name, and this launch continues it.
        decision = resolve_resume(config, launch_dir, deep=False, earlier_runs=earlier_runs(launch_dir))
        run_dir = decision.run_dir or launch_dir
        _, start = plan_start(config, decision)  # trainer.init_from / eval_only, checked the same way
    except (ValueError, CheckpointError) as err:
        refuse(err, rank, launch_dir)
    notes = [f"note: {notice}" for notice in config.notices]  # e.g. a warmup clipped to a short run
    if config.trainer.dry_run:  # --validate: the plan, no process group, data, model or run files
        if rank == 0:
            for line in notes:
                print(line)
            print_plan(config, run_dir, start)
            remove_empty_dirs(launch_dir)  # Hydra made it for this job; nothing was written into it
        return None
    try:  # this machine (CUDA, a W&B key), and what training from the checkpoint needs
        check_launch_environment(config)
        left = None if config.trainer.eval_only else remaining_steps(decision, config)
    except (ValueError, CheckpointError) as err:
        refuse(err, rank, launch_dir)
    if left == 0 and summary_written(decision):  # a requeue or rerun after the end: nothing to do
        if rank == 0:
            print(finished_message(decision), flush=True)
            drop_empty_launch_dir(launch_dir)
        return None
    if rank == 0:  # the start is good: what build_config adjusted, and which earlier run this launch continues
        for line in notes + ([decision.reason] if run_dir != launch_dir else []):
            print(line, flush=True)
    d = config.distributed
    ctx = init_distributed(config.device, d.backend, dp_replicate=d.dp_replicate, dp_shard=d.dp_shard)
    run_dir = agree_on_run_dir(run_dir, launch_dir, ctx)
    lock = hold_run(run_dir) if ctx.is_main else None  # noqa: F841  (held while this process trains)
    refused: CheckpointError | DataError | None = None
    try:
        from trainer.loop import Trainer

        summary = Trainer(config, ctx, run_dir, overrides).fit()
    except (CheckpointError, DataError) as err:  # e.g. no checkpoint verifies, a corrupted shard: every rank alike
        refused = err
    finally:
        shutdown(ctx)
    if refused is not None:
        exit_on_user_error(refused, rank)
    if config.trainer.eval_only and rank == 0:  # it wrote nothing: leave no empty run directory behind
        remove_empty_dirs(launch_dir)
    return summary["val_loss"]


def run() -> None:
    """The console command ``orthogpt-train`` and ``python train.py``."""
    try:
        flag = validate_flag(sys.argv[1:])  # --validate: trainer.dry_run=true (refuses --cfg with -m)
    except ValueError as err:
        exit_on_user_error(err, launcher_world()[0])
    if flag:
        sys.argv = [a for a in sys.argv if a != "--validate"] + [DRY_RUN_OVERRIDE]
    try:
        main()
    except SystemExit:
        if quiet.holding:  # Hydra refused the config on a rank > 0: rank 0 prints why, let it
            time.sleep(2.0)
        raise


if __name__ == "__main__":
    run()
