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

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from trainer.checkpoint import CheckpointError
from trainer.config import build_config
from trainer.distributed import init_distributed, launcher_world, shutdown
from trainer.resume_check import check_resume_before_start
from trainer.run_dir import register_resolvers

register_resolvers()  # ${run_stamp:} in configs/train.yaml

USER_ERROR_EXIT = 2  # like argparse: the command line or config is wrong, retrying cannot help


def exit_on_user_error(err: BaseException, rank: int) -> None:
    """One message on rank 0, exit status 2; the traceback only when asked for."""
    if os.environ.get("ORTHOGPT_DEBUG") == "1" or os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    if rank == 0:
        print(f"error: {err}", file=sys.stderr, flush=True)
    raise SystemExit(USER_ERROR_EXIT)


@hydra.main(version_base=None, config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    rank, world_size, _ = launcher_world()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    overrides = list(OmegaConf.to_container(HydraConfig.get().overrides.task))
    try:  # before any process group, data or model work, and before the run directory is touched
        config = build_config(cfg, world_size)
        check_resume_before_start(config, run_dir)
    except (ValueError, CheckpointError) as err:
        exit_on_user_error(err, rank)
    d = config.distributed
    ctx = init_distributed(config.device, d.backend, dp_replicate=d.dp_replicate, dp_shard=d.dp_shard)
    try:
        from trainer.loop import Trainer

        summary = Trainer(config, ctx, run_dir, overrides).fit()
        return summary["val_loss"]
    except CheckpointError as err:  # e.g. no checkpoint of the run verifies: every rank raises alike
        shutdown(ctx)
        exit_on_user_error(err, rank)
    finally:
        shutdown(ctx)


if __name__ == "__main__":
    main()
