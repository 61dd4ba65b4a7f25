"""fp32 matmul rate for a few GPT-2-like shapes (best of 5 after a warm-up), e.g. to compare BLAS modes:

    orthogpt-bench-matmul                              # train.py's default, MKL_CBWR=AUTO,STRICT
    MKL_CBWR= orthogpt-bench-matmul                    # MKL's own default
    MKL_CBWR=COMPATIBLE orthogpt-bench-matmul
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # as train.py; an empty value leaves MKL's default

import torch

SHAPES = [(1024, 1024, 1024), (2048, 768, 2304), (512, 3072, 768)]  # (M, K, N)


def main() -> None:
    torch.manual_seed(0)
    print(f"MKL_CBWR={os.environ['MKL_CBWR'] or '<unset>'}, {torch.get_num_threads()} threads")
    for m, k, n in SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        print(f"{m}x{k}x{n}: {2 * m * k * n / best / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
