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

from trainer.checkpoint import CheckpointError  # noqa: E402
from trainer.config import build_config  # noqa: E402
from trainer.distributed import init_distributed, launcher_world, shutdown  # noqa: E402
from trainer.dry_run import DRY_RUN_OVERRIDE, print_plan, remove_empty_dirs, validate_flag  # noqa: E402
from trainer.init_from import plan_start  # noqa: E402
from trainer.resume import resolve_resume  # noqa: E402
from trainer.run_dir import register_resolvers  # noqa: E402

register_resolvers()  # ${run_stamp:} in configs/train.yaml

USER_ERROR_EXIT = 2  # like argparse: the command line or config is wrong, retrying cannot help


def debugging() -> bool:
    return os.environ.get("ORTHOGPT_DEBUG") == "1" or os.environ.get("HYDRA_FULL_ERROR") == "1"


def exit_on_user_error(err: BaseException, rank: int) -> None:
    """One message on rank 0, exit status 2; the traceback only when asked for."""
    if debugging():
        raise err
    if rank == 0:
        print(f"error: {err}", file=sys.stderr, flush=True)
    else:  # torchrun stops the other workers once one exits: let rank 0 say why first
        time.sleep(2.0)
    raise SystemExit(USER_ERROR_EXIT)


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


@hydra.main(version_base=None, config_path=str(Path(__file__).resolve().parent / "configs"), config_name="train")
def main(cfg: DictConfig) -> float | None:
    quiet.release()
    rank, world_size, _ = launcher_world()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    overrides = list(OmegaConf.to_container(HydraConfig.get().overrides.task))
    try:  # before any process group, data or model work, and before the run directory is touched
        config = build_config(cfg, world_size)
        decision = resolve_resume(config, run_dir, deep=False)  # every rank, silently; the Trainer asks again to load
        _, start = plan_start(config, decision)  # trainer.init_from / eval_only, checked the same way
    except (ValueError, CheckpointError) as err:
        exit_on_user_error(err, rank)
    if config.trainer.dry_run:  # --validate: the plan, no process group, data, model or run files
        if rank == 0:
            print_plan(config, run_dir, start)
            remove_empty_dirs(run_dir)  # Hydra made it for this job; nothing was written into it
        return None
    d = config.distributed
    ctx = init_distributed(config.device, d.backend, dp_replicate=d.dp_replicate, dp_shard=d.dp_shard)
    refused: CheckpointError | None = None
    try:
        from trainer.loop import Trainer

        summary = Trainer(config, ctx, run_dir, overrides).fit()
    except CheckpointError as err:  # e.g. no checkpoint of the run verifies: every rank raises alike
        refused = err
    finally:
        shutdown(ctx)
    if refused is not None:
        exit_on_user_error(refused, rank)
    if config.trainer.eval_only and rank == 0:  # it wrote nothing: leave no empty run directory behind
        remove_empty_dirs(run_dir)
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
