"""The training config as one typed tree, built and validated once, before anything else happens.

    composed DictConfig (Hydra: configs/train.yaml + groups + overrides)
        -> build_config(cfg, world_size)        every key, type and range checked here
        -> TrainConfig                           what every constructor takes a piece of

Where each part is validated: ``model`` by models.gpt2.GPTConfig, ``optim`` by optim.config,
``data`` by data.config (one class per source), ``schedule`` by trainer.schedule.Schedule,
``distributed`` by trainer.distributed.DistributedConfig, ``logging`` by trainer.metrics.LoggingConfig,
and ``trainer`` and the batch split by the classes below. Every default lives in YAML
(configs/): the dataclasses declare keys and types only, so an unknown or missing key is an error
that names it. Nothing here builds a model, opens data or starts a process group.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from data.config import DataConfig, data_config
from models.gpt2 import GPTConfig
from optim.config import OptimConfig, optim_config
from optim.dtypes import DtypeSetting, cpu_bf16_override, resolve_dtype, resolve_matmul_dtype
from optim.hparams import check_in, from_mapping
from trainer.distributed import DistributedConfig, mesh_shape
from trainer.metrics import WANDB_MODES, LoggingConfig, wandb_key_found
from trainer.schedule import Schedule

DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A user's configuration mistake: printed as one message, no traceback (train.py)."""


