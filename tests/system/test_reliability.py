"""Faults: torn writes, NaN losses, and nothing in the package that runs code named by its inputs."""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import narm_lightning.io as nio
import narm_lightning.training.checkpointing as checkpointing
from narm_lightning.training.checkpointing import AtomicCheckpointIO
from narm_lightning.training.run import train
from tests.helpers import REPO, compose_train, tiny_overrides


class _TornFile(io.BufferedWriter):
    """Writes half of what it is given, then fails: a kill or a full disk in the middle of a write."""

    def write(self, data: bytes) -> int:  # type: ignore[override]
        super().write(bytes(data)[: len(data) // 2])
        self.flush()
        raise OSError(28, "No space left on device")


def _tearing_fdopen(fd: int, mode: str = "r", *args, **kwargs):
    return _TornFile(io.FileIO(fd, "w"))


@pytest.mark.parametrize("kind", ["checkpoint", "results"])
def test_a_write_that_fails_midway_leaves_the_old_file_whole(tmp_path, monkeypatch, kind) -> None:
    target = tmp_path / ("last.ckpt" if kind == "checkpoint" else "results.json")
    old = {"epoch": 1, "w": torch.arange(10.0)}
    if kind == "checkpoint":
        AtomicCheckpointIO().save_checkpoint(old, target)
    else:
        nio.write_json_atomic(target, {"epoch": 1})
    before = target.read_bytes()
    monkeypatch.setattr(nio.os, "fdopen", _tearing_fdopen)
    with pytest.raises(OSError, match="No space left"):
        if kind == "checkpoint":
            AtomicCheckpointIO().save_checkpoint({"epoch": 2, "w": torch.zeros(10_000)}, target)
        else:
            nio.write_json_atomic(target, {"epoch": 2, "pad": "x" * 10_000})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [target.name], "no temp file is left behind"
    if kind == "checkpoint":
        assert torch.equal(torch.load(target, weights_only=True)["w"], old["w"])
    else:
        assert json.loads(target.read_text()) == {"epoch": 1}


def test_a_real_run_writes_every_checkpoint_atomically(tiny_root, tmp_path, monkeypatch) -> None:
    written: list[str] = []

    def recording(path, data):
        written.append(Path(path).name)
        return nio.write_bytes_atomic(path, data)

    monkeypatch.setattr(checkpointing, "write_bytes_atomic", recording)
    train(compose_train(tiny_overrides(tiny_root, "epochs=2")), output_dir=tmp_path / "run")
    assert {"best.ckpt", "last.ckpt"} <= set(written)
    assert written.count("last.ckpt") == 2, "last.ckpt is written after every epoch"
    assert os.stat(tmp_path / "run" / "checkpoints" / "last.ckpt").st_mode & 0o044, "readable like any file"


def test_nan_loss_is_one_paragraph_and_a_non_zero_exit(tiny_root, tmp_path) -> None:
    args = tiny_overrides(tiny_root, "epochs=3", "learning_rate=1e30", "learner=sgd")
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args, f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "error: training stopped: the loss became nan at epoch 0" in proc.stderr
    assert "Lower learning_rate" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "results.json").exists()


# --- no code from configs, data files or command lines is ever run --------------------------------------

# Call sites allowed to deserialize or run named code: (file, the function or class around it, the call), each with
# why it is safe. Per call site, not per file: a new unsafe call anywhere else in the same module is caught.
ALLOWED = {
    # torch's legacy and zip readers with a pickle module whose unpickler resolves only an explicit table
    ("narm_lightning/safe_load.py", "load_torch_restricted", "torch.load"),
    # the class-refusing unpickler itself (a subclass: find_class looks names up in a table)
    ("narm_lightning/safe_load.py", "RestrictedUnpickler", "pickle.Unpickler"),
    # '[0.25,0.5]' strings in RecBole files: yaml.load with RecBoleYamlLoader, a SafeLoader subclass (asserted below)
    ("narm_lightning/recbole/config.py", "_normalise", "yaml.load"),
    # samplers/pruners: _target_ is checked to be a class of optuna.samplers / optuna.pruners first
    ("narm_lightning/sweeping/samplers.py", "build_sampler", "hydra.utils.instantiate"),
    ("narm_lightning/sweeping/study.py", "build_pruner", "hydra.utils.instantiate"),
    # narm-train restarts itself once with glibc's heap tunables: the same interpreter and command line it was
    # started with (sys.executable, sys.orig_argv), nothing from a file or a config
    ("narm_lightning/cli/entry.py", "with_heap_tunables", "os.execv"),
    # hydra.sweeper.config_check: the user's own function, named in their sweep config; nothing from data files
    # or trial values
    ("narm_lightning/sweeping/jobs.py", "_check_space", "hydra.utils.get_method"),
    # hydra.sweeper.custom_search_space and report_hooks: likewise the user's own functions from the sweep config
    ("narm_lightning/sweeping/sweeper.py", "_ask", "hydra.utils.get_method"),
    ("narm_lightning/sweeping/sweeper.py", "_report_hooks", "hydra.utils.get_method"),
}
FORBIDDEN = {
    "eval", "exec", "compile", "__import__", "builtins.eval", "builtins.exec", "builtins.compile",
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "cPickle.load",
    "torch.load", "torch.jit.load", "torch.serialization.load", "torch.package.PackageImporter",
    "yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all", "yaml.full_load_all",
    "yaml.Loader", "yaml.UnsafeLoader", "yaml.FullLoader",
    "marshal.load", "marshal.loads", "shelve.open", "dill.load", "dill.loads", "joblib.load", "pandas.read_pickle",
    "os.system", "os.popen", "os.exec", "importlib.import_module", "runpy.run_path", "runpy.run_module",
    "hydra.utils.instantiate", "hydra.utils.get_class", "hydra.utils.get_method", "hydra.utils.call",
    "pydoc.locate", "numpy.lib.format.read_array",
}


def _qualified(node: ast.AST, aliases: dict[str, str]) -> str:
    """The dotted name a call refers to, import aliases resolved (``from pickle import loads as l`` -> pickle.loads)."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = _qualified(node.value, aliases)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _aliases(tree: ast.AST) -> dict[str, str]:
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                found[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                found[a.asname or a.name] = f"{node.module}.{a.name}"
    for short, full in (("np", "numpy"),):  # the usual spelling, even where the alias is made elsewhere
        found.setdefault(short, full)
    return found


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _why_unsafe(call: ast.Call, name: str) -> str | None:
    """Why a call can run code from a file or a string; None when it cannot."""
    if name in ("torch.load", "torch.serialization.load"):
        return None if _is_const(_keyword(call, "weights_only"), True) else "torch.load without weights_only=True"
    if name in ("numpy.load", "numpy.lib.npyio.load"):
        pickles = _keyword(call, "allow_pickle")
        return None if pickles is None or _is_const(pickles, False) else "numpy.load(allow_pickle=...)"
    shell = _keyword(call, "shell")
    if shell is not None and not _is_const(shell, False):
        return "shell=True"
    if name in FORBIDDEN or any(name.startswith(f"{f}.") for f in ("os.exec",)) or name.startswith("os.exec"):
        return name
    return None


def _offences(path: Path, rel: str) -> list[str]:
    """Unsafe call sites (and unpickler subclasses) not on ``ALLOWED``, as ``file:line: name (where)``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases = _aliases(tree)
    found = []

    def visit(node: ast.AST, scope: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            scope = node.name
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    name = _qualified(base, aliases)
                    if name in FORBIDDEN and (rel, scope, name) not in ALLOWED:
                        found.append(f"{rel}:{node.lineno}: {name} (in {scope})")
        if isinstance(node, ast.Call):
            name = _qualified(node.func, aliases)
            why = _why_unsafe(node, name)
            if why and (rel, scope, name) not in ALLOWED:
                found.append(f"{rel}:{node.lineno}: {why} (in {scope})")
        elif isinstance(node, ast.Attribute | ast.Name) and not isinstance(getattr(node, "ctx", None), ast.Store):
            name = _qualified(node, aliases)  # a reference handed on (``reader = pickle.loads``) is a call later
            if name in {"pickle.loads", "pickle.load", "yaml.unsafe_load", "yaml.UnsafeLoader", "yaml.Loader",
                        "yaml.FullLoader", "marshal.loads"} and (rel, scope, name) not in ALLOWED:
                found.append(f"{rel}:{getattr(node, 'lineno', 0)}: {name} referenced (in {scope})")
        for child in ast.iter_child_nodes(node):
            # a call's own name was judged above; a call that makes the function (get_method(path)(...)) is a call
            if not (isinstance(node, ast.Call) and child is node.func and not isinstance(child, ast.Call)):
                visit(child, scope)

    visit(tree, "<module>")
    return found


def test_no_eval_exec_or_unrestricted_deserialization_in_the_package() -> None:
    skipped = {"tests", ".venv", ".venv-recbole", "outputs", "multirun", ".git", "mutants"}  # mutants/: make mutate's
    files = [p for p in REPO.rglob("*.py") if not skipped & set(p.relative_to(REPO).parts)]
    assert any(p.relative_to(REPO).as_posix() == "narm_lightning/training/run.py" for p in files)
    offences = [o for p in files for o in _offences(p, p.relative_to(REPO).as_posix())]
    assert offences == []


def test_every_allowed_call_site_exists() -> None:
    """A stale entry would allow a future call of that name there unseen: each one must match a real call site."""
    used = set()
    for rel in {file for file, _, _ in ALLOWED}:
        saved = dict.fromkeys(ALLOWED)
        ALLOWED.clear()
        try:
            found = _offences(REPO / rel, rel)
        finally:
            ALLOWED.update(saved)
        used |= {(rel, o.rsplit("(in ", 1)[1].rstrip(")"), name) for o in found for name in
                 {n for f, _, n in ALLOWED if f == rel} if name in o}
    assert used >= set(ALLOWED), set(ALLOWED) - used


def test_the_scanner_catches_what_it_should(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle, torch, yaml\nimport numpy as np\nfrom pickle import loads as l\nimport torch.jit as tj\n"
        "x = eval('1')\npickle.loads(b'')\ntorch.load('f')\ntorch.load('f', weights_only=True)\n"
        "torch.load('f', weights_only=False)\nl(b'')\nnp.load('a.npy')\nnp.load('a.npy', allow_pickle=True)\n"
        "tj.load('m.pt')\ntorch.jit.load('m.pt')\nyaml.load('x', Loader=yaml.SafeLoader)\nreader = pickle.loads\n"
        "import subprocess\nsubprocess.run('ls', shell=True)\n"
        "def load_torch_restricted(p):\n    return torch.load(p)\n"
        "class U(pickle.Unpickler):\n    pass\n")
    offences = [o.split(": ", 1)[1] for o in _offences(bad, "bad.py")]
    assert offences == [
        "eval (in <module>)", "pickle.loads (in <module>)", "torch.load without weights_only=True (in <module>)",
        "torch.load without weights_only=True (in <module>)", "pickle.loads (in <module>)",
        "numpy.load(allow_pickle=...) (in <module>)", "torch.jit.load (in <module>)", "torch.jit.load (in <module>)",
        "yaml.load (in <module>)", "pickle.loads referenced (in <module>)", "shell=True (in <module>)",
        "torch.load without weights_only=True (in load_torch_restricted)", "pickle.Unpickler (in U)",
    ]
    # the allow list is per call site: in safe_load.py the allowed function's torch.load passes, the class U does not
    in_safe_load = [o.split(": ", 1)[1] for o in _offences(bad, "narm_lightning/safe_load.py")]
    assert "torch.load without weights_only=True (in load_torch_restricted)" not in in_safe_load
    assert "pickle.Unpickler (in U)" in in_safe_load


def test_the_recbole_yaml_loader_is_safe() -> None:
    import yaml

    from narm_lightning.recbole.config import RecBoleYamlLoader

    assert issubclass(RecBoleYamlLoader, yaml.SafeLoader)
    with pytest.raises(yaml.YAMLError):
        yaml.load("!!python/object/apply:os.system ['true']", Loader=RecBoleYamlLoader)  # noqa: S506
