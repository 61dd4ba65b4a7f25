"""Data path: sources -> GPT-2 BPE (tiktoken, offline) -> uint16 shards -> memory-mapped loader.

    data.tokenizer  gpt2_encoding(), EOT_ID, TokenizerFilesError
    data.sources    embedded (CPython docs), hub and local document iterators
    data.shards     write_shard / read_shard, ShardError
    data.config     data_config(node) -> EmbeddedData | HubData | LocalData (the typed ``data`` config)
    data.prepare    prepare_dataset(cfg.data) -> PreparedData; CLI `python -m data.prepare data=<name>`
    data.loader     TokenLoader

Kept free of imports on purpose: tokenizer worker processes import this package and should not pay
for torch.
"""
