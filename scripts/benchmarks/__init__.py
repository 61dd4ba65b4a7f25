"""Benchmarks behind BENCHMARKS.md (each prints its table; run with the console command).

    optim_step    orthogpt-bench-optim         optimizer step time, state bytes, NS FLOP rate
    throughput    orthogpt-bench-throughput    training-step tokens/s and MFU, ours vs nanoGPT's
    distributed   orthogpt-bench-distributed   sharded vs replicated NS exchange under torchrun
    matmul        orthogpt-bench-matmul        fp32 / bf16 matmul rates and MKL modes
"""
