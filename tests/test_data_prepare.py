"""Preparation: embedded corpus end to end, caching and its key, split, local files, locking, CLI."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import data.prepare as prep
from data import sources
from omegaconf import OmegaConf

from data.config import SOURCES, data_config, local_format
from data.prepare import compose_data_config, is_val_document, prepare_dataset
from data.shards import read_shard
from data.tokenizer import EOT_ID, gpt2_encoding

REPO = Path(__file__).resolve().parents[1]
DOCS = [f"Document number {i}. " + "Some English words here. " * (i % 7 + 1) for i in range(60)]


def local_cfg(tmp_path, path, **kw):
    """configs/data/local.yaml (every key's default) as a plain dict, with this test's values."""
    base = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "data" / "local.yaml"))
    return {**base, "name": "tiny", "paths": [str(path)], "cache_dir": str(tmp_path / "cache"),
            "shard_tokens": 100, "val_fraction": 0.2, "num_proc": 1, **kw}


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(DOCS)))
    return path


def all_tokens(paths):
    return np.concatenate([np.asarray(read_shard(p)) for p in paths]).tolist()


def test_embedded_corpus_end_to_end(prepared_embedded):
    p = prepared_embedded
    assert p.name == "embedded"
    assert p.num_tokens["train"] > 300_000 and p.num_tokens["val"] > 10_000
    assert sum(len(read_shard(f)) for f in p.train) == p.num_tokens["train"]
    train = np.asarray(read_shard(p.train[0]))
    assert train.max() == EOT_ID  # every id in GPT-2's vocabulary, EOT after each document
    # The first document of the stream is the first pydoc topic (sorted), whichever split it fell in.
    first = next(sources.pydoc_topics())
    split = p.val if is_val_document(first, 0.1) else p.train
    n = len(gpt2_encoding().encode_ordinary(first))
    head = np.asarray(read_shard(split[0]))[: n + 1].tolist()
    assert gpt2_encoding().decode(head[:n]) == first and head[n] == EOT_ID


def test_cache_reused_without_retokenizing(prepared_embedded, data_cache_dir, monkeypatch):
    def fail(*a, **k):
        raise AssertionError("re-tokenized a prepared data set")

    monkeypatch.setattr(prep, "_build", fail)
    again = prepare_dataset(compose_data_config(["data=embedded", f"data.cache_dir={data_cache_dir}",
                                                 "data.num_proc=1", "data.chunk_docs=3"]))
    assert again == prepared_embedded  # num_proc/chunk_docs are not part of the key


def test_local_jsonl_tokens_split_and_shards(tmp_path, jsonl):
    p = prepare_dataset(local_cfg(tmp_path, jsonl))
    enc = gpt2_encoding()
    expect = {"train": [], "val": []}
    for d in DOCS:
        expect["val" if is_val_document(d, 0.2) else "train"] += enc.encode_ordinary(d) + [EOT_ID]
    assert expect["val"] and expect["train"]
    assert all_tokens(p.train) == expect["train"] and all_tokens(p.val) == expect["val"]
    assert all(len(read_shard(f)) == 100 for f in p.train[:-1]) and len(p.train) > 3
    assert p.num_tokens == {s: len(v) for s, v in expect.items()}


def test_worker_processes_give_identical_shards(tmp_path, jsonl):
    one = prepare_dataset(local_cfg(tmp_path, jsonl, num_proc=1))
    two = prepare_dataset(local_cfg(tmp_path, jsonl, num_proc=2, cache_dir=str(tmp_path / "other")))
    assert one.dir.name == two.dir.name and one.dir != two.dir
    assert all_tokens(one.train) == all_tokens(two.train) and all_tokens(one.val) == all_tokens(two.val)


def test_local_text_paragraphs(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("\n\n".join(DOCS))
    p = prepare_dataset(local_cfg(tmp_path, path, val_fraction=0.0))
    assert all_tokens(p.train).count(EOT_ID) == len(DOCS) and p.val == []
    whole = prepare_dataset(local_cfg(tmp_path, path, val_fraction=0.0, text_sample_by="document"))
    assert all_tokens(whole.train).count(EOT_ID) == 1


def test_cache_key(tmp_path, jsonl):
    base = prepare_dataset(local_cfg(tmp_path, jsonl)).dir
    assert prepare_dataset(local_cfg(tmp_path, jsonl, val_fraction=0.3)).dir != base
    assert prepare_dataset(local_cfg(tmp_path, jsonl, shard_tokens=50)).dir != base
    jsonl.write_text(jsonl.read_text() + json.dumps({"text": "one more"}) + "\n")
    assert prepare_dataset(local_cfg(tmp_path, jsonl)).dir != base  # the file changed


def test_concurrent_callers_build_once(tmp_path, jsonl, monkeypatch):
    builds, real_build = [], prep._build

    def counting_build(cfg, folder):
        builds.append(folder)
        time.sleep(0.3)  # keep the other callers waiting on the lock while this one builds
        return real_build(cfg, folder)

    monkeypatch.setattr(prep, "_build", counting_build)
    results = [None] * 4

    def call(i):
        results[i] = prepare_dataset(local_cfg(tmp_path, jsonl))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and all(r == results[0] for r in results)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == [results[0].dir.name]


def test_env_var_sets_cache_dir(tmp_path, jsonl, monkeypatch):
    monkeypatch.setenv("ORTHOGPT_DATA_DIR", str(tmp_path / "from_env"))
    p = prepare_dataset(local_cfg(tmp_path, jsonl, cache_dir=None))
    assert p.dir.parent == tmp_path / "from_env"


def test_max_tokens_stops_early(tmp_path, jsonl):
    p = prepare_dataset(local_cfg(tmp_path, jsonl, max_tokens=200, val_fraction=0.0))
    assert 200 <= p.num_tokens["train"] < 260


def test_failed_build_leaves_nothing(tmp_path, jsonl, monkeypatch):
    monkeypatch.setattr(prep, "_encode_document", lambda a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        prepare_dataset(local_cfg(tmp_path, jsonl))
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.parametrize("kw, match", [
    ({"val_fracton": 0.1}, r"data\.val_fracton is not a key"),
    ({"val_fraction": 1.0}, "data.val_fraction"),
    ({"shard_tokens": 0}, "data.shard_tokens"),
    ({"source": "ftp"}, "data.source='ftp'"),
    ({"paths": []}, "data.paths is empty"),
    ({"paths": ["/nonexistent/x.txt"]}, "/nonexistent/x.txt does not exist"),
])
def test_bad_config(tmp_path, jsonl, kw, match):
    with pytest.raises(ValueError, match=match):
        prepare_dataset(local_cfg(tmp_path, jsonl, **kw))


def test_local_format_detection(tmp_path):
    assert local_format(["a.txt"]) == "text" and local_format(["a.parquet"]) == "parquet"
    with pytest.raises(ValueError, match="mixes formats"):
        local_format(["a.txt", "b.jsonl"])
    with pytest.raises(ValueError, match="cannot tell the format of a.csv"):
        local_format(["a.csv"])


def test_hub_reader_arguments(monkeypatch):
    """The hub reader's call into datasets (no network: load_dataset is replaced)."""
    import datasets

    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return iter([{"text": "a"}, {"text": "  "}, {"text": "b"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = data_config(compose_data_config(["data=fineweb_edu"]))
    assert list(sources.documents(cfg)) == ["a", "b"]
    assert calls == [(("HuggingFaceFW/fineweb-edu", "sample-10BT"),
                      {"split": "train", "streaming": True, "revision": None})]


@pytest.mark.parametrize("name", ["embedded", "fineweb_edu", "openwebtext", "local"])
def test_every_data_config_composes(name, tmp_path):
    (tmp_path / "a.txt").write_text("text")
    cfg = compose_data_config([f"data={name}"] + ([f"data.paths=[{tmp_path / 'a.txt'}]"] if name == "local" else []))
    assert cfg.name == name
    typed = data_config(cfg)
    assert type(typed) is SOURCES[cfg.source] and typed.shard_tokens == 100_000_000


def test_cli_reports_prepared_data(prepared_embedded, data_cache_dir):
    out = subprocess.run([sys.executable, "-m", "data.prepare", "data=embedded",
                          f"data.cache_dir={data_cache_dir}"], cwd=REPO, capture_output=True, text=True, check=True)
    assert f"train {prepared_embedded.num_tokens['train']:,} tokens" in out.stdout
    assert str(prepared_embedded.dir) in out.stdout
