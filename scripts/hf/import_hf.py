#!/usr/bin/env python
"""Import a LOCAL Hugging Face ``GPT2LMHeadModel`` directory as a model-only checkpoint of this project.

    orthogpt-import-hf hf/my-model imported/my-model
    # -> imported/my-model/checkpoints/step_00000000/  (DCP, trainer_state.json, MANIFEST.json)

The output has the layout of a training checkpoint (written by trainer/checkpoint.py's writer:
manifest, CRC32s, atomic rename) holding only ``{"model": state_dict}`` (no optimizer state); its
trainer_state.json carries the model config and ``"model_only": true``. ``orthogpt-export-hf`` and
``orthogpt-sample`` read it (pass ``imported/my-model``), and export -> import -> export gives
bit-identical weights. The hub is never contacted: only a local directory is read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from trainer.checkpoint.model_io import write_model_checkpoint
from models.hf import NotGPT2Error, load_hf

PROVENANCE = "orthogpt.json"  # written by orthogpt-export-hf; gives the model its original name back


def import_hf(hf_dir: str | Path, out_dir: str | Path, name: str | None = None) -> Path:
    """Write the weights of a local GPT2LMHeadModel directory as ``<out_dir>/checkpoints/step_00000000``."""
    hf_dir = Path(hf_dir)
    if name is None:
        provenance = hf_dir / PROVENANCE
        name = json.loads(provenance.read_text())["model"]["name"] if provenance.is_file() else "gpt2-hf"
    model = load_hf(hf_dir, name=name)
    return write_model_checkpoint(out_dir, model, {"source_hf_dir": str(hf_dir.resolve())})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hf_dir", type=Path, help="local directory with config.json and model weights")
    parser.add_argument("out_dir", type=Path, help="directory to write <out_dir>/checkpoints/step_00000000 into")
    parser.add_argument("--name", help="model.name to record (default: from orthogpt.json, else gpt2-hf)")
    args = parser.parse_args(argv)
    try:
        path = import_hf(args.hf_dir, args.out_dir, name=args.name)
    except (NotGPT2Error, FileNotFoundError, FileExistsError) as err:
        print(f"import_hf: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