def _at_least(key: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {value}")


@dataclass(frozen=True)
class TrainerConfig:
    max_steps: int
    micro_batch_size: int
    grad_accum_steps: int
    global_batch_size: int | None
    seq_len: int | None  # null in YAML: the model's context; build_config sets model.block_size
    grad_clip: float
    log_every: int
    eval_every: int
    eval_batches: int
    checkpoint_every: int
    keep_checkpoints: int
    resume: bool | str
    verify_tensors_on_resume: bool
    compute_dtype: DtypeSetting  # autocast: auto | float32 | bfloat16; a torch.dtype after build_config
    compile: bool
    activation_checkpointing: bool
    on_nonfinite: str
    peak_tflops: float | None
    plot: bool
    init_from: str | None  # weights-only start: a checkpoint, run or local HF directory (trainer/init_from.py)
    eval_only: bool  # evaluate the weights of init_from / resume and exit
    dry_run: bool  # compose, validate, print the plan; no training (python train.py --validate)
    sample_every: int  # a generated text sample every this many steps (0: never)
    sample_tokens: int
    sample_prompt: str

    def __post_init__(self) -> None:
        for key in ("max_steps", "log_every", "seq_len", "eval_batches", "micro_batch_size", "grad_accum_steps"):
            if getattr(self, key) is not None:  # seq_len: null until build_config fills it in
                _at_least(f"trainer.{key}", getattr(self, key), 1)
        for key in ("eval_every", "checkpoint_every", "keep_checkpoints", "sample_every"):
            _at_least(f"trainer.{key}", getattr(self, key), 0)
        if self.grad_clip < 0:
            raise ConfigError(f"trainer.grad_clip must be >= 0 (0 disables clipping), got {self.grad_clip}")
        check_in("trainer.on_nonfinite", self.on_nonfinite, ("skip", "stop"))
        if not isinstance(self.compute_dtype, torch.dtype):
            check_in("trainer.compute_dtype", self.compute_dtype, ("auto", "float32", "bfloat16"))
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            raise ConfigError(f"trainer.peak_tflops must be > 0 or null, got {self.peak_tflops}")
        _at_least("trainer.sample_tokens", self.sample_tokens, 1)
        if self.init_from is not None and not str(self.init_from).strip():
            raise ConfigError("trainer.init_from is empty; give a checkpoint, run or Hugging Face directory, or null")

    @property
    def resume_path(self) -> Path | None:
        """The checkpoint named by ``trainer.resume=<path>`` (None for false / true / auto)."""
        return Path(self.resume) if self.resume_mode == "path" else None

    @property
    def resume_mode(self) -> str:
        """``off``, ``newest`` (true: a checkpoint must exist), ``auto`` or ``path``."""
        if self.resume is False or self.resume == "false":
            return "off"
        if self.resume is True or self.resume == "true":
            return "newest"
        return "auto" if self.resume == "auto" else "path"


@dataclass(frozen=True)
class BatchSplit:
    """How the global batch is cut: micro-batch x accumulation steps x ranks sequences of seq_len."""

    micro_batch_size: int
    grad_accum_steps: int
    world_size: int
    seq_len: int

    @property
    def global_sequences(self) -> int:
        return self.micro_batch_size * self.grad_accum_steps * self.world_size

    @property
    def tokens_per_step(self) -> int:
        return self.global_sequences * self.seq_len


@dataclass(frozen=True)
class TrainConfig:
    seed: int
    device: str
    run_name: str
    model: GPTConfig
    optim: OptimConfig
    data: DataConfig  # EmbeddedData | HubData | LocalData, by data.source
    trainer: TrainerConfig
    schedule: Schedule
    distributed: DistributedConfig
    logging: LoggingConfig
    batch: BatchSplit
    resolved: dict[str, Any]  # the whole composed config, resolved (config.yaml, wandb)
    notices: tuple[str, ...] = ()  # what build_config adjusted (a warmup clipped to the run), printed at the start

    @property
    def model_dict(self) -> dict[str, Any]:
        return asdict(self.model)


def split_batch(t: TrainerConfig, world_size: int) -> BatchSplit:
    """With trainer.global_batch_size set (sequences per optimizer step), grad_accum_steps follows
    from it and must divide exactly; otherwise grad_accum_steps is used as given."""
    if t.global_batch_size is None:
        return BatchSplit(t.micro_batch_size, t.grad_accum_steps, world_size, t.seq_len)
    per_pass = t.micro_batch_size * world_size
    if t.global_batch_size < per_pass or t.global_batch_size % per_pass:
        raise ConfigError(
            f"trainer.global_batch_size={t.global_batch_size} cannot be split into micro-batches of "
            f"{t.micro_batch_size} on {world_size} rank(s): it must be a multiple of micro_batch_size x "
            f"world_size = {per_pass}; change trainer.global_batch_size or trainer.micro_batch_size"
        )
    return BatchSplit(t.micro_batch_size, t.global_batch_size // per_pass, world_size, t.seq_len)


WANDB_MODE_ALIASES = {"dryrun": "offline", "run": "online"}  # wandb's older names, still accepted by it


def check_wandb_environment(logging: LoggingConfig) -> LoggingConfig:
    """``logging`` with $WANDB_MODE applied: the environment overrides logging.wandb.mode, as wandb's
    own banner tells users (set WANDB_MODE=offline ...). wandb 0.31 lets ``wandb.init(mode=...)`` win
    over the environment, and the trainer passes the mode, so the override happens here. An empty value
    counts as unset; one that is not a wandb mode is refused now, not at the first logged step."""
    mode = os.environ.get("WANDB_MODE")
    if not mode:
        return logging
    if mode not in (*WANDB_MODES, *WANDB_MODE_ALIASES):
        raise ConfigError(
            f"the environment variable WANDB_MODE='{mode}' is not a wandb mode; use one of "
            f"{', '.join(WANDB_MODES)}, or unset it and choose logging.wandb.mode"
        )
    return replace(logging, wandb=replace(logging.wandb, mode=WANDB_MODE_ALIASES.get(mode, mode)))


def check_launch_environment(config: TrainConfig) -> None:
    """What this machine must provide for the run: CUDA for device=cuda, a W&B key for online logging.
    train.py checks it before any work; build_config does not, because it also validates configs meant
    for other machines (a GPU sweep checked on a login node, a dry run)."""
    if config.device == "cuda" and not torch.cuda.is_available():
        build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ConfigError(f"device=cuda but {build} (torch {torch.__version__}); use device=cpu, "
                          f"or device=auto to take a GPU when there is one")
    if config.logging.wandb.mode == "online" and not wandb_key_found():
        raise ConfigError(
            "wandb mode online (logging.wandb.mode or $WANDB_MODE) needs a W&B API key and none was found; "
            "set WANDB_API_KEY or run `wandb login`, or log offline (logging.wandb.mode=offline, "
            "upload later with `wandb sync`) or not at all (logging=disabled)"
        )


def device_type_of(device: str) -> str:
    """``cpu`` or ``cuda``: what ``device=auto`` will be (train.py's resolve_device makes the same choice);
    the ``auto`` dtypes depend on it."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_distributed_dtypes(distributed: DistributedConfig, device_type: str) -> DistributedConfig:
    param = resolve_dtype(distributed.param_dtype, device_type, "distributed.param_dtype")
    reduce = resolve_dtype(distributed.reduce_dtype, device_type, "distributed.reduce_dtype")
    if reduce == torch.bfloat16 and device_type == "cpu":
        raise ConfigError("distributed.reduce_dtype=bfloat16 is not supported on CPU (gloo); use float32")
    return replace(distributed, param_dtype=param, reduce_dtype=reduce)


def resolve_optim_dtypes(optim: OptimConfig, device_type: str) -> OptimConfig:
    """The Newton-Schulz and exchange dtypes as torch.dtypes (``auto``: by bf16 matmul capability for
    the iteration, by device for the exchange; optim.dtypes)."""
    if optim.orthogonalize is None:
        return optim
    o = optim.orthogonalize
    key = "optim.orthogonalize"
    return replace(optim, orthogonalize=replace(
        o, compute_dtype=resolve_matmul_dtype(o.compute_dtype, device_type, f"{key}.compute_dtype"),
        comm_dtype=resolve_dtype(o.comm_dtype, device_type, f"{key}.comm_dtype"),
    ))


def clip_warmup(schedule: dict[str, Any], max_steps: int) -> list[str]:
    """A warmup as long as the run or longer (the default 20 steps in a 10-step smoke run) is clipped to
    the run, max_steps - 1 steps, in ``schedule`` (the resolved node, so config.yaml records it);
    returns the one-line notice, if any."""
    warmup = schedule.get("warmup_steps")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < max_steps:
        return []
    schedule["warmup_steps"] = max_steps - 1
    return [f"schedule.warmup_steps={warmup} is not shorter than trainer.max_steps={max_steps}: warming up "
            f"over {max_steps - 1} step(s) instead (set schedule.warmup_steps to choose)"]


# Top-level keys besides the sections: selectors of recipes and sweeps, checked where they are used.
FREE_KEYS = ("recipe", "lr_sweep")
SECTIONS = ("seed", "device", "run_name", "model", "optim", "data", "trainer", "schedule", "distributed", "logging")


def build_config(cfg: DictConfig, world_size: int = 1) -> TrainConfig:
    """The typed, validated tree of a composed config for a launch of ``world_size`` processes."""
    # key by key inside the whole config, so interpolations into the hydra node still resolve
    resolved = {
        key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in cfg
        if key != "hydra"
    }
    unknown = sorted(set(resolved) - set(SECTIONS) - set(FREE_KEYS))
    if unknown:
        raise ConfigError(f"'{unknown[0]}' is not a top-level config key (known: {', '.join(SECTIONS)})")
    missing = [key for key in SECTIONS if key not in resolved]
    if missing:
        raise ConfigError(f"the config has no '{missing[0]}'; compose it from configs/train.yaml")
    check_in("device", resolved["device"], DEVICES)
    model = from_mapping(GPTConfig, resolved["model"], "model")
    trainer = from_mapping(TrainerConfig, resolved["trainer"], "trainer")
    if trainer.seq_len is None:  # null: the model's context (config.yaml records the number)
        trainer = replace(trainer, seq_len=model.block_size)
        resolved["trainer"]["seq_len"] = model.block_size
    if trainer.seq_len > model.block_size:
        raise ConfigError(
            f"trainer.seq_len ({trainer.seq_len}) is longer than the model's context "
            f"(model.block_size={model.block_size}); lower trainer.seq_len or raise model.block_size"
        )
    notices = clip_warmup(resolved["schedule"], trainer.max_steps)
    schedule = from_mapping(Schedule, {**resolved["schedule"], "max_steps": trainer.max_steps}, "schedule")
    distributed = from_mapping(DistributedConfig, resolved["distributed"], "distributed")
    mesh_shape(world_size, distributed.dp_replicate, distributed.dp_shard)
    logging = check_wandb_environment(from_mapping(LoggingConfig, resolved["logging"], "logging"))
    resolved["logging"]["wandb"]["mode"] = logging.wandb.mode
    cpu_bf16_override()  # a bad ORTHOGPT_CPU_BF16 is refused here, before any work, not at the first step
    batch = split_batch(trainer, world_size)
    device_type = device_type_of(resolved["device"])
    trainer = replace(trainer, compute_dtype=resolve_dtype(trainer.compute_dtype, device_type, "trainer.compute_dtype"))
    distributed = resolve_distributed_dtypes(distributed, device_type)
    return TrainConfig(
        seed=resolved["seed"], device=resolved["device"], run_name=resolved["run_name"], model=model,
        optim=resolve_optim_dtypes(optim_config(resolved["optim"]), device_type), data=data_config(resolved["data"]),
        trainer=trainer,
        schedule=schedule, distributed=distributed, logging=logging, batch=batch, resolved=resolved,
        notices=tuple(notices),
    )


def resolved_yaml(config: TrainConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(config.resolved))
