"""Check every line of a job-array sweep file before anything is queued.

    python slurm/check_sweep.py [--world-size N] SWEEP_FILE [overrides for every line ...]

Each line (blank lines and '#' comments skipped, overrides separated by whitespace, as
slurm/sweep_array.sbatch reads them) is composed with the common overrides into the training config
and validated as every list of runs is (scripts/run_list_check.py: what train.py checks before it
trains): an unknown key, an unknown optimizer or model, an impossible value, or a line that repeats
an earlier one's config is reported with its line number, and the exit code is 1. Nothing is trained
and no process group is started.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scripts.run_list_check import DuplicateRuns, validate_run

REPO = Path(__file__).resolve().parents[1]

# set by the sbatch scripts themselves; a sweep line that sets them would fight with them
RESERVED = ("hydra.run.dir", "trainer.resume", "device")


def sweep_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, overrides) for every non-blank, non-comment line."""
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            lines.append((number, line.split()))
    return lines


def check_line(overrides: list[str], world_size: int, duplicates: DuplicateRuns | None = None,
               label: str = "") -> str | None:
    """None if the overrides compose, validate and (given ``duplicates``) repeat no earlier line; else
    the error message."""
    from hydra import compose, initialize_config_dir

    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in RESERVED:
            return f"'{override}': the sbatch script sets {key} itself"
    try:
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
            config = validate_run(compose("train", overrides=overrides), world_size)
    except Exception as error:  # every way a line can be wrong is reported, not raised
        message = str(error).split("\nConfig search path")[0]  # Hydra's list of search paths: noise here
        return f"{type(error).__name__}: {message}".strip()
    earlier = duplicates.previous(label, config.resolved) if duplicates is not None else None
    if earlier is not None:
        return f"composes to the same config as line {earlier}: the two jobs would repeat each other"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world-size", type=int, default=1, help="processes per task (nodes x per node)")
    parser.add_argument("sweep_file", type=Path)
    parser.add_argument("overrides", nargs="*", help="overrides applied to every line")
    args = parser.parse_args(argv)
    if not args.sweep_file.is_file():
        print(f"{args.sweep_file}: sweep file not found", file=sys.stderr)
        return 1

    from trainer.run_dir import register_resolvers

    register_resolvers()
    lines = sweep_lines(args.sweep_file)
    if not lines:
        print(f"{args.sweep_file}: no sweep lines (only blank lines and comments)", file=sys.stderr)
        return 1
    errors, duplicates = 0, DuplicateRuns()
    for number, overrides in lines:
        error = check_line([*args.overrides, *overrides], args.world_size, duplicates, str(number))
        if error is not None:
            errors += 1
            print(f"{args.sweep_file}:{number}: {' '.join(overrides)}\n    {error}", file=sys.stderr)
    if errors:
        print(f"{args.sweep_file}: {errors} of {len(lines)} line(s) are invalid; nothing was submitted",
              file=sys.stderr)
        return 1
    print(f"{args.sweep_file}: {len(lines)} line(s) OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
