"""The layout's promises, checked on the source: no import circles, the pure model and the readers know nothing
of Lightning or Hydra, serving imports nothing of training, the entry scripts stay thin."""

from __future__ import annotations

import ast
import re
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


def _closure(module: str) -> set[str]:
    """Every package module ``module`` reaches through imports (any level: a deferred import is still one)."""
    graph = _graph(top_level_only=False)
    seen: set[str] = set()
    todo = [module]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _modules(folder: str, *, but: tuple[str, ...] = ()) -> list[str]:
    return sorted(_module_name(p) for p in (PACKAGE / folder).glob("*.py") if p.name not in (*but, "__init__.py"))


def test_the_model_knows_nothing_of_lightning_or_hydra() -> None:
    """model/ is plain torch; only its LightningModule (module.py) meets Lightning."""
    for module in _modules("model", but=("module.py",)):
        path = PACKAGE / (module.removeprefix("narm_lightning.").replace(".", "/") + ".py")
        assert not {"pytorch_lightning", "lightning", "hydra", "omegaconf"} & _third_party(path), module


def test_the_model_reaches_no_data_sweeping_training_or_tracking_code() -> None:
    for module in _modules("model", but=("module.py",)):
        reached = {m for m in _closure(module) if m.startswith(("narm_lightning.data", "narm_lightning.sweeping",
                                                                 "narm_lightning.training", "narm_lightning.tracking",
                                                                 "narm_lightning.cli"))}
        assert not reached, (module, reached)


def test_the_schema_knows_nothing_of_torch_or_the_readers() -> None:
    """The declarations (schema, interval strings, YAML reading) are read by --help and the sweeper plugin: no torch,
    no numpy, nothing of data/, model/ or training/, followed through every import."""
    for module in ("narm_lightning.config.schema", "narm_lightning.config.data_schema",
                   "narm_lightning.config.intervals", "narm_lightning.config.keys", "narm_lightning.config.yaml_files"):
        path = PACKAGE / (module.removeprefix("narm_lightning.").replace(".", "/") + ".py")
        assert not {"torch", "numpy", "pytorch_lightning"} & _third_party(path), module
        reached = {m for m in _closure(module) if m.startswith(("narm_lightning.data", "narm_lightning.model",
                                                                 "narm_lightning.training", "narm_lightning.sweeping"))}
        assert not reached, (module, reached)


def test_training_callbacks_know_nothing_of_sweeping() -> None:
    """The run's parts other than its assembly (run.py, builders.py: they hand a trial its pruning callback)."""
    for module in _modules("training", but=("run.py", "builders.py")):
        reached = {m for m in _closure(module) if m.startswith("narm_lightning.sweeping")}
        assert not reached, (module, reached)


def test_readers_know_nothing_of_models_lightning_or_hydra() -> None:
    for reader in ("data/atomic.py", "data/sessions.py", "data/session_preprocess.py", "data/download.py",
                   "data/clicks.py", "data/session_split.py", "data/session_files.py", "data/split_cache.py"):
        imported = _imports(PACKAGE / reader, top_level_only=False)
        assert not {"pytorch_lightning", "hydra", "omegaconf"} & {m.split(".")[0] for m in imported}, reader
        reached = _closure(_module_name(PACKAGE / reader))
        assert not {m for m in reached if m.startswith(("narm_lightning.model", "narm_lightning.training"))}, reader


def test_serving_imports_nothing_of_training() -> None:
    for path in (PACKAGE / "serving").glob("*.py"):
        imported = _imports(path, top_level_only=False)
        assert not {m for m in imported if m.startswith(("narm_lightning.training", "narm_lightning.model.module",
                                                           "narm_lightning.sweeping"))}, path.name
        assert "pytorch_lightning" not in {m.split(".")[0] for m in imported}, path.name


