"""Shared fixtures (generic: any test area may use them)."""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(tryfirst=True)  # before pytest's -m deselection reads the marks
def pytest_collection_modifyitems(config, items):
    """Tests marked ``distributed`` (several real processes) are also ``slow``: the fast tier,
    ``pytest -m "not slow"``, leaves them to the full suite. Tests marked ``cuda`` skip cleanly on a
    machine without a CUDA GPU (they run in gpu_check)."""
    import torch

    for item in items:
        if "distributed" in item.keywords:
            item.add_marker(pytest.mark.slow)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (this machine has none; scripts/gpu_check.sh runs it on one)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def private_mfu_cache(tmp_path_factory):
    """The CPU MFU denominator cache (trainer/mfu.py) of this session and the processes it starts,
    never the user's ~/.cache: the first run measures, the rest reuse."""
    os.environ["ORTHOGPT_MFU_CACHE"] = str(tmp_path_factory.mktemp("mfu") / "mfu_peaks.json")


@pytest.fixture(scope="session")
def data_cache_dir(tmp_path_factory):
    """A data cache folder private to this test session (never the user's ~/.cache)."""
    return tmp_path_factory.mktemp("data_cache")


@pytest.fixture(scope="session")
def prepared_embedded(data_cache_dir):
    """The embedded default corpus (configs/data/embedded.yaml), prepared once per session (~3 s).

    Returns data.prepare.PreparedData: .train / .val shard paths, .num_tokens, .dir.
    """
    from data.prepare import compose_data_config, prepare_dataset

    cfg = compose_data_config(["data=embedded", f"data.cache_dir={data_cache_dir}", "data.num_proc=2"])
    return prepare_dataset(cfg)
