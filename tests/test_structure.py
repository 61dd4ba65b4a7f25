"""The layers hold: what imports what, where code lives, how big a file may grow.

models/, optim/ and data/ import nothing from trainer/, scripts/ or tests/, and optim/ nothing from
models/; module-level imports form no cycle; scripts/ are thin wrappers (no sys.path edits, no tests
imports); product files stay under 400 lines; the registry table and configs/optim/ list the same
optimizers.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from optim.registry import OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "optim", "data", "trainer", "scripts")
RUNTIME = ("models", "optim", "data", "trainer", "train")  # the library; scripts/ holds the apps
LOWER_LAYERS = ("models", "optim", "data")
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")) + [ROOT / "train.py"]


def imports(path: Path, top_level_only: bool = False, type_checking: bool = False) -> set[str]:
    """Modules imported by ``path`` (with ``top_level_only``: outside functions, i.e. at import time;
    ``type_checking``: also those under ``if TYPE_CHECKING:``, which a type checker follows)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # also imports inside module-level if/try blocks
        expanded = []
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) and not type_checking:
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


def import_graph(**which) -> dict[str, set[str]]:
    """Product module -> the product modules it imports (``which``: the arguments of ``imports``)."""
    modules = {module_name(p): p for p in product_files()}
    known = set(modules) | {m.rsplit(".", 1)[0] for m in modules}
    return {name: {m for m in imports(path, **which) if m in known and m != name} for name, path in modules.items()}


@pytest.mark.parametrize("type_checking", [False, True], ids=["at import time", "type-only imports too"])
def test_no_import_cycles(type_checking):
    graph = import_graph(top_level_only=True, type_checking=type_checking)
    state: dict[str, str] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def reached_from(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# (from, never reaches): through any chain of imports, function-level and type-only ones included;
# no exceptions (optim routes by the table the model hands it, models.gpt2.GPT.param_roles)
LAYER_RULES = [
    *((low, up) for low in ("models", "optim", "data") for up in ("trainer", "scripts", "train")),
    *((runtime, "scripts") for runtime in RUNTIME),
    ("optim", "models"),
    ("optim.orthogonalize", "optim.rules"), ("optim.orthogonalize", "optim.config"),
]


@pytest.mark.parametrize("source,target", LAYER_RULES, ids=[f"{a} -/-> {b}" for a, b in LAYER_RULES])
def test_package_never_reaches(source, target):
    graph = import_graph()
    chains = {m: sorted(n for n in reached_from(graph, m) if within(n, target)) for m in graph if within(m, source)}
    assert not any(chains.values()), {m: c for m, c in chains.items() if c}


def test_apps_neither_edit_sys_path_nor_import_tests():
    for path in sorted((ROOT / "scripts").rglob("*.py")):
        text = path.read_text()
        assert "sys.path" not in text, f"{path.relative_to(ROOT)} edits sys.path"
        assert not any(n.split(".")[0] == "tests" for n in imports(path)), f"{path.relative_to(ROOT)} imports tests/"


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


def test_every_registered_optimizer_has_a_sweep_grid_and_a_study_entry():
    """The grids are the one hand-kept place a new optimizer must be added to; this names the gap."""
    import yaml

    sweep = yaml.safe_load((ROOT / "configs" / "sweep" / "optimizers.yaml").read_text())
    swept = set(str(sweep["hydra"]["sweeper"]["params"]["optim"]).split(","))
    assert set(sweep["lr_sweep"]["grid"]) == set(OPTIMIZERS) == swept, "configs/sweep/optimizers.yaml"
    studied = set()
    for path in (ROOT / "configs" / "study").glob("*.yaml"):
        if path.stem == "claims":
            continue
        arms = yaml.safe_load(path.read_text())["arms"]
        studied |= {arm.get("optimizer", name) for name, arm in arms.items()}
    assert set(OPTIMIZERS) <= studied, f"no study in configs/study/ runs {sorted(set(OPTIMIZERS) - studied)}"
