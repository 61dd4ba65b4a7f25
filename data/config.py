"""The typed ``data`` config: one frozen dataclass per source, chosen by the ``source`` key.

    composed ``data`` node (configs/data/<name>.yaml + overrides)
        -> data_config(node)                    keys, types, ranges and local files checked once
        -> EmbeddedData | HubData | LocalData    what prepare_dataset and data.sources take

The keys every source shares are declared once, in ``DataConfig``; each source adds its own. As in
every other config section, the defaults live only in YAML: the classes declare keys and types, so an
unknown, missing or mistyped key is an error that names it. ``dataclasses.asdict`` of an instance is
the mapping the cache key hashes (data.prepare.cache_key), so a field's name is part of the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any



@dataclass(frozen=True)
class DataConfig:
    """The keys of every data config."""

    name: str  # names the cache folder <cache_dir>/<name>-<key>/
    source: str  # embedded | hub | local: which class below
    shard_tokens: int
    val_fraction: float
    max_tokens: int | None
    num_proc: int
    chunk_docs: int
    cache_dir: str | None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("data.name is missing: every data config names itself (used for the cache folder)")
        if SOURCES.get(self.source) is not type(self):
            raise ValueError(f"data.source={self.source!r} does not match {type(self).__name__}")
        if not isinstance(self.shard_tokens, int) or self.shard_tokens < 1:
            raise ValueError(f"data.shard_tokens={self.shard_tokens!r}: expected a positive integer")
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise ValueError(f"data.val_fraction={self.val_fraction!r}: expected 0 <= val_fraction < 1")
        if not isinstance(self.num_proc, int) or self.num_proc < 0:
            raise ValueError(f"data.num_proc={self.num_proc!r}: expected 0 (one per core) or a positive integer")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise ValueError(f"data.max_tokens={self.max_tokens!r}: expected null or a positive integer")
        if not isinstance(self.chunk_docs, int) or self.chunk_docs < 1:
            raise ValueError(f"data.chunk_docs={self.chunk_docs!r}: expected a positive integer")


@dataclass(frozen=True)
class EmbeddedData(DataConfig):
    """CPython's own documentation (data.sources.embedded_documents): no keys of its own."""


@dataclass(frozen=True)
class HubData(DataConfig):
    """A Hugging Face hub data set, read with ``datasets.load_dataset`` (data.sources.hub_documents)."""

    hf_path: str
    hf_name: str | None
    split: str
    revision: str | None  # a hub commit; null = latest
    streaming: bool
    text_field: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.hf_path:
            raise ValueError("data.hf_path is missing: the hub data set to read, e.g. HuggingFaceFW/fineweb-edu")


@dataclass(frozen=True)
class LocalData(DataConfig):
    """Local .txt / .jsonl / .parquet files (data.sources.local_documents). ``paths`` are stored
    resolved (absolute), so the cache key and the reader see the same files wherever the run starts."""

    paths: tuple[str, ...]
    format: str  # auto (from the extension) | text | json | parquet
    text_field: str
    text_sample_by: str  # .txt: paragraph | document

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "paths", tuple(resolve_local_paths(self.paths)))
        local_format(list(self.paths), self.format)


SOURCES: dict[str, type[DataConfig]] = {"embedded": EmbeddedData, "hub": HubData, "local": LocalData}


def _plain(node: Any) -> dict:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, Mapping):
        raise TypeError(f"data config must be a mapping, got {type(node).__name__}")
    return dict(node)


def data_config(node: Any) -> DataConfig:
    """The typed config of a ``data`` node (a DictConfig, a plain mapping, or an already typed config,
    returned as is): the ``source`` key picks the class, every other key is checked against it."""
    if isinstance(node, DataConfig):
        return node
    node = _plain(node)
    source = node.get("source")
    if source not in SOURCES:
        raise ValueError(f"data.source={source!r}: expected one of {sorted(SOURCES)}")
    if not node.get("name"):
        raise ValueError("data.name is missing: every data config names itself (used for the cache folder)")
    cls = SOURCES[source]
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(node) - allowed)
    if unknown:
        raise ValueError(f"data.{unknown[0]} is not a key of data config {node['name']!r} (source={source}); "
                         f"allowed: {', '.join(sorted(allowed))}")
    missing = sorted(allowed - set(node))
    if missing:
        raise ValueError(f"data.{missing[0]} is missing from data config {node['name']!r}; "
                         f"set it in configs/data/{node['name']}.yaml or on the command line")
    # imported here: tokenizer worker processes import data.prepare (and so this module), not torch
    from optim.hparams import from_mapping

    return from_mapping(cls, node, "data")


# the checks of local files, run when a LocalData is built (data.sources reads the files)
LOCAL_FORMATS = {".txt": "text", ".text": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def local_format(paths: list[str], fmt: str = "auto") -> str:
    """The ``datasets`` builder for the files: from ``fmt`` or, with ``auto``, from their extension."""
    if fmt != "auto":
        if fmt not in set(LOCAL_FORMATS.values()):
            raise ValueError(f"data.format={fmt!r}: expected auto, text, json or parquet")
        return fmt
    found = {}
    for p in paths:
        suffix = Path(p).suffix.lower()
        if suffix not in LOCAL_FORMATS:
            raise ValueError(f"data.paths: cannot tell the format of {p} from its extension "
                             f"(known: {', '.join(LOCAL_FORMATS)}); set data.format=text|json|parquet")
        found.setdefault(LOCAL_FORMATS[suffix], p)
    if len(found) != 1:
        raise ValueError(f"data.paths mixes formats {sorted(found)} (e.g. {list(found.values())}); "
                         "prepare each format as its own data set")
    return next(iter(found))


def resolve_local_paths(paths) -> list[str]:
    if not paths:
        raise ValueError("data.paths is empty: list the local .txt/.jsonl/.parquet files, "
                         "e.g. data=local 'data.paths=[/path/a.txt,/path/b.txt]'")
    out = []
    for p in paths:
        path = Path(str(p)).expanduser().resolve()
        if not path.exists():
            raise ValueError(f"data.paths: {p} does not exist; list existing .txt/.jsonl/.parquet files")
        if not path.is_file():
            raise ValueError(f"data.paths: {p} is not a file; list the files, not their folder")
        out.append(str(path))
    return out
