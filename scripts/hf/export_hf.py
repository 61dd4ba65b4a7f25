#!/usr/bin/env python
"""Export a training checkpoint to a Hugging Face ``GPT2LMHeadModel`` directory (safetensors).

    orthogpt-export-hf runs/gpt2-tiny-adamw/<date>/ hf/my-model      # newest complete checkpoint
    orthogpt-export-hf runs/.../checkpoints/step_00000200 hf/my-model  # a given checkpoint

Runs in one process with no process group: DCP reshards on load, so a checkpoint written by any
number of FSDP2 ranks exports the same. The checkpoint is verified against its manifest (sizes and
CRC32 of every file) before any tensor is read, and a model that HF's GPT-2 cannot represent is
refused. A bias-free model (model.bias=false, the NAMO recipes) exports with zero biases, the same
function. The directory gets config.json + model.safetensors, GPT-2's
tokenizer (vocab.json, merges.txt, tokenizer.json) and orthogpt.json (where the weights came from):

    from transformers import AutoTokenizer, GPT2LMHeadModel
    model = GPT2LMHeadModel.from_pretrained("hf/my-model"); tok = AutoTokenizer.from_pretrained("hf/my-model")
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from models.hf import NotGPT2Error, check_gpt2_state_dict, hf_config_from_gpt, save_hf, save_hf_tokenizer
from trainer.checkpoint.model_io import (
    gpt_config_from_state, gpt_from_state_dict, read_model_checkpoint, resolve_checkpoint,
)
from trainer.checkpoint import CheckpointError

PROVENANCE = "orthogpt.json"


def export_checkpoint(source: str | Path, out_dir: str | Path, overwrite: bool = False, log=print) -> Path:
    """Write the checkpoint (or the newest complete one of a run directory) as a GPT2LMHeadModel dir."""
    checkpoint = resolve_checkpoint(source, log=log)  # verified once, tensor CRCs included
    path = checkpoint.path
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} is not empty; choose a new directory or pass --overwrite")
    # Refuse a non-GPT-2 config before reading any tensor; the weights are checked again below.
    hf_config_from_gpt(gpt_config_from_state(checkpoint.state, path))
    config, state_dict, state = read_model_checkpoint(checkpoint, log=log)
    check_gpt2_state_dict(state_dict)  # names and shapes are exactly a GPT-2's
    model = gpt_from_state_dict(config, state_dict, path)  # ... and the ones its config describes
    save_hf(model, out_dir)
    save_hf_tokenizer(out_dir, model_max_length=config.block_size)
    provenance = {
        "source_checkpoint": str(Path(path).resolve()),
        "step": state.get("step"),
        "tokens": state.get("tokens"),
        "optim": state.get("optim"),
        "model": state["model"],
    }
    (out_dir / PROVENANCE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="checkpoint directory (step_XXXXXXXX) or run directory")
    parser.add_argument("out_dir", type=Path, help="directory to write the GPT2LMHeadModel into")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty out_dir")
    args = parser.parse_args(argv)
    try:
        out = export_checkpoint(args.source, args.out_dir, overwrite=args.overwrite)
    except (NotGPT2Error, CheckpointError, FileNotFoundError, FileExistsError) as err:
        print(f"export_hf: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
