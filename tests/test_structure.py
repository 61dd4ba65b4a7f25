"""The layers hold: what imports what, where code lives, how big a file may grow.

models/, optim/ and data/ import nothing from trainer/, scripts/ or tests/; module-level imports form
no cycle; scripts/ are thin wrappers (no sys.path edits, no tests imports); product files stay under
400 lines; the registry table and configs/optim/ list the same optimizers.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from optim.registry import OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "optim", "data", "trainer")
LOWER_LAYERS = ("models", "optim", "data")
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")) + [ROOT / "train.py"]


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Modules imported by ``path`` (with ``top_level_only``: outside functions, i.e. at import time)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # also imports inside module-level if/try blocks, not TYPE_CHECKING ones
        expanded = []
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            expanded.extend(ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node])
        nodes = expanded
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_lower_layers_import_nothing_above_them():
    offenders = []
    for path in product_files():
        if module_name(path).split(".")[0] not in LOWER_LAYERS:
            continue
        for name in imports(path):
            if name.split(".")[0] in ("trainer", "scripts", "tests", "train"):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


def test_no_import_cycles_at_import_time():
    modules = {module_name(p): p for p in product_files()}
    graph = {
        name: {m for m in imports(path, top_level_only=True) if m in modules and m != name}
        for name, path in modules.items()
    }
    state: dict[str, str] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_scripts_are_thin_wrappers():
    for path in sorted((ROOT / "scripts").glob("*.py")):
        text = path.read_text()
        assert "sys.path" not in text, f"{path.name} edits sys.path"
        assert not any(n.split(".")[0] == "tests" for n in imports(path)), f"{path.name} imports tests/"
        assert len(text.splitlines()) <= 15, f"{path.name}: the code belongs in a package"


def test_product_files_stay_small():
    big = {str(p.relative_to(ROOT)): n for p in product_files() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, big


def test_registry_and_optimizer_configs_agree():
    yamls = {p.stem for p in (ROOT / "configs" / "optim").glob("*.yaml")}
    assert yamls == set(OPTIMIZERS)
    for name, entry in OPTIMIZERS.items():
        assert (entry.rule is None) == (entry.hparams is None), name
        if entry.rule is not None:  # one rule file per optimizer (a family may share one: spectral_*)
            assert entry.rule.name == name
            assert Path(inspect.getfile(entry.rule)).parent == ROOT / "optim" / "rules", name
