"""The model keys of the output head and its loss, as configs/model/*.yaml set them, for tests that
build a GPTConfig by hand (the dataclass has no defaults: they live in the YAML)."""

from pathlib import Path

import yaml

_TEST_MODEL = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/model/gpt2-test.yaml").read_text())
HEAD = {key: _TEST_MODEL[key] for key in ("vocab_pad_to", "loss_impl", "loss_chunk_rows")}
