"""The apps: tools that use the training runtime (trainer/, models/, optim/, data/) and that the
runtime never imports (tests/test_structure.py).

    study/            reproduction studies: study file -> runs -> report  (orthogpt-reproduce)
    benchmarks/       the figures of BENCHMARKS.md                         (orthogpt-bench-*)
    fault_injection/  real kills and corruptions of train.py runs          (orthogpt-fault-inject)
    analysis/         run comparison and every comparison / study figure   (orthogpt-compare, orthogpt-plot)
    hf/               Hugging Face export and import                       (orthogpt-export-hf, orthogpt-import-hf)
    sample.py         text from a checkpoint or HF directory               (orthogpt-sample)
    gpu_check.py      the GPU acceptance run                               (scripts/gpu_check.sh)
    sweep_check.py    every job of a Hydra multirun validated before any starts (a Hydra callback)
    setup.sh          install the project (the README's quickstart)
"""
