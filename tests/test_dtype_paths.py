"""CI covers both Newton-Schulz dtype paths whatever CPU it runs on.

``optim.orthogonalize.compute_dtype: auto`` is bf16 on CPUs with fast bf16 (AMX, AVX512-BF16) and
fp32 elsewhere (optim/dtypes.py), so the rest of the suite exercises only this machine's path. This
test reruns the dtype-sensitive subset (reference vectors of the authors' code, the optimizer
invariants and the W-ranks-equal-one-process equalities) in a fresh pytest process with
``ORTHOGPT_CPU_BF16`` set the other way from the path this run resolved (the machine's probe, or
the override the whole suite was started with).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from optim.dtypes import CPU_BF16_ENV, cpu_has_fast_bf16

ROOT = Path(__file__).resolve().parents[1]
DTYPE_SENSITIVE = [
    "tests/test_optim_reference_vectors.py", "tests/test_optim_family_vectors.py", "tests/test_optim_muon_torch.py",
    "tests/test_spectral_power.py", "tests/test_newton_schulz.py", "tests/test_newton_schulz_schedules.py",
    "tests/test_optim_paper_variants.py", "tests/test_optim_adago.py",
    "tests/test_checkpoint_compat.py", "tests/test_fsdp_equivalence.py::test_all_optimizers_match_one_process_at_w2",
]


@pytest.mark.slow
def test_dtype_sensitive_subset_passes_with_the_probe_overridden_the_other_way():
    other = "0" if cpu_has_fast_bf16() else "1"  # the path this run did not take (probe or override)
    env = {**os.environ, CPU_BF16_ENV: other}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *DTYPE_SENSITIVE],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:]
    assert proc.returncode == 0, f"{CPU_BF16_ENV}={other}: {summary}\n{proc.stdout[-4000:]}"
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 100 and "failed" not in summary, summary  # really ran the subset
