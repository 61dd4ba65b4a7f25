"""Tokenize a data source into train/val uint16 shards, cached and reused.

    python -m data.prepare data=<name> [data.key=value ...]      (same as orthogpt-prepare)

Each document becomes ``encode_ordinary(text) + [EOT]`` (so a literal "<|endoftext|>" inside a
document is plain text, not a separator). Documents go to val when a hash of their text falls below
``val_fraction``: deterministic, independent of order and of ``num_proc``, and a document that occurs
twice always lands in the same split, so duplicates cannot leak from train into val. Tokens of each
split are concatenated and cut into shards of ``shard_tokens`` tokens (a document may straddle two).

The result lives in ``<cache_dir>/<name>-<key>/`` where ``key`` hashes everything that changes the
tokens (source config, split, shard size, formats, tokenizer; plus the Python version for the embedded
corpus and size/mtime for local files). It is built in a temp folder and renamed into place, under a
file lock, so concurrent callers (every rank of a job) wait for one builder and then reuse its output.
Its ``meta.json`` records each shard's CRC32, checked whenever the folder is opened, so a corrupted
shard is named (with the command that prepares it again) before training reads it; a folder prepared
before the CRCs were recorded is read without that check.

The command line (``python -m data.prepare`` / ``orthogpt-prepare``) reports a mistake like train.py:
one line, exit status 2 (data/user_errors.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout
from tqdm import tqdm

from data import sources
from data.config import DataConfig, LocalData, data_config
from data.shards import SHARD_VERSION, check_checksum, shard_checksum, write_shard
from data.tokenizer import ENCODER_JSON_SHA256, EOT_ID, VOCAB_BPE_SHA256, gpt2_encoding
from data.user_errors import DataError, exit_on_user_error

log = logging.getLogger(__name__)

PREP_VERSION = 1  # bump when the tokenization or split rule changes: invalidates every cache entry
DEFAULT_CACHE_DIR = "~/.cache/orthogpt/data"
CACHE_ENV = "ORTHOGPT_DATA_DIR"
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"

# Keys that only change how fast or where preparation runs, not the tokens: kept out of the cache key.
_NOT_CONTENT = {"name", "num_proc", "cache_dir", "chunk_docs"}


@dataclass(frozen=True)
class PreparedData:
    dir: Path
    train: list[Path]
    val: list[Path]
    num_tokens: dict = field(default_factory=dict)  # {"train": int, "val": int}
    name: str = ""


def cache_root(cfg: DataConfig) -> Path:
    root = cfg.cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR
    return Path(root).expanduser().resolve()


def cache_key(cfg: DataConfig) -> str:
    """Hash of the fields that change the tokens (``asdict``: the same mapping, and so the same key, as
    the validated dict of earlier versions), the format versions and the source's own inputs."""
    content = {k: v for k, v in sorted(asdict(cfg).items()) if k not in _NOT_CONTENT}
    content["_versions"] = [PREP_VERSION, SHARD_VERSION, ENCODER_JSON_SHA256, VOCAB_BPE_SHA256]
    if cfg.source == "embedded":  # the corpus is this interpreter's own documentation
        content["_python"] = [platform.python_implementation(), platform.python_version()]
    if isinstance(cfg, LocalData):  # re-prepare when a file changes
        content["_files"] = [[p, os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in cfg.paths]
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_val_document(text: str, val_fraction: float) -> bool:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64 < val_fraction


def _encode_document(args: tuple[str, float]) -> tuple[np.ndarray, bool]:
    text, val_fraction = args
    ids = gpt2_encoding().encode_ordinary(text)
    ids.append(EOT_ID)
    return np.asarray(ids, dtype=np.uint16), is_val_document(text, val_fraction)


class _ShardWriter:
    """Concatenates documents of one split and writes a shard every ``shard_tokens`` tokens."""

    def __init__(self, folder: Path, split: str, shard_tokens: int):
        self.folder, self.split = folder, split
        self.buf = np.empty(shard_tokens, dtype=np.uint16)
        self.fill = 0
        self.shards: list[tuple[str, int]] = []  # (file name, tokens)
        self.crc32: dict[str, str] = {}  # file name -> CRC32 of the file (data.shards.shard_checksum)
        self.total = 0

    def add(self, tokens: np.ndarray) -> None:
        self.total += len(tokens)
        while len(tokens):
            take = min(len(tokens), len(self.buf) - self.fill)
            self.buf[self.fill:self.fill + take] = tokens[:take]
            self.fill += take
            tokens = tokens[take:]
            if self.fill == len(self.buf):
                self.flush()

    def flush(self) -> None:
        if self.fill:
            fname = f"{self.split}_{len(self.shards):06d}.bin"
            write_shard(self.folder / fname, self.buf[:self.fill])
            self.shards.append((fname, self.fill))
            self.crc32[fname] = shard_checksum(self.folder / fname)
            self.fill = 0


def _encode_batch(texts: list[str], val_fraction: float) -> list[tuple[np.ndarray, bool]]:
    return [_encode_document((t, val_fraction)) for t in texts]


def _batched(iterable, n: int):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _encoded_stream(cfg: DataConfig):
    """(tokens, is_val) per document, in document order, from a pool of worker processes."""
    vf = cfg.val_fraction
    nproc = cfg.num_proc or min(os.cpu_count() or 1, 8)
    if nproc == 1:
        for text in sources.documents(cfg):
            yield _encode_document((text, vf))
        return
    # spawn, not fork: the caller may be a training process with live threads (torch, gloo).
    # Batches are submitted with a bounded number in flight (Pool.imap would read a streaming source
    # as fast as it can and hold it all in memory); results are yielded in submission order.
    with multiprocessing.get_context("spawn").Pool(nproc) as pool:
        inflight = deque()
        for batch in _batched(sources.documents(cfg), cfg.chunk_docs):
            inflight.append(pool.apply_async(_encode_batch, (batch, vf)))
            if len(inflight) >= 4 * nproc:
                yield from inflight.popleft().get()
        while inflight:
            yield from inflight.popleft().get()


def _build(cfg: DataConfig, folder: Path) -> dict:
    gpt2_encoding()  # fail on bad tokenizer files before starting workers
    writers = {s: _ShardWriter(folder, s, cfg.shard_tokens) for s in ("train", "val")}
    ndocs = {"train": 0, "val": 0}
    start = time.time()
    bar = tqdm(desc=f"tokenizing {cfg.name}", unit="doc", dynamic_ncols=True, disable=None)
    stream = _encoded_stream(cfg)
    for tokens, is_val in stream:
        split = "val" if is_val else "train"
        writers[split].add(tokens)
        ndocs[split] += 1
        bar.update(1)
        total = writers["train"].total + writers["val"].total
        if bar.n % 256 == 0:
            bar.set_postfix(tokens=f"{total:,}")
        if cfg.max_tokens and total >= cfg.max_tokens:
            break
    stream.close()  # stops the worker pool early when max_tokens cut the source short
    bar.close()
    for w in writers.values():
        w.flush()
    if writers["train"].total == 0:
        where = f" ({', '.join(cfg.paths)})" if isinstance(cfg, LocalData) else ""
        raise DataError(f"data {cfg.name!r}: the source gave no training text{where}: its files are empty or "
                        f"hold only blank text; check data.paths (and data.text_field for json/parquet)")
    if cfg.val_fraction > 0 and writers["val"].total == 0:
        raise DataError(f"data {cfg.name!r}: no document fell into val with val_fraction="
                        f"{cfg.val_fraction} ({ndocs['train']} documents); raise data.val_fraction")
    meta = {
        "name": cfg.name,
        "config": asdict(cfg),
        "num_tokens": {s: w.total for s, w in writers.items()},
        "num_documents": ndocs,
        "shards": {s: w.shards for s, w in writers.items()},
        "crc32": {name: crc for w in writers.values() for name, crc in w.crc32.items()},
        "python": platform.python_version(),
        "seconds": round(time.time() - start, 2),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    return meta


def _load(folder: Path) -> PreparedData:
    """The prepared data of ``folder``, every shard checked against the CRC32 in its meta.json (a
    folder prepared before CRCs were recorded has none: its shards' headers are still checked when
    read, and every batch's token ids against the vocabulary, data.loader)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        shards = [name for split in ("train", "val") for name, _ in meta["shards"][split]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"prepared data {folder}: its meta.json is unreadable ({err}); delete the folder "
                        f"and prepare it again (python -m data.prepare data=<name>)") from err
    for name in shards:
        if name in meta.get("crc32", {}):
            check_checksum(folder / name, meta["crc32"][name])
    return PreparedData(
        dir=folder,
        train=[folder / f for f, _ in meta["shards"]["train"]],
        val=[folder / f for f, _ in meta["shards"]["val"]],
        num_tokens=dict(meta["num_tokens"]),
        name=meta["name"],
    )


def prepare_dataset(data_cfg: DataConfig | Mapping) -> PreparedData:
    """Prepare (or reuse) the shards of a data config: the typed one (``TrainConfig.data``), or a
    Hydra ``cfg.data`` / plain mapping, which is checked and typed first (data.config.data_config)."""
    cfg = data_config(data_cfg)
    root = cache_root(cfg)
    final = root / f"{cfg.name}-{cache_key(cfg)}"
    if (final / "meta.json").is_file():  # complete folders only appear through the rename below
        return _load(final)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocking = next((p for p in (root, *root.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocking} is a file" if blocking is not None else (err.strerror or str(err)).lower()
        raise DataError(f"the data cache folder {root} cannot be created ({why}); point data.cache_dir "
                        f"(or ${CACHE_ENV}) at a writable folder") from err
    lock = FileLock(str(root / f".{final.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process preparing %s", final)
        lock.acquire()
    try:
        if (final / "meta.json").is_file():
            return _load(final)
        for stale in root.glob(f".tmp-{final.name}-*"):  # left by a crashed builder; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
        try:
            meta = _build(cfg, tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("prepared %s: %s tokens in %ss -> %s", cfg.name, meta["num_tokens"], meta["seconds"], final)
        return _load(final)
    finally:
        lock.release()


def compose_data_config(overrides: list[str]):
    """Compose ``configs/data/<name>.yaml`` plus ``data.*`` overrides with Hydra (group ``data``)."""
    from hydra import compose, initialize_config_dir

    # The data group is added to an empty primary config, so `data=x` is spelled `+data=x` for Hydra.
    fixed = [("+" + o if o.startswith("data=") else o) for o in overrides]
    if not any(o.startswith("+data=") for o in fixed):
        fixed.insert(0, "+data=embedded")
    with initialize_config_dir(config_dir=str(CONFIGS_DIR), version_base=None):
        return compose(overrides=fixed).data


def data_names() -> str:
    return ", ".join(sorted(p.stem for p in (CONFIGS_DIR / "data").glob("*.yaml")))


def usage() -> str:
    names = data_names()
    return (
        "usage: python -m data.prepare [data=<name>] [data.<key>=<value> ...]   (or: orthogpt-prepare ...)\n\n"
        "Tokenize a data source into train/val token shards in the data cache; a source prepared before\n"
        "is reused. train.py prepares its data itself: this command does it ahead of a run.\n\n"
        f"  data=<name>         {names} (configs/data/<name>.yaml; default: embedded)\n"
        "  data.<key>=<value>  a key of that config, e.g. data.cache_dir=/scratch/data data.max_tokens=1000000;\n"
        "                      local files: data=local 'data.paths=[/abs/a.txt,/abs/b.txt]'\n\n"
        f"The cache is data.cache_dir, else ${CACHE_ENV}, else {DEFAULT_CACHE_DIR}. A mistake is reported\n"
        "in one line with exit status 2; ORTHOGPT_DEBUG=1 shows the traceback."
    )


def _one_line(err: Exception) -> str:
    """Hydra's composition errors in one line, in this command's terms."""
    from hydra.errors import MissingConfigException

    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    first = lines[0] if lines else type(err).__name__
    if isinstance(err, MissingConfigException):
        return f"{first.split(': ', 1)[-1]}: choose data=<name> from {data_names()} (configs/data/)"
    if first.startswith("Could not override"):  # a key the data config does not have
        return f"{first} It is not a key of this data config (configs/data/<name>.yaml lists them)"
    return f"{first}; arguments are data=<name> and data.<key>=<value> (python -m data.prepare --help)"


def main(argv: list[str] | None = None) -> int:
    """``python -m data.prepare`` / ``orthogpt-prepare``: prepare one data config, print where it is."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(usage())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        flags = [a for a in args if a.startswith("-")]
        if flags:
            raise ValueError(f"unknown option {flags[0]}; the arguments are data=<name> and data.<key>=<value> "
                             f"overrides (python -m data.prepare --help)")
        prepared = prepare_dataset(compose_data_config(args))
    # a composition error (an unknown data name: Hydra's message lists the valid ones), a bad key or
    # value, a source with no text, a cache folder that cannot be written, a hub that cannot be read
    except (HydraException, OmegaConfBaseException, ValueError, TypeError, OSError, RuntimeError) as err:
        exit_on_user_error(_one_line(err) if isinstance(err, HydraException) else err)
    print(f"{prepared.name}: train {prepared.num_tokens['train']:,} tokens in {len(prepared.train)} shard(s), "
          f"val {prepared.num_tokens['val']:,} tokens in {len(prepared.val)} shard(s)\n{prepared.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
