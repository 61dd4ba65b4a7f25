"""Token shards: a 32-byte header followed by the tokens as little-endian uint16.

Header layout (little-endian, struct ``<8sIIQII``):

    magic        8 bytes  b"OGPTTOK\\0"
    version      u32      SHARD_VERSION
    token_bytes  u32      2 (uint16 tokens; GPT-2's 50257 ids fit)
    num_tokens   u64      number of tokens after the header
    max_token_id u32      largest id in the shard, so a vocabulary check needs no scan
    reserved     u32      0

The header is 32 bytes so the token array stays aligned. ``num_tokens`` is checked against the file
size on every read, which catches truncated and over-long files. A changed byte keeps the size: the
CRC32 of each shard (``shard_checksum``) is recorded in the ``meta.json`` preparation writes, and
checked when the prepared data is opened (data.prepare).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.user_errors import DataError

MAGIC = b"OGPTTOK\0"
SHARD_VERSION = 1
_HEADER = struct.Struct("<8sIIQII")
HEADER_BYTES = _HEADER.size  # 32
TOKEN_DTYPE = np.dtype("<u2")


class ShardError(DataError):
    """A shard file is missing or malformed. The message names the file and how to re-create it."""


@dataclass(frozen=True)
class ShardHeader:
    version: int
    num_tokens: int
    max_token_id: int


def prepare_command(path: str | Path) -> str:
    """The command that (re)creates the shard at ``path``: the data config's name (and cache folder,
    if one was set) are recorded in the ``meta.json`` that preparation writes next to its shards."""
    name, cache_dir = "<name>", None
    try:
        meta = json.loads((Path(path).parent / "meta.json").read_text())
        name, cache_dir = meta["name"], (meta.get("config") or {}).get("cache_dir")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return f"python -m data.prepare data={name}" + (f" data.cache_dir={cache_dir}" if cache_dir else "")


def _error(path: str | Path, problem: str) -> ShardError:
    return ShardError(
        f"token shard {path}: {problem}. Delete its folder ({Path(path).parent}) and re-create it with: "
        f"{prepare_command(path)}"
    )


def shard_checksum(path: str | Path, chunk: int = 1 << 22) -> str:
    """CRC32 of the whole shard file (header and tokens), as 8 hex digits."""
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"


def check_checksum(path: str | Path, expected: str) -> None:
    """Raise a ShardError naming ``path`` and the fix when its CRC32 is not ``expected``."""
    try:
        found = shard_checksum(path)
    except OSError as e:
        raise _error(path, f"cannot read ({e})") from e
    if found != expected:
        raise _error(path, f"its CRC32 is {found}, meta.json recorded {expected} when it was prepared: "
                           f"the file is corrupted")


def write_shard(path: str | Path, tokens) -> ShardHeader:
    """Write ``tokens`` (any integer array-like, ids in [0, 65535]) atomically: a temp file in the same
    folder, fsync, then rename, so a reader never sees a partial shard."""
    path = Path(path)
    arr = np.asarray(tokens)
    if arr.size == 0:  # np.asarray([]) is float64
        arr = arr.astype(TOKEN_DTYPE)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"write_shard({path}): expected a 1-D integer array, got {arr.dtype}{list(arr.shape)}")
    if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(np.uint16).max):
        raise ValueError(f"write_shard({path}): token ids must lie in [0, 65535] to fit uint16")
    header = ShardHeader(SHARD_VERSION, int(arr.size), int(arr.max()) if arr.size else 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_HEADER.pack(MAGIC, header.version, TOKEN_DTYPE.itemsize, header.num_tokens,
                                 header.max_token_id, 0))
            f.write(arr.astype(TOKEN_DTYPE, copy=False).tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return header


def read_header(path: str | Path) -> ShardHeader:
    """Read and validate the header (magic, version, dtype, token count vs file size)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise _error(path, "file not found") from None
    except OSError as e:
        raise _error(path, f"cannot read ({e})") from e
    if len(raw) < HEADER_BYTES:
        raise _error(path, f"file is {len(raw)} bytes, shorter than the {HEADER_BYTES}-byte header")
    magic, version, token_bytes, num_tokens, max_id, _ = _HEADER.unpack(raw)
    if magic != MAGIC:
        raise _error(path, f"bad magic {magic!r} (expected {MAGIC!r}): not a token shard")
    if version != SHARD_VERSION:
        raise _error(path, f"shard format version {version}, this code reads version {SHARD_VERSION}")
    if token_bytes != TOKEN_DTYPE.itemsize:
        raise _error(path, f"{token_bytes}-byte tokens, expected {TOKEN_DTYPE.itemsize} (uint16)")
    expected = HEADER_BYTES + num_tokens * token_bytes
    if size != expected:
        what = "truncated" if size < expected else "has trailing bytes"
        raise _error(path, f"{what}: header says {num_tokens} tokens ({expected} bytes), file is {size} bytes")
    return ShardHeader(version, num_tokens, max_id)


def read_shard(path: str | Path) -> np.ndarray:
    """The shard's tokens as a read-only uint16 memory map (header validated first)."""
    header = read_header(path)
    if header.num_tokens == 0:  # mmap cannot map zero bytes
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(header.num_tokens,))
