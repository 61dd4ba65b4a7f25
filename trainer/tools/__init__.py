"""Checkpoint tools in one process: Hugging Face export / import, sampling.

    export_hf    orthogpt-export-hf    a checkpoint -> GPT2LMHeadModel directory
    import_hf    orthogpt-import-hf    a local GPT2LMHeadModel directory -> a model-only checkpoint
    sample       orthogpt-sample       text from a checkpoint, run directory or HF directory
"""
