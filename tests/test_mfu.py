"""The MFU denominator compares across runs (trainer/mfu.py): the CPU rate is measured once per machine
description and cached; CUDA takes the table of known dense bf16 peaks; trainer.peak_tflops wins."""

from __future__ import annotations

import json

import pytest
import torch

from trainer import mfu


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "mfu_peaks.json"
    monkeypatch.setenv(mfu.CACHE_ENV, str(path))
    return path


def test_cpu_rate_is_measured_once_per_machine_and_dtype_then_read_from_the_cache(cache, monkeypatch):
    rates = iter([0.25, 0.5, 99.0])
    measured = []
    monkeypatch.setattr(mfu, "measure_matmul_tflops",
                        lambda device, **kw: measured.append(kw["dtype"]) or next(rates))
    cpu = torch.device("cpu")
    first, source = mfu.mfu_denominator(None, cpu, torch.float32)
    assert first == 0.25 and "measured now" in source and str(cache) in source
    # the next run (under whatever load) reuses it: the same denominator, no new measurement
    again, source = mfu.mfu_denominator(None, cpu, torch.float32)
    assert again == 0.25 and "cached in" in source and measured == [torch.float32]
    # bf16 autocast multiplies in bf16: its own entry, measured in bf16
    assert mfu.mfu_denominator(None, cpu, torch.bfloat16)[0] == 0.5 and measured == [torch.float32, torch.bfloat16]
    entries = json.loads(cache.read_text())
    assert len(entries) == 2
    for key, entry in entries.items():
        assert json.loads(key) == entry["description"]
        assert set(entry["description"]) == {"cpu", "flags", "torch", "dtype", "threads"}
        assert entry["description"]["torch"] == torch.__version__
    # another machine description (here: another thread count) is measured anew
    monkeypatch.setattr(mfu.torch, "get_num_threads", lambda: 977)
    assert mfu.mfu_denominator(None, cpu, torch.float32)[0] == 99.0
    # the configured peak wins over everything
    assert mfu.mfu_denominator(3.5, cpu, torch.float32) == (3.5, "trainer.peak_tflops")


def test_a_corrupt_or_unwritable_cache_costs_only_the_reuse(cache, monkeypatch):
    monkeypatch.setattr(mfu, "measure_matmul_tflops", lambda device, **kw: 0.125)
    cache.write_text('{"cut short')
    assert mfu.mfu_denominator(None, torch.device("cpu"))[0] == 0.125  # re-measured, file rewritten
    assert len(json.loads(cache.read_text())) == 1
    blocked = cache.parent / "file" / "mfu_peaks.json"
    (cache.parent / "file").write_text("a file where the cache folder should be")
    monkeypatch.setenv(mfu.CACHE_ENV, str(blocked))
    rate, source = mfu.mfu_denominator(None, torch.device("cpu"))
    assert rate == 0.125 and "not writable" in source


@pytest.mark.parametrize("name,dtype,peak", [
    ("NVIDIA H200", torch.bfloat16, 989.0),
    ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989.0),
    ("NVIDIA H100 PCIe", torch.bfloat16, 756.0),
    ("NVIDIA H100 NVL", torch.bfloat16, 835.0),
    ("NVIDIA A100-SXM4-80GB", torch.bfloat16, 312.0),
    ("NVIDIA A100 80GB PCIe", torch.float16, 312.0),
    ("NVIDIA L40S", torch.bfloat16, 362.0),
    ("NVIDIA L4", torch.bfloat16, 121.0),
    ("NVIDIA A10G", torch.bfloat16, None),  # not the A10: unknown, no guess
    ("NVIDIA H100 80GB HBM3", torch.float32, None),  # the table is for bf16 / fp16 tensor cores
])
def test_gpu_peak_table(name, dtype, peak):
    assert mfu.known_gpu_peak(name, dtype) == peak


def test_cuda_run_reports_mfu_from_the_table_without_a_flag(monkeypatch):
    monkeypatch.setattr(mfu.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(mfu.torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    peak, source = mfu.mfu_denominator(None, torch.device("cuda"), torch.bfloat16)
    assert peak == 989.0 and "NVIDIA H200" in source
    peak, source = mfu.mfu_denominator(None, torch.device("cuda"), torch.float32)
    assert peak is None and "trainer.peak_tflops" in source

