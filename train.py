"""Entry point: ``python train.py model=gpt2-tiny optim=muon trainer.max_steps=200``.

Thin on purpose: compose the config, validate it, set up processes, and hand over to trainer.loop.
"""

from __future__ import annotations

import os

# Intel MKL (torch's CPU BLAS) may pick different code paths from run to run (memory alignment,
# threading), which changes fp32 results in the last bits and breaks exact resume. STRICT conditional
# numerical reproducibility removes that at no measured cost (BENCHMARKS.md); set before torch loads.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from trainer.config import resolved_yaml, validate_config  # noqa: E402
from trainer.distributed import init_distributed, launcher_world, shutdown  # noqa: E402
from trainer.run_dir import register_resolvers  # noqa: E402

register_resolvers()  # ${run_stamp:} and ${hydra_subdir:} in configs/train.yaml


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@hydra.main(version_base=None, config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    _, world_size, _ = launcher_world()
    validate_config(cfg, world_size)  # before any process group or data work
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    d = cfg.distributed
    ctx = init_distributed(cfg.device, d.backend, dp_replicate=d.dp_replicate, dp_shard=d.dp_shard)
    try:
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(resolved_yaml(cfg))
            (run_dir / "git_commit.txt").write_text(git_commit() + "\n")
        from trainer.loop import Trainer

        summary = Trainer(cfg, ctx, run_dir).fit()
        return summary["val_loss"]
    finally:
        shutdown(ctx)


if __name__ == "__main__":
    main()
