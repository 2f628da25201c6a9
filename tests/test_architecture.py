"""The layout's promises, checked on the source: no import circles, the pure model and the readers know nothing
of Lightning or Hydra, serving imports nothing of training, the entry scripts stay thin."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

PACKAGE = REPO / "narm_lightning"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """Modules ``path`` imports (module level only when asked: imports inside functions are deferred)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _graph(top_level_only: bool = True) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path, top_level_only) if m in modules and m != name}
            for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles of a module graph (depth-first search; each as the modules around it)."""
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_the_circle_finder_finds_circles() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    graph = _graph()
    assert len(graph) > 30 and sum(map(len, graph.values())) > 50
    assert find_cycles(graph) == []


def _third_party(path: Path) -> set[str]:
    return {m.split(".")[0] for m in _imports(path, top_level_only=False)}


def test_the_model_knows_nothing_of_lightning_or_hydra() -> None:
    assert not {"pytorch_lightning", "lightning", "hydra", "omegaconf"} & _third_party(PACKAGE / "model.py")


def test_readers_know_nothing_of_models_lightning_or_hydra() -> None:
    for reader in ("data/atomic.py", "data/sessions.py", "data/session_preprocess.py", "data/download.py",
                   "data/clicks.py", "data/session_split.py"):
        imported = _imports(PACKAGE / reader, top_level_only=False)
        assert not {"pytorch_lightning", "hydra", "omegaconf"} & {m.split(".")[0] for m in imported}, reader
        assert not {"narm_lightning.model", "narm_lightning.module", "narm_lightning.training"} & imported, reader


def test_serving_imports_nothing_of_training() -> None:
    for path in (PACKAGE / "serving").glob("*.py"):
        imported = _imports(path, top_level_only=False)
        assert not {m for m in imported if m.startswith(("narm_lightning.training", "narm_lightning.module",
                                                           "narm_lightning.sweeping"))}, path.name
        assert "pytorch_lightning" not in {m.split(".")[0] for m in imported}, path.name


def test_the_entry_scripts_stay_thin() -> None:
    for script in ("train.py", "sweep.py"):
        code = [ln for ln in (REPO / script).read_text().splitlines() if ln.strip() and not ln.startswith(("#", '"'))]
        assert len(code) <= 6, script