def test_each_concept_has_its_subpackage() -> None:
    """The top level holds subpackages and the few modules every layer shares (errors, files)."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "errors.py", "io.py", "recommend.py", "safe_load.py"], top
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} >= {
        "cli", "config", "model", "data", "training", "tracking", "sweeping", "recbole", "serving"}


def test_the_entry_scripts_stay_thin() -> None:
    for script in ("train.py", "sweep.py"):
        code = [ln for ln in (REPO / script).read_text().splitlines() if ln.strip() and not ln.startswith(("#", '"'))]
        assert len(code) <= 6, script


def test_what_the_first_frame_imports_is_light() -> None:
    """cli/entry.py runs before torch is imported (Ctrl-C there is one line, exit 130): it and the host check it
    reads import no torch, numpy or Lightning, at any level."""
    for path in (PACKAGE / "cli" / "entry.py", PACKAGE / "training" / "hostcheck.py"):
        top = {m.split(".")[0] for m in _imports(path, top_level_only=True)}
        assert not {"torch", "numpy", "pytorch_lightning"} & top, path.name
    assert not {"torch", "numpy", "pytorch_lightning"} & _third_party(PACKAGE / "training" / "hostcheck.py")


def test_the_benchmarks_run_as_modules_of_the_checkout_without_path_edits() -> None:
    """``bench/`` is a package run as ``python -m bench.<name>`` (issue 34): no script edits ``sys.path`` to reach
    the package or its neighbours, and the package never imports ``bench``."""
    bench = PACKAGE.parent / "bench"
    scripts = sorted(bench.rglob("*.py"))
    assert len(scripts) > 10 and (bench / "__init__.py").is_file() and (bench / "study" / "__init__.py").is_file()
    edits = [str(p.relative_to(bench)) for p in scripts if re.search(r"sys\.path\.(insert|append)", p.read_text())]
    assert not edits, edits
    reaching = [p.name for p in PACKAGE.rglob("*.py") if re.search(r"^\s*(from|import) bench\b", p.read_text(), re.M)]
    assert not reaching, reaching



def _calls(path: Path) -> set[str]:
    """The names of the functions and methods ``path`` calls (``x.set_user_attr(...)`` -> ``set_user_attr``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            for node in ast.walk(tree) if isinstance(node, ast.Call)}


# the modules that run in the sweeper's process: the loop, a trial's job and bookkeeping, the study, the confirm step
SWEEPER_PROCESS = {"sweeper.py", "jobs.py", "trials.py", "study.py", "confirm_step.py"}


def test_only_the_sweeper_writes_trial_and_study_attributes() -> None:
    """A trial's results travel one way: its job returns them and the sweeper records them. Nothing a job runs
    (training, its pruning callback, the app) writes an attribute to the study."""
    writes = {"set_user_attr", "set_trial_user_attr", "set_study_user_attr", "set_system_attr",
              "set_trial_system_attr", "set_study_system_attr"}
    writers = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if _calls(p) & writes}
    assert writers and writers <= {f"sweeping/{name}" for name in SWEEPER_PROCESS}, writers


def test_the_wandb_summary_reads_no_file_back() -> None:
    """The W&B summary is made from the report the sweeper hands its hooks, not from the files it just wrote."""
    path = PACKAGE / "tracking" / "wandb_summary.py"
    assert not _calls(path) & {"open", "read_text", "read_bytes", "DictReader", "reader", "safe_load", "load"}
    assert not _imports(path, top_level_only=False) & {"csv", "yaml", "json"}


def test_the_programs_load_no_torch_before_their_config_composes() -> None:
    """A typo on the command line is answered before torch and Lightning load (0.4 s, not 4.7 s): the programs'
    module and all it imports at module level (packages' ``__init__`` included) import neither."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = _graph(top_level_only=True)
    reached, todo = set(), ["narm_lightning.cli.apps"]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for nxt in [*graph.get(name, ()), *(".".join(parts[:i]) for i in range(1, len(parts)))]:
            if nxt in paths and nxt not in reached:
                reached.add(nxt)
                todo.append(nxt)
    heavy = {name: top for name in reached | {"narm_lightning.cli.apps"}
             if (top := {m.split(".")[0] for m in _imports(paths[name], top_level_only=True)}
                 & {"torch", "numpy", "pytorch_lightning", "lightning_fabric"})}
    assert "narm_lightning.training.run_folder" in reached and not heavy, heavy
