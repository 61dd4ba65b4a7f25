"""A weights-only start, ``trainer.init_from=<dir>``: fine-tuning, or a switch of optimizer, from a
trained model. The model's weights are loaded; the optimizer state, the schedule, the data position
and the step count start fresh (step 0). ``<dir>`` is

  - a checkpoint directory (``<run>/checkpoints/step_XXXXXXXX``: a training checkpoint of any
    optimizer and world size, or a model-only one such as orthogpt-import-hf writes),
  - a run directory (its newest complete checkpoint), or
  - a local Hugging Face GPT-2 directory (has config.json; orthogpt-export-hf writes one).

``weights_source`` runs before any process group (train.py, ``deep=False``): it tells the kinds
apart, verifies a checkpoint's manifest and compares the model the weights were written for with the
config, so a mistake is one line, exit 2, nothing written. ``load_weights`` puts them into the model,
plain or FSDP2-sharded: every rank reads the full weights on CPU and keeps its own shard. The padded
vocabulary rows are padded again to this config's ``model.vocab_pad_to`` (they are never tokens), so
an HF model or a checkpoint written with another padding loads as well.

A checkpoint to resume (trainer.resume) wins over init_from: a requeued fine-tune resumes its own
checkpoint, not the weights it started from. ``trainer.eval_only`` evaluates the same sources (or the
checkpoint resume finds, read as weights only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

from models.gpt2 import SHAPE_KEYS, GPTConfig
from trainer.checkpoint.manifest import CheckpointError, VerifiedCheckpoint
from trainer.checkpoint.model_io import gpt_config_from_state, read_model_checkpoint, resolve_checkpoint
from trainer.config import ConfigError, TrainConfig
from trainer.resume import ResumeDecision

HF_CONFIG = "config.json"
WTE, HEAD = "transformer.wte.weight", "lm_head.weight"


@dataclass(frozen=True)
class WeightsSource:
    """Where a run's first weights come from, checked against the config."""

    path: Path
    checkpoint: VerifiedCheckpoint | None  # None: a Hugging Face directory
    written_for: GPTConfig

    def describe(self) -> str:
        if self.checkpoint is None:
            return f"{self.path} (Hugging Face GPT-2)"
        state = self.checkpoint.state
        what = "model only" if state.get("model_only") else f"step {state.get('step')}, optimizer {state.get('optim')}"
        return f"{self.checkpoint.path} ({what})"


def weights_source(path: str | Path, model: GPTConfig, key: str = "trainer.init_from", deep: bool = False,
                   log=None) -> WeightsSource:
    """The weights named by ``path`` (``key``: the config key that named it, for messages); raises
    ConfigError or CheckpointError (a message naming the path and the fix)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{key}={path}: it does not exist; pass a checkpoint directory "
                          f"(<run>/checkpoints/step_XXXXXXXX), a run directory or a local Hugging Face GPT-2 directory")
    if not path.is_dir():
        raise ConfigError(f"{key}={path}: it is a file; pass a checkpoint directory, a run directory or a "
                          f"local Hugging Face GPT-2 directory")
    if (path / HF_CONFIG).is_file():
        source = WeightsSource(path, None, _hf_config(path, model, key))
    else:
        try:
            checkpoint = resolve_checkpoint(path, log=log or (lambda _: None), deep=deep)
        except FileNotFoundError as err:
            raise ConfigError(f"{key}={path}: {err}") from err
        except CheckpointError as err:
            raise CheckpointError(f"{key}={path}: {err}") from err
        source = WeightsSource(path, checkpoint, gpt_config_from_state(checkpoint.state, checkpoint.path))
    _check_shape(source, model, key)
    return source


def checkpoint_weights(checkpoint: VerifiedCheckpoint) -> WeightsSource:
    """A verified checkpoint (the one resume found) read as weights only."""
    return WeightsSource(checkpoint.path, checkpoint, gpt_config_from_state(checkpoint.state, checkpoint.path))


def plan_start(config: TrainConfig, resume: ResumeDecision, deep: bool = False,
               log=None) -> tuple[WeightsSource | None, str]:
    """(the weights to load, if any, besides a resume; the banner's start line) for a launch whose
    resume decision (trainer/resume.py) is ``resume``. train.py asks with ``deep=False`` before any
    process group; the Trainer asks again and loads. Raises ConfigError / CheckpointError."""
    t = config.trainer
    if resume.checkpoint is not None:
        if t.eval_only:  # weights only: the optimizer state is not needed to evaluate
            source = checkpoint_weights(resume.checkpoint)
            return source, f"weights from {source.describe()}"
        return None, resume.reason + (" (trainer.init_from unused: the checkpoint wins)" if t.init_from else "")
    if t.init_from is None:
        if t.eval_only:
            raise ConfigError(f"trainer.eval_only=true has no weights to evaluate ({resume.reason}); set "
                              f"trainer.init_from=<checkpoint | run dir | HF dir>, or trainer.resume to a checkpoint")
        return None, resume.reason
    source = weights_source(t.init_from, config.model, deep=deep, log=log)
    return source, f"weights from {source.describe()}" + ("" if t.eval_only else "; optimizer state fresh, step 0")


def _hf_config(path: Path, model: GPTConfig, key: str) -> GPTConfig:
    from transformers import GPT2Config  # only for an HF source: transformers is a slow import

    from models.hf import gpt_config_from_hf

    try:
        hf_config = GPT2Config.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}={path}: its {HF_CONFIG} is not a readable GPT-2 config ({err})") from err
    return gpt_config_from_hf(hf_config, name=model.name, vocab_pad_to=model.vocab_pad_to)


def _check_shape(source: WeightsSource, model: GPTConfig, key: str) -> None:
    """Every shape key but the padding (padded again on load) must match the config's model."""
    diffs = [f"{k}: weights {getattr(source.written_for, k)} vs config {getattr(model, k)}"
             for k in SHAPE_KEYS if k != "vocab_pad_to" and getattr(source.written_for, k) != getattr(model, k)]
    if diffs:
        raise CheckpointError(
            f"{key}={source.path}: its weights are for another model shape ({'; '.join(diffs)}); "
            f"choose the matching model=... (e.g. the run's model.name {source.written_for.name!r}) or set those keys"
        )


def read_weights(source: WeightsSource, model: GPTConfig) -> dict[str, torch.Tensor]:
    """Full CPU state dict (models.gpt2 names) of ``source``, its vocabulary rows padded for ``model``."""
    if source.checkpoint is None:
        from transformers import GPT2LMHeadModel

        from models.hf import from_hf_state_dict

        hf_model = GPT2LMHeadModel.from_pretrained(source.path, local_files_only=True, dtype=torch.float32)
        sd = from_hf_state_dict(hf_model.state_dict())
    else:
        _, sd, _ = read_model_checkpoint(source.checkpoint)
    wte = sd[WTE][: model.vocab_size]
    padding = model.padded_vocab_size - model.vocab_size
    wte = torch.cat([wte, wte.new_zeros(padding, wte.shape[1])]) if padding else wte.clone()
    sd[WTE] = sd[HEAD] = wte  # tied, as in models.gpt2
    return sd


def load_weights(source: WeightsSource, model: torch.nn.Module) -> None:
    """Collective under FSDP2 (every rank calls it): ``model`` (plain or sharded) takes the weights."""
    sd = read_weights(source, model.config)
    try:
        set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True, strict=True))
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(f"the weights of {source.describe()} do not fit the model: {err}") from err
