"""``configs/model/<name>.yaml`` as a ``GPTConfig``, outside a running Hydra app (tests, benchmarks,
notebooks). Each size file takes what all sizes share from ``configs/model/shared/gpt2_common.yaml``
through its defaults list, so it is composed with Hydra, once per name and process.
"""

from __future__ import annotations

import functools
from pathlib import Path

from omegaconf import OmegaConf

from models.gpt2 import GPTConfig

MODEL_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "model"


@functools.lru_cache(maxsize=None)
def _composed(name: str) -> dict:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(MODEL_CONFIG_DIR.parent), version_base=None):
        return OmegaConf.to_container(compose(overrides=[f"+model={name}"]).model, resolve=True)


def load_model_config(name_or_path: str | Path) -> GPTConfig:
    """A size of configs/model/ by name (``gpt2-test``) or by its path, or any other YAML file that
    sets every GPTConfig key."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.resolve().parent != MODEL_CONFIG_DIR:
        if not path.is_file():
            raise FileNotFoundError(f"model config {path} not found (give a YAML path or a name in configs/model/)")
        return GPTConfig(**OmegaConf.to_container(OmegaConf.load(path), resolve=True))
    name = path.stem if path.suffix else str(name_or_path)
    if not (MODEL_CONFIG_DIR / f"{name}.yaml").is_file():
        known = ", ".join(sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"model config '{name_or_path}' not found; configs/model/ has: {known}")
    return GPTConfig(**_composed(name))
