"""Hugging Face conversion of checkpoints (the conversion itself is models/hf.py).

    export_hf    orthogpt-export-hf    a checkpoint -> GPT2LMHeadModel directory
    import_hf    orthogpt-import-hf    a local GPT2LMHeadModel directory -> a model-only checkpoint
"""
