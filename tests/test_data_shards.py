"""uint16 shard format: header round trip and errors that name the file and the prepare command."""

import json
import struct

import numpy as np
import pytest

from data.shards import HEADER_BYTES, MAGIC, ShardError, read_header, read_shard, write_shard


def test_round_trip(tmp_path):
    tokens = np.array([0, 1, 50256, 65535, 7, 31373], dtype=np.int64)
    path = tmp_path / "train_000000.bin"
    write_shard(path, tokens)
    header = read_header(path)
    assert (header.version, header.num_tokens, header.max_token_id) == (1, 6, 65535)
    data = read_shard(path)
    assert isinstance(data, np.memmap) and data.dtype == np.uint16
    np.testing.assert_array_equal(data, tokens)
    assert path.stat().st_size == HEADER_BYTES + 2 * len(tokens)
    assert list(tmp_path.iterdir()) == [path]  # the temp file was renamed, nothing left behind


def test_empty_shard(tmp_path):
    write_shard(tmp_path / "e.bin", [])
    assert len(read_shard(tmp_path / "e.bin")) == 0


def test_rejects_ids_outside_uint16(tmp_path):
    with pytest.raises(ValueError, match="65535"):
        write_shard(tmp_path / "x.bin", [1, 70000])
    assert not (tmp_path / "x.bin").exists()


def _corrupt(path, offset, data):
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(data)] = data
    path.write_bytes(bytes(raw))


@pytest.fixture
def shard(tmp_path):
    path = tmp_path / "ds" / "val_000000.bin"
    write_shard(path, np.arange(100))
    (path.parent / "meta.json").write_text(json.dumps({"name": "mydata"}))
    return path


@pytest.mark.parametrize(
    "corrupt, problem",
    [
        (lambda p: _corrupt(p, 0, b"NOTASHRD"), "bad magic"),
        (lambda p: _corrupt(p, 8, struct.pack("<I", 99)), "version 99"),
        (lambda p: _corrupt(p, 12, struct.pack("<I", 4)), "4-byte tokens"),
        (lambda p: p.write_bytes(p.read_bytes()[:-10]), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes() + b"\0\0"), "trailing bytes"),
        (lambda p: p.write_bytes(p.read_bytes()[:10]), "shorter than the 32-byte header"),
        (lambda p: p.unlink(), "not found"),
    ],
)
def test_corrupt_shard_names_file_and_command(shard, corrupt, problem):
    corrupt(shard)
    with pytest.raises(ShardError) as e:
        read_shard(shard)
    msg = str(e.value)
    assert problem in msg and str(shard) in msg
    assert "python -m data.prepare data=mydata" in msg
    assert isinstance(e.value, ValueError)


def test_magic_is_what_we_write(tmp_path):
    write_shard(tmp_path / "a.bin", [1])
    assert (tmp_path / "a.bin").read_bytes()[:8] == MAGIC
