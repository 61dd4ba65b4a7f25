"""``optim.orthogonalize`` as a typed, validated value, and the Newton-Schulz it configures.

    method, steps, schedule, coefficients, compute_dtype   the Newton-Schulz (newton_schulz_from_config)
    split                                                  row blocks of c_attn (optim.orthogonalize.split)
    distributed, comm_dtype, bucket_elements, overlap      the exchange under FSDP2 (from_mesh, exchange)

Every default lives in configs/optim/shared/orthogonalize.yaml; the class has none. The transforms
themselves never see this object: ``newton_schulz_from_config`` turns it into plain values once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from optim.dtypes import DtypeSetting, check_dtype_name, resolve_matmul_dtype
from optim.hparams import check_in, check_int_at_least
from optim.orthogonalize.coefficients import SCHEDULES, iteration_schedule
from optim.orthogonalize.newton_schulz import METHODS, NewtonSchulz
from optim.orthogonalize.split import SPLITS

DISTRIBUTED_MODES = ("sharded", "replicated", "row_shards", "auto")


@dataclass(frozen=True)
class OrthogonalizeConfig:
    """The whole-matrix transform and how it is distributed (optim.orthogonalize)."""

    method: str  # newton_schulz | gram_newton_schulz | svd
    steps: int
    schedule: str  # fixed (coefficients every step) | polar_express (optim/orthogonalize/coefficients.py)
    coefficients: tuple[float, float, float]
    split: str  # none | qkv | heads (optim/orthogonalize/split.py)
    compute_dtype: DtypeSetting  # auto | float32 | bfloat16 | float64; a torch.dtype after build_config
    distributed: str  # sharded (owners) | replicated | row_shards | auto (optim/orthogonalize/exchange.py)
    comm_dtype: DtypeSetting
    bucket_elements: int  # owner-mode exchange in buckets of about this many elements (0: one bucket)
    overlap: bool  # async all-to-alls: later buckets in flight during this bucket's transform

    def __post_init__(self) -> None:
        key = "optim.orthogonalize"
        check_in(f"{key}.method", self.method, METHODS)
        check_int_at_least(f"{key}.steps", self.steps, 1)
        check_in(f"{key}.schedule", self.schedule, SCHEDULES)
        iteration_schedule(self.schedule, self.steps, tuple(self.coefficients))  # [a, b, c] shape
        check_in(f"{key}.split", self.split, SPLITS)
        check_dtype_name(f"{key}.compute_dtype", self.compute_dtype)
        check_dtype_name(f"{key}.comm_dtype", self.comm_dtype)
        check_in(f"{key}.distributed", self.distributed, DISTRIBUTED_MODES)
        check_int_at_least(f"{key}.bucket_elements", self.bucket_elements, 0)
        if not isinstance(self.overlap, bool):
            raise ValueError(f"{key}.overlap must be true or false, got {self.overlap!r}")


def newton_schulz_from_config(config: OrthogonalizeConfig, device: torch.device) -> NewtonSchulz:
    """The Newton-Schulz of ``optim.orthogonalize`` on ``device`` (``auto`` dtypes resolved there)."""
    schedule = iteration_schedule(config.schedule, config.steps, tuple(config.coefficients))
    fixed = config.schedule == "fixed"
    return NewtonSchulz(
        steps=config.steps, coefficients=schedule.triplets[0] if fixed else schedule.triplets, method=config.method,
        compute_dtype=resolve_matmul_dtype(config.compute_dtype, device, "optim.orthogonalize.compute_dtype"),
        norm_scale=schedule.norm_scale,
    )
