"""Document sources: each yields plain-text documents (str) in a deterministic order.

- ``embedded``: English text that every CPython install already has, so the default training run
  needs no download. Two parts, in this order:
    1. ``pydoc_data.topics`` (the text of ``help('topics')``: the language reference in prose),
       one document per topic, sorted by topic name: about 0.47 MB, 139k GPT-2 tokens;
    2. the docstrings of the standard library (module, class and function docstrings, read with
       ``ast`` without importing anything), one document per module in sorted path order, leaving out
       test/, idlelib/, lib2to3/ and site-packages: about 600 modules, 1.6 MB, 460k tokens.
  Together 598,477 GPT-2 tokens with one EOT per document (604 documents) on CPython 3.11.7:
  552,761 train + 45,716 val with the default val_fraction=0.1.
  The text depends on the Python version, so the cache key includes it. Licence: PSF.
- ``hub``: a Hugging Face hub data set through ``datasets.load_dataset`` (streaming by default), e.g.
  FineWeb-Edu ``sample-10BT`` or OpenWebText. Needs a network; never used by tests.
- ``local``: .txt / .jsonl / .parquet files through ``datasets``' packaged ``text`` / ``json`` /
  ``parquet`` builders (streamed, so nothing is written to the Hugging Face cache). A .txt file gives
  one document per blank-line-separated paragraph (``text_sample_by: paragraph``, the default) or one
  per file (``text_sample_by: document``).
"""

from __future__ import annotations

import ast
import sysconfig
import warnings
from collections.abc import Iterator
from pathlib import Path

from data.config import DataConfig, HubData, LocalData, local_format

# Folders of the stdlib whose docstrings we leave out: tests (mostly boilerplate), IDLE and lib2to3
# (tooling), and installed third-party packages (differ from machine to machine).
_STDLIB_SKIP = frozenset({"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages"})



def pydoc_topics() -> Iterator[str]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        text = topics[name].strip()
        if text:
            yield text


def stdlib_files(stdlib: str | Path | None = None) -> list[Path]:
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    files = (p for p in root.rglob("*.py") if not _STDLIB_SKIP.intersection(p.relative_to(root).parts))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def module_docstrings(path: Path) -> str:
    """All docstrings of one module (module, classes, functions; source order), blank-line separated."""
    with warnings.catch_warnings():  # e.g. SyntaxWarning for invalid escapes in old stdlib files
        warnings.simplefilter("ignore")
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):
            return ""
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docs = (ast.get_docstring(node) for node in ast.walk(tree) if isinstance(node, kinds))
    return "\n\n".join(d.strip() for d in docs if d and d.strip())


def stdlib_docstrings() -> Iterator[str]:
    for path in stdlib_files():
        text = module_docstrings(path)
        if text:
            yield text


def embedded_documents() -> Iterator[str]:
    yield from pydoc_topics()
    yield from stdlib_docstrings()


def hub_documents(cfg: HubData) -> Iterator[str]:
    """Stream a hub data set, e.g. ``load_dataset("HuggingFaceFW/fineweb-edu", "sample-10BT",
    split="train", streaming=True)``, yielding its ``text_field`` column."""
    import datasets

    try:
        ds = datasets.load_dataset(
            cfg.hf_path,
            cfg.hf_name,
            split=cfg.split,
            streaming=cfg.streaming,
            revision=cfg.revision,
        )
    except RuntimeError as e:
        if "scripts are no longer supported" not in str(e):
            raise
        # datasets>=4 runs no loading scripts; some hub repos (OpenWebText until its parquet PR lands) have one.
        raise RuntimeError(f"data.hf_path={cfg.hf_path}: the hub repository needs a loading script, which "
                           f"datasets>=4 no longer runs. Set data.revision to a revision with data files, point "
                           f"data.hf_path at a parquet copy, or use datasets<4 for this preparation") from e
    yield from _text_column(ds, cfg.text_field, cfg.hf_path)


def local_documents(cfg: LocalData) -> Iterator[str]:
    """The files' rows (``cfg.paths`` are already resolved and checked by LocalData)."""
    import datasets

    paths = list(cfg.paths)
    fmt = local_format(paths, cfg.format)
    kwargs = {"sample_by": cfg.text_sample_by} if fmt == "text" else {}
    ds = datasets.load_dataset(fmt, data_files=paths, split="train", streaming=True, **kwargs)
    yield from _text_column(ds, cfg.text_field, ", ".join(paths))


def _text_column(ds, field: str, where: str) -> Iterator[str]:
    for i, row in enumerate(ds):
        if field not in row:
            raise ValueError(f"{where}: row {i} has no field {field!r} (fields: {sorted(row)}); "
                             "set data.text_field")
        text = row[field]
        if text and text.strip():
            yield text


def documents(cfg: DataConfig) -> Iterator[str]:
    """The documents of the source of a typed data config (data.config: ``cfg.source`` names it)."""
    source = cfg.source
    if source == "embedded":
        return embedded_documents()
    if source == "hub":
        return hub_documents(cfg)
    if source == "local":
        return local_documents(cfg)
    raise ValueError(f"data.source={source!r}: expected one of embedded, hub, local")
