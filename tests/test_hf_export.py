"""HF interop from real training checkpoints: export -> GPT2LMHeadModel logits, import round trip,
refusals, sampling. The checkpoints come from ``python train.py`` itself (gpt2-test, 2 steps)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.head_keys import HEAD
from safetensors.torch import load_file
from transformers import AutoTokenizer, GPT2LMHeadModel

from data.tokenizer import gpt2_encoding
from trainer.checkpoint.model_io import load_gpt, read_model_checkpoint, write_model_checkpoint
from models.generate import generate
from models.gpt2 import GPT, GPTConfig

from trainer.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
TRAIN_ARGS = [
    "model=gpt2-test", "trainer.max_steps=2", "trainer.checkpoint_every=2", "trainer.seq_len=32",
    "trainer.micro_batch_size=2", "trainer.eval_batches=1", "trainer.peak_tflops=1", "trainer.plot=false",
    "schedule.warmup_steps=0", "logging=disabled", "logging.progress_bar=false",
]


from scripts import sample  # noqa: E402
from scripts.hf import export_hf, import_hf  # noqa: E402

pytestmark = pytest.mark.slow  # launches training processes: the full suite runs it, the fast tier does not


def train(run_dir: Path, data_cache_dir: Path, *extra: str, launcher: tuple[str, ...] = (sys.executable,)):
    cmd = [*launcher, str(ROOT / "train.py"), *TRAIN_ARGS, f"data.cache_dir={data_cache_dir}",
           f"hydra.run.dir={run_dir}", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run_dir(prepared_embedded, data_cache_dir, tmp_path_factory):
    """A real 2-step training run with NAMO (matrix and AdamW groups both change the weights), on 2
    FSDP2 ranks (one DCP data file per rank; export must reshard), or on 1 if this checkout cannot."""
    run = tmp_path_factory.mktemp("hf_export") / "run"
    launcher = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2")
    proc = train(run, data_cache_dir, "optim=namo", launcher=launcher)
    if "multi-process training" in proc.stderr and "not available" in proc.stderr:
        proc = train(run, data_cache_dir, "optim=namo")  # FSDP2 not landed: single process
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "checkpoints" / "step_00000002" / "MANIFEST.json").is_file()
    return run


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    return export_hf.export_checkpoint(run_dir, tmp_path_factory.mktemp("hf") / "model")


def max_logit_diff(ours: GPT, hf_dir: Path) -> float:
    hf = GPT2LMHeadModel.from_pretrained(hf_dir, local_files_only=True).eval()
    idx = torch.randint(0, ours.config.vocab_size, (3, ours.config.block_size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (hf(idx).logits - ours(idx)[0]).abs().max().item()


def test_export_logits_equal_ours(run_dir, exported):
    ours = load_gpt(run_dir)
    assert ours.config.name == "gpt2-test"
    trained = ours.transformer.h[0].attn.c_attn.weight
    assert not torch.equal(trained, GPT(ours.config).transformer.h[0].attn.c_attn.weight)  # trained weights
    assert max_logit_diff(ours, exported) <= 1e-5
    files = {p.name for p in exported.iterdir()}
    assert {"config.json", "model.safetensors", "orthogpt.json"} <= files
    provenance = json.loads((exported / "orthogpt.json").read_text())
    assert provenance["step"] == 2 and provenance["optim"] == "namo"
    assert provenance["source_checkpoint"].endswith("step_00000002")


def test_exported_tokenizer_encodes_like_ours(exported):
    text = "def f(x):\n    return x ** 2  # squares <|endoftext|> naïve café"
    tokenizer = AutoTokenizer.from_pretrained(exported, local_files_only=True)
    assert tokenizer(text)["input_ids"] == gpt2_encoding().encode(text, allowed_special="all")
    assert tokenizer.eos_token_id == 50256 and tokenizer.model_max_length == 64


def test_import_round_trips_exactly(run_dir, exported, tmp_path):
    _, original, _ = read_model_checkpoint(run_dir)
    ckpt_path = import_hf.import_hf(exported, tmp_path / "imported")
    assert ckpt_path == tmp_path / "imported" / "checkpoints" / "step_00000000"
    config, imported, state = read_model_checkpoint(tmp_path / "imported")
    assert state["model_only"] is True and config.name == "gpt2-test"  # name carried by orthogpt.json
    assert set(imported) == set(original)
    for key in original:
        assert torch.equal(imported[key], original[key]), key
    # ... and exporting the import gives the same safetensors tensors again.
    again = export_hf.export_checkpoint(tmp_path / "imported", tmp_path / "again")
    first, second = load_file(exported / "model.safetensors"), load_file(again / "model.safetensors")
    assert set(first) == set(second)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_export_of_a_bias_free_model_gives_the_same_logits(tmp_path):
    config = GPTConfig(name="nobias", vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=8, dropout=0.0, bias=False, **HEAD)
    torch.manual_seed(0)
    model = GPT(config)
    write_model_checkpoint(tmp_path / "run", model)
    out = export_hf.export_checkpoint(tmp_path / "run", tmp_path / "out")
    assert max_logit_diff(model, out) <= 1e-5


def test_export_refuses_weights_that_do_not_fit_their_config(tmp_path):
    from trainer.checkpoint import file_crc32

    config = GPTConfig(name="t", vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=8, dropout=0.0, bias=True, **HEAD)
    ckpt = write_model_checkpoint(tmp_path / "run", GPT(config))
    state_file, manifest_file = ckpt / "trainer_state.json", ckpt / "MANIFEST.json"
    state = json.loads(state_file.read_text())
    state["model"]["n_layer"] = 3  # the config now disagrees with the weights (manifest kept valid)
    state_file.write_text(json.dumps(state))
    manifest = json.loads(manifest_file.read_text())
    manifest["files"]["trainer_state.json"] = {"bytes": state_file.stat().st_size, "crc32": file_crc32(state_file)}
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="do not fit its model config"):
        export_hf.export_checkpoint(tmp_path / "run", tmp_path / "out")


def test_export_cli_reports_bad_input(tmp_path, capsys):
    assert export_hf.main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty_run").mkdir()
    assert export_hf.main([str(tmp_path / "empty_run"), str(tmp_path / "out")]) == 2
    assert "holds no complete checkpoint" in capsys.readouterr().err


def test_export_refuses_truncated_checkpoint(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "ckpt"
    shutil.copytree(run_dir / "checkpoints" / "step_00000002", copy)
    data = next(copy.glob("*.distcp"))
    data.write_bytes(data.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="bytes"):
        export_hf.export_checkpoint(copy, tmp_path / "out")


def test_sample_is_deterministic_per_seed_and_source(run_dir, exported, capsys):
    ours, from_hf = sample.load_model(run_dir), sample.load_model(exported)
    kwargs = dict(prompt="The function", max_new_tokens=8, temperature=1.0, top_k=50)
    a = sample.sample_texts(ours, seed=1, **kwargs)
    assert a == sample.sample_texts(ours, seed=1, **kwargs)  # same seed, same text
    assert a == sample.sample_texts(from_hf, seed=1, **kwargs)  # same weights via HF dir, same text
    assert a != sample.sample_texts(ours, seed=2, **kwargs)
    assert a[0].startswith("The function") and len(gpt2_encoding().encode(a[0])) >= 8
    assert sample.main([str(run_dir), "--prompt", "The function", "--max-new-tokens", "8",
                        "--temperature", "1.0", "--top-k", "50", "--seed", "1"]) == 0
    assert capsys.readouterr().out == a[0] + "\n"


def test_greedy_generation_equals_transformers(run_dir, exported):
    ours = load_gpt(run_dir)
    hf = GPT2LMHeadModel.from_pretrained(exported, local_files_only=True).eval()
    prompt = torch.tensor([gpt2_encoding().encode_ordinary("Return the value")])
    mine = generate(ours, prompt, max_new_tokens=8, temperature=0)
    theirs = hf.generate(prompt, max_new_tokens=8, do_sample=False, attention_mask=torch.ones_like(prompt),
                         pad_token_id=50256)
    assert torch.equal(mine, theirs)


def test_top_k_restricts_the_support():
    from models.generate import next_token_distribution

    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    probs = next_token_distribution(logits, temperature=1.0, top_k=2)
    assert probs[0, 0] == 0 and probs[0, 2] == 0
    assert torch.allclose(probs[0, [1, 3]], torch.softmax(torch.tensor([3.0, 2.0]), 0))


def test_export_reads_checkpoint_written_by_two_fsdp2_ranks(run_dir):
    _, weights, state = read_model_checkpoint(run_dir)
    if state["world_size"] != 2:
        pytest.skip("train.py does not run multi-process (FSDP2) in this checkout yet")
    ckpt = run_dir / "checkpoints" / "step_00000002"
    assert sorted(p.name for p in ckpt.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert weights["transformer.h.1.mlp.c_fc.weight"].shape == (128, 32)  # full, not a row shard
    # the logits test above used these same weights: export resharded them into one model
