"""The model keys of the output head and its loss, as configs/model/*.yaml set them, for tests that
build a GPTConfig by hand (the dataclass has no defaults: they live in the YAML)."""

from dataclasses import asdict

from models.model_config import load_model_config

_TEST_MODEL = asdict(load_model_config("gpt2-test"))
HEAD = {key: _TEST_MODEL[key] for key in ("vocab_pad_to", "loss_impl", "loss_chunk_rows")}
